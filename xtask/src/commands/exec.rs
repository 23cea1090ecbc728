//! `cargo xtask exec`: one command in a fresh VM, its exit code returned.

use anyhow::{bail, Context, Result};

use crate::image::build_and_boot;
use crate::paths::out_dir;
use crate::{flags, report::ktap, vm};

impl flags::Exec {
    /// Returns the command's exit code.
    pub(crate) fn run(self) -> Result<i32> {
        if self.cmd.is_empty() {
            bail!("usage: cargo xtask exec [--add HOST_FILE[:GUEST_PATH]]... -- CMD ARGS...");
        }
        let target = self
            .target
            .as_deref()
            .map(crate::target::Target::find)
            .transpose()?;
        let out = match &target {
            Some(t) => t.out_dir("exec"),
            None => out_dir("exec"),
        };
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let opts = self.vm_options()?;
        let mut extra = crate::image::initramfs::parse_adds(&self.add)?;
        extra.push(crate::image::initramfs::exec_file(&out, &self.cmd)?);
        let run = match &target {
            Some(t) => {
                let build = crate::image::quiet_build_options(&opts, true);
                let (b, initrd) = t.prepare(&build, None, &extra, &out)?;
                crate::image::boot_one(vm::Mode::Exec, &opts, &b, &initrd, &out)?
            }
            None => build_and_boot(vm::Mode::Exec, &opts, &extra, (&out, true))?,
        };
        if let Some(p) = ktap::kernel_problem(&run.console) {
            bail!(
                "kernel problem: {p} (console: {})",
                run.console_log.display()
            );
        }
        if let vm::Ending::TimedOut(s) = run.ending {
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
