//! `cargo xtask run`: the demo in a VM, its console streamed.

use anyhow::{bail, Result};
use xshell::Shell;

use crate::build::prepare;
use crate::{flags, ktap, out_dir, vm};

impl flags::Run {
    pub(crate) fn run(self, sh: &Shell) -> Result<()> {
        let out = out_dir("run");
        let (b, initrd) = prepare(
            sh,
            self.kernel_src.as_deref(),
            self.debug_kernel,
            self.quiet,
            &[],
            (&out, self.keep),
        )?;
        let boot = vm::Boot {
            stream: self.verbose || !self.quiet,
            gdb: self.gdb,
            ..vm::Boot::from_flags(
                "run",
                &out,
                &self.qemu_arg,
                self.timeout,
                self.silence,
                self.cpus,
            )
        };
        let run = vm::boot(&b.tools, &b.kernel, &initrd, &boot)?;
        println!("xtask: console {}", run.console_log.display());
        let problem = ktap::kernel_problem(&run.console);
        match (vm::guest_exit(&run.console), problem, run.ending) {
            (Some(0), None, ktap::Ending::Exited(Some(0))) => Ok(()),
            (_, Some(p), _) => bail!("kernel problem: {p}"),
            (code, None, ending) => bail!("the demo failed (guest exit {code:?}, VM {ending:?})"),
        }
    }
}
