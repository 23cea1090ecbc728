//! `cargo xtask shell`: an interactive shell in a VM on this terminal.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

use crate::kernel::Kernel;
use crate::tools::Tools;

use crate::build::prepare;
use crate::paths::out_dir;
use crate::{flags, vm};

impl flags::Shell {
    pub(crate) fn run(self) -> Result<()> {
        let opts = self.vm_options()?;
        let extra = crate::initramfs::parse_adds(&self.add)?;
        let (b, initrd) = match &self.target {
            Some(spec) => {
                let t = crate::target::Target::find(spec)?;
                let (b, initrd) = t.prepare(&opts, None, &extra, &t.out_dir("shell"))?;
                println!(
                    "xtask: starting a shell in the VM; {}.ko is loaded, its programs ({}) are \
                     on the PATH.",
                    t.module,
                    t.programs.join(", ")
                );
                (b, initrd)
            }
            None => {
                let r = prepare(&opts, &extra, &out_dir("shell"))?;
                println!("xtask: starting a shell in the VM; the pcmsig CLI is on the PATH.");
                r
            }
        };
        let out = initrd.parent().map(Path::to_path_buf).unwrap_or_default();
        println!("xtask: leave with `exit`, or Ctrl-A X to kill the VM.");
        interactive(shell_command(
            &b.tools,
            &b.kernel,
            &initrd,
            &opts.boot(vm::Mode::Shell, &out, 1),
        )?)
    }
}

/// The QEMU command of the interactive VM `boot` ([`vm::qemu_command`]): the serial console
/// multiplexed with QEMU's monitor on stdio, so that Ctrl-A X quits and Ctrl-A C reaches the
/// monitor.
pub fn shell_command(
    tools: &Tools,
    kernel: &Kernel,
    initrd: &Path,
    boot: &vm::Boot<'_>,
) -> Result<Command> {
    let mut qemu = vm::qemu_command(tools, kernel, initrd, boot)?;
    qemu.args(["-serial", "mon:stdio"]);
    Ok(qemu)
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
