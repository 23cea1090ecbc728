//! `cargo xtask run`: the demo in a VM, its console streamed.

use anyhow::{bail, Result};

use crate::image::build_and_boot;
use crate::paths::out_dir;
use crate::{flags, report::ktap, vm};

impl flags::Run {
    pub(crate) fn run(self) -> Result<()> {
        let out = out_dir("run");
        let opts = self.vm_options()?;
        let run = build_and_boot(vm::Mode::Demo, &opts, &[], (&out, opts.quiet))?;
        println!("xtask: console {}", run.console_log.display());
        let problem = ktap::kernel_problem(&run.console);
        match (vm::guest_exit(&run.console), problem, run.ending) {
            (Some(0), None, vm::Ending::Exited(Some(0))) => Ok(()),
            (_, Some(p), _) => bail!("kernel problem: {p}"),
            (code, None, ending) => bail!("the demo failed (guest exit {code:?}, VM {ending:?})"),
        }
    }
}
