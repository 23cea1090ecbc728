//! `cargo xtask exec`: one command in a fresh VM, its exit code returned.

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::build::{build_all, keep};
use crate::{flags, ktap, out_dir, vm};

impl flags::Exec {
    /// Returns the command's exit code.
    pub(crate) fn run(self, sh: &Shell) -> Result<i32> {
        if self.cmd.is_empty() {
            bail!("usage: cargo xtask exec [--add HOST_FILE[:GUEST_PATH]]... -- CMD ARGS...");
        }
        let b = build_all(
            sh,
            self.kernel_src.as_deref(),
            false,
            true,
            self.debug_kernel,
        )?;
        let out = out_dir("exec");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut extra = self
            .add
            .iter()
            .map(|a| crate::guest::parse_add(a))
            .collect::<Result<Vec<_>>>()?;
        let script = out.join("pcmsig-exec");
        std::fs::write(&script, crate::guest::exec_script(&self.cmd))?;
        extra.push((script, "/pcmsig-exec".to_string()));
        let initrd = crate::guest::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &extra, &out)?;
        if self.keep {
            keep(&b, &initrd, &out)?;
        }
        let timeout = vm::timeout_limit(self.timeout);
        let run = vm::boot(
            &b.tools,
            &b.kernel,
            &initrd,
            &vm::Boot {
                mode: "exec",
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
        if let Some(p) = ktap::kernel_problem(&run.console) {
            bail!(
                "kernel problem: {p} (console: {})",
                run.console_log.display()
            );
        }
        if let ktap::Ending::TimedOut(s) = run.ending {
            bail!(
                "the command did not finish within {s} s (console: {})",
                run.console_log.display()
            );
        }
        vm::guest_exit(&run.console).with_context(|| {
            format!(
                "the guest never reported the command's exit code (console: {})",
                run.console_log.display()
            )
        })
    }
}
