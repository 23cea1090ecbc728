//! `cargo xtask build`: the build every booting command starts with (`image::build_all`),
//! alone, and the initramfs.

use anyhow::Result;

use crate::image::build_all;
use crate::paths::out_dir;
use crate::report::summary::fmt_times;
use crate::{flags, vm};

impl flags::Build {
    pub(crate) fn run(self) -> Result<()> {
        let opts = vm::Options {
            kernel_src: crate::kernel::source_of(self.kernel_src.clone(), self.kernel.as_deref())?,
            ..vm::Options::default()
        };
        let b = build_all(&opts, self.clippy, false)?;
        let initrd = crate::image::initramfs::build_initramfs(
            &b.tools,
            &b.ko,
            &b.guest_dir,
            &[],
            &out_dir("build"),
        )?;
        println!(
            "xtask: kernel  {} ({})",
            b.kernel.bzimage.display(),
            b.kernel.version
        );
        println!("xtask: module  {}", b.ko.display());
        println!("xtask: initrd  {}", initrd.display());
        println!("xtask: built in {}", fmt_times(&b.times));
        Ok(())
    }
}
