//! The guest image, and the build every booting command starts with: toolchain, kernel (and
//! its layout guard), module, static guest programs (`programs.rs`), initramfs (`initramfs/`);
//! `cargo xtask build` (`commands/build.rs`) runs it alone.

pub mod initramfs;
pub mod programs;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::report::summary::{Phase, Times};
use crate::{kernel, kernel::layout, tools, vm};

/// The kernel series pcmsig's module carries (`module/compat.rs` names what their kernel
/// crates do differently): what `test --kernel all` runs, oldest first; a build on another
/// kernel warns (docs/kernels.md).
pub const PCMSIG_KERNELS: &[&str] = &["7.2", "7.3"];

/// Everything a boot needs, with how long each part took.
pub struct Built {
    pub tools: tools::Tools,
    pub kernel: kernel::Kernel,
    pub ko: PathBuf,
    pub guest_dir: PathBuf,
    pub times: Times,
}

/// Builds what a boot with `opts` needs (its kernel source and flavour); with `clippy`, the
/// module's lint build too; with `quiet`, without the tool list.
pub fn build_all(opts: &vm::Options, clippy: bool, quiet: bool) -> Result<Built> {
    let mut times = Vec::new();
    let t = Instant::now();
    let tools = tools::ensure()?;
    if !quiet {
        tools.print();
    }
    let kernel = kernel::ensure(
        &tools,
        opts.kernel_src.as_deref(),
        quiet,
        opts.flavour.config(),
    )?;
    if !PCMSIG_KERNELS
        .iter()
        .any(|s| kernel.version.starts_with(&format!("{s}.")))
    {
        // Another module (`--target`) may serve other kernels; pcmsig's carries these.
        eprintln!(
            "xtask: warning: kernel {} is not of {}; pcmsig's module targets those",
            kernel.version,
            PCMSIG_KERNELS.join(", ")
        );
    }
    layout::check(&kernel)?;
    times.push((
        Phase::Kernel {
            built: kernel.built,
        },
        t.elapsed(),
    ));
    let t = Instant::now();
    let ko = crate::kbuild::build_module(&tools, &kernel, false)?;
    if clippy {
        crate::kbuild::check::check_module_style(&kernel)?;
        println!("xtask: the module follows the kernel's .rustfmt.toml, lines within 100 columns");
        crate::kbuild::build_module(&tools, &kernel, true)?;
        println!("xtask: the module's CLIPPY=1 build is clean");
        // Leave the normal build in place for the initramfs.
        crate::kbuild::build_module(&tools, &kernel, false)?;
    }
    crate::kbuild::check::check_vermagic(&ko, &kernel)?;
    times.push((Phase::Module, t.elapsed()));
    let t = Instant::now();
    let guest_dir = crate::image::programs::build_guest()?;
    times.push((Phase::GuestPrograms, t.elapsed()));
    Ok(Built {
        tools,
        kernel,
        ko,
        guest_dir,
        times,
    })
}

/// What every booting command does before it boots: [`build_all`] for `opts` (quietly with
/// `opts.quiet`), then the initramfs (with `extra` host files) in `out`, and with `--keep` the
/// VM's inputs copied next to its logs.
pub fn prepare(
    opts: &vm::Options,
    extra: &[crate::image::initramfs::ExtraFile],
    out: &Path,
) -> Result<(Built, PathBuf)> {
    let mut b = build_all(opts, false, opts.quiet)?;
    let t = Instant::now();
    let initrd =
        crate::image::initramfs::build_initramfs(&b.tools, &b.ko, &b.guest_dir, extra, out)?;
    b.times.push((Phase::Initramfs, t.elapsed()));
    if opts.keep {
        keep(&b, &initrd, out)?;
    }
    Ok((b, initrd))
}

/// `run` and `exec`: builds, packs `extra` into the initramfs and boots one VM in `mode`, its
/// logs in `out`; the console streamed unless `-q` (`-v` wins). With `quiet_build`, the build
/// prints nothing (`exec`: the command's output is what the user reads).
pub fn build_and_boot(
    mode: vm::Mode,
    opts: &vm::Options,
    extra: &[crate::image::initramfs::ExtraFile],
    (out, quiet_build): (&Path, bool),
) -> Result<vm::Finished> {
    let (b, initrd) = prepare(&quiet_build_options(opts, quiet_build), extra, out)?;
    boot_one(mode, opts, &b, &initrd, out)
}

/// `opts` for the build before a boot: quiet with `-q`, or when only the boot's output counts.
pub fn quiet_build_options(opts: &vm::Options, quiet_build: bool) -> vm::Options {
    vm::Options {
        quiet: opts.quiet || quiet_build,
        ..opts.clone()
    }
}

/// Boots one VM in `mode` from what was built (pcmsig's or a `--target`'s), its logs in `out`;
/// the console streamed unless `-q` (`-v` wins).
pub fn boot_one(
    mode: vm::Mode,
    opts: &vm::Options,
    b: &Built,
    initrd: &Path,
    out: &Path,
) -> Result<vm::Finished> {
    let boot = vm::Boot {
        stream: opts.verbose || !opts.quiet,
        ..opts.boot(mode, out, 1)
    };
    vm::boot(&b.tools, &b.kernel, initrd, &boot)
}

/// Copies the VM's inputs next to its logs (`--keep`).
pub fn keep(b: &Built, initrd: &Path, out: &Path) -> Result<()> {
    for (src, name) in [(&b.kernel.bzimage, "bzImage"), (&b.ko, "pcmsig.ko")] {
        std::fs::copy(src, out.join(name)).with_context(|| format!("copying {}", src.display()))?;
    }
    println!(
        "xtask: kept bzImage, pcmsig.ko and {} in {}",
        initrd.display(),
        out.display()
    );
    Ok(())
}
