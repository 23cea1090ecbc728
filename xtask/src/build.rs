//! `cargo xtask build`, and the build every booting command starts with: toolchain, kernel (and
//! its layout guard), module, static guest programs.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xshell::Shell;

use crate::{flags, kernel, layout, out_dir, tools};

/// Everything a boot needs, with how long each part took.
pub struct Built {
    pub tools: tools::Tools,
    pub kernel: kernel::Kernel,
    pub ko: PathBuf,
    pub guest_dir: PathBuf,
    pub times: Vec<(&'static str, Duration)>,
}

pub fn build_all(
    sh: &Shell,
    kernel_src: Option<&Path>,
    clippy: bool,
    quiet: bool,
    flavour: Option<&'static str>,
) -> Result<Built> {
    let mut times = Vec::new();
    let t = Instant::now();
    let tools = tools::ensure()?;
    if !quiet {
        tools.print();
    }
    let kernel = kernel::ensure(&tools, kernel_src, quiet, flavour)?;
    layout::check(&kernel)?;
    times.push((
        if kernel.built {
            "kernel (built)"
        } else {
            "kernel (cached)"
        },
        t.elapsed(),
    ));
    let t = Instant::now();
    let ko = crate::guest::build_module(&tools, &kernel, false)?;
    if clippy {
        crate::guest::check_module_style(&kernel)?;
        println!("xtask: the module follows the kernel's .rustfmt.toml, lines within 100 columns");
        crate::guest::build_module(&tools, &kernel, true)?;
        println!("xtask: the module's CLIPPY=1 build is clean");
        // Leave the normal build in place for the initramfs.
        crate::guest::build_module(&tools, &kernel, false)?;
    }
    crate::guest::check_vermagic(&ko, &kernel)?;
    times.push(("module", t.elapsed()));
    let t = Instant::now();
    let guest_dir = crate::guest::build_guest(sh)?;
    times.push(("guest programs", t.elapsed()));
    Ok(Built {
        tools,
        kernel,
        ko,
        guest_dir,
        times,
    })
}

pub fn fmt_times(times: &[(&str, Duration)]) -> String {
    times
        .iter()
        .map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What every booting command does before it boots: [`build_all`] of the kernel `flavour`
/// (`vm/<flavour>.config` on top of `vm/kernel.config`), then the initramfs (with `extra` host
/// files) in `out`, and with `keep` the VM's inputs copied next to its logs.
pub fn prepare(
    sh: &Shell,
    kernel_src: Option<&Path>,
    flavour: Option<&'static str>,
    quiet: bool,
    extra: &[crate::guest::ExtraFile],
    (out, keep_inputs): (&Path, bool),
) -> Result<(Built, PathBuf)> {
    let mut b = build_all(sh, kernel_src, false, quiet, flavour)?;
    let t = Instant::now();
    let initrd = crate::guest::build_initramfs(&b.tools, &b.ko, &b.guest_dir, extra, out)?;
    b.times.push(("initramfs", t.elapsed()));
    if keep_inputs {
        keep(&b, &initrd, out)?;
    }
    Ok((b, initrd))
}

/// The VM flags `run` and `exec` declare alike (flags.rs: xflags has no shared flag groups),
/// gathered from either by [`vm_flags!`](crate::vm_flags).
pub struct VmFlags<'a> {
    pub kernel_src: Option<&'a Path>,
    pub debug_kernel: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub keep: bool,
    pub gdb: bool,
    pub qemu_args: &'a [String],
    pub timeout: Option<u64>,
    pub silence: Option<u64>,
    pub cpus: Option<u32>,
}

/// [`VmFlags`] from a command's flags struct that has every one of those flags.
#[macro_export]
macro_rules! vm_flags {
    ($f:expr) => {
        $crate::build::VmFlags {
            kernel_src: $f.kernel_src.as_deref(),
            debug_kernel: $f.debug_kernel,
            quiet: $f.quiet,
            verbose: $f.verbose,
            keep: $f.keep,
            gdb: $f.gdb,
            qemu_args: &$f.qemu_arg,
            timeout: $f.timeout,
            silence: $f.silence,
            cpus: $f.cpus,
        }
    };
}

/// Builds (quietly with `quiet_build`), packs `extra` into the initramfs and boots one VM in
/// `mode`, its logs in `out`; the console streamed unless `-q`.
pub fn build_and_boot(
    sh: &Shell,
    mode: &str,
    f: &VmFlags<'_>,
    extra: &[crate::guest::ExtraFile],
    (out, quiet_build): (&Path, bool),
) -> Result<crate::vm::Run> {
    let (b, initrd) = prepare(
        sh,
        f.kernel_src,
        f.debug_kernel.then_some("debug"),
        quiet_build,
        extra,
        (out, f.keep),
    )?;
    let boot = crate::vm::Boot {
        stream: f.verbose || !f.quiet,
        gdb: f.gdb,
        ..crate::vm::Boot::from_flags(
            mode,
            out,
            f.qemu_args,
            (f.timeout, f.silence),
            f.cpus,
            f.debug_kernel,
        )
    };
    crate::vm::boot(&b.tools, &b.kernel, &initrd, &boot)
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

impl flags::Build {
    pub(crate) fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(sh, self.kernel_src.as_deref(), self.clippy, false, None)?;
        let initrd =
            crate::guest::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out_dir("build"))?;
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
