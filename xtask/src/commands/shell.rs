//! `cargo xtask shell`: an interactive shell in a VM on this terminal.

use anyhow::Result;
use std::path::Path;

use crate::vm::{interactive, shell_command};

use crate::image::prepare;
use crate::paths::out_dir;
use crate::{flags, vm};

impl flags::Shell {
    pub(crate) fn run(self) -> Result<()> {
        let opts = self.vm_options()?;
        let extra = crate::image::initramfs::parse_adds(&self.add)?;
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
