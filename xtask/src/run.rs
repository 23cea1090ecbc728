//! `cargo xtask run`: the demo in a VM, its console streamed.

use anyhow::{bail, Result};
use xshell::Shell;

use crate::build::{build_all, keep};
use crate::{flags, ktap, out_dir, vm};

impl flags::Run {
    pub(crate) fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(
            sh,
            self.kernel_src.as_deref(),
            false,
            self.quiet,
            self.debug_kernel,
        )?;
        let out = out_dir("run");
        let initrd = crate::guest::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out)?;
        if self.keep {
            keep(&b, &initrd, &out)?;
        }
        let timeout = vm::timeout_limit(self.timeout);
        let run = vm::boot(
            &b.tools,
            &b.kernel,
            &initrd,
            &vm::Boot {
                mode: "run",
                env: Vec::new(),
                timeout,
                qemu_args: &self.qemu_arg,
                stream: !self.quiet,
                gdb: self.gdb,
                silence: vm::silence_limit(self.silence),
                out_dir: &out,
                cpus: self.cpus.unwrap_or(vm::DEFAULT_CPUS),
            },
        )?;
        println!("xtask: console {}", run.console_log.display());
        let problem = ktap::kernel_problem(&run.console);
        match (vm::guest_exit(&run.console), problem, run.ending) {
            (Some(0), None, ktap::Ending::Exited(Some(0))) => Ok(()),
            (_, Some(p), _) => bail!("kernel problem: {p}"),
            (code, None, ending) => bail!("the demo failed (guest exit {code:?}, VM {ending:?})"),
        }
    }
}
