//! `cargo xtask shell`: an interactive shell in a VM on this terminal.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use xshell::Shell;

use crate::kernel::Kernel;
use crate::tools::Tools;

use crate::build::prepare;
use crate::{flags, out_dir, vm};

impl flags::Shell {
    pub(crate) fn run(self, sh: &Shell) -> Result<()> {
        let extra = self
            .add
            .iter()
            .map(|a| crate::guest::parse_add(a))
            .collect::<Result<Vec<_>>>()?;
        let (b, initrd) = prepare(
            sh,
            self.kernel_src.as_deref(),
            self.debug_kernel.then_some("debug"),
            false,
            &extra,
            (&out_dir("shell"), false),
        )?;
        println!("xtask: starting a shell in the VM; the pcmsig CLI is on the PATH.");
        println!("xtask: leave with `exit`, or Ctrl-A X to kill the VM.");
        interactive(shell_command(
            &b.tools,
            &b.kernel,
            &initrd,
            &self.qemu_arg,
            self.gdb,
            self.cpus.unwrap_or(vm::DEFAULT_CPUS),
            vm::hung_task_secs(self.debug_kernel),
        ))
    }
}

/// The QEMU command of an interactive VM: the serial console multiplexed with QEMU's monitor on
/// stdio, so that Ctrl-A X quits and Ctrl-A C reaches the monitor.
pub fn shell_command(
    tools: &Tools,
    kernel: &Kernel,
    initrd: &Path,
    qemu_args: &[String],
    gdb: bool,
    cpus: u32,
    hung_task_secs: u64,
) -> Command {
    let mut qemu = vm::qemu_command(
        tools,
        kernel,
        initrd,
        &vm::append_line("shell", &[], hung_task_secs),
        qemu_args,
        cpus,
    );
    qemu.args(["-serial", "mon:stdio"]);
    if gdb {
        vm::gdb_hint(kernel);
        qemu.args(["-s", "-S"]);
    }
    qemu
}

/// Runs an interactive VM on this terminal; restores the terminal settings afterwards.
pub fn interactive(mut qemu: Command) -> Result<()> {
    let saved = Command::new("stty")
        .arg("-g")
        .stdin(std::process::Stdio::inherit())
        .output()
        .ok()
        .filter(|o| o.status.success());
    let status = qemu.status().context("starting qemu-system-x86_64")?;
    if let Some(s) = saved {
        let mode = String::from_utf8_lossy(&s.stdout).trim().to_string();
        let _ = Command::new("stty")
            .arg(mode)
            .stdin(std::process::Stdio::inherit())
            .status();
    }
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}
