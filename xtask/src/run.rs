//! `cargo xtask run`: the demo in a VM, its console streamed.

use anyhow::{bail, Result};
use xshell::Shell;

use crate::build::build_and_boot;
use crate::{flags, ktap, out_dir, vm, vm_flags};

impl flags::Run {
    pub(crate) fn run(self, sh: &Shell) -> Result<()> {
        let out = out_dir("run");
        let run = build_and_boot(sh, "run", &vm_flags!(self), &[], (&out, self.quiet))?;
        println!("xtask: console {}", run.console_log.display());
        let problem = ktap::kernel_problem(&run.console);
        match (vm::guest_exit(&run.console), problem, run.ending) {
            (Some(0), None, ktap::Ending::Exited(Some(0))) => Ok(()),
            (_, Some(p), _) => bail!("kernel problem: {p}"),
            (code, None, ending) => bail!("the demo failed (guest exit {code:?}, VM {ending:?})"),
        }
    }
}
