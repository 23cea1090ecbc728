//! `cargo xtask shell`: an interactive shell in a VM on this terminal.

use anyhow::Result;
use xshell::Shell;

use crate::build::build_all;
use crate::{flags, out_dir, vm};

impl flags::Shell {
    pub(crate) fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(
            sh,
            self.kernel_src.as_deref(),
            false,
            false,
            self.debug_kernel,
        )?;
        let extra = self
            .add
            .iter()
            .map(|a| vm::parse_add(a))
            .collect::<Result<Vec<_>>>()?;
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &extra, &out_dir("shell"))?;
        println!("xtask: starting a shell in the VM; the pcmsig CLI is on the PATH.");
        println!("xtask: leave with `exit`, or Ctrl-A X to kill the VM.");
        vm::interactive(vm::shell_command(
            &b.tools,
            &b.kernel,
            &initrd,
            &self.qemu_arg,
            self.gdb,
            self.cpus.unwrap_or(vm::DEFAULT_CPUS),
        ))
    }
}
