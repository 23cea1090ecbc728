//! Building the module with Kbuild against a kernel build tree: `module/` itself (skipped when
//! its stamp matches), the copies the seeded bugs and the coverage run build, the kernel's
//! `CLIPPY=1` lint build, and the compiler wrapper that answers Kbuild's probes from a cache.

pub mod check;
pub mod patch;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::kernel::Kernel;
use crate::paths::project_root;
use crate::tools::Tools;

/// The module build's stamp in `module/`: the sources and kernel tree of the last successful
/// build (a kernel build tree has its own, [`crate::kernel::STAMP`]).
pub const MODULE_STAMP: &str = ".pcmsig-module-stamp";

/// Builds `module/` against the kernel build tree; with `clippy`, as the kernel's `CLIPPY=1`
/// build, failing on any warning.
pub fn build_module(tools: &Tools, kernel: &Kernel, clippy: bool) -> Result<PathBuf> {
    let module_dir = project_root().join("module");
    let ko = module_dir.join("pcmsig.ko");
    // Kbuild needs a second or two to find nothing to do: skip it when the sources and the
    // kernel tree are those of the last successful build.
    let stamp_path = module_dir.join(MODULE_STAMP);
    let stamp = module_stamp(&module_dir, kernel)?;
    if !clippy
        && ko.is_file()
        && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
    {
        return Ok(ko);
    }
    let _ = std::fs::remove_file(&stamp_path);
    kbuild_module(tools, kernel, &module_dir, clippy, None)?;
    if !clippy {
        std::fs::write(&stamp_path, stamp)
            .with_context(|| format!("writing {}", stamp_path.display()))?;
    }
    Ok(ko)
}

/// Builds a changed copy of the module under `dir` (`dir/module`, `dir/uapi/src`, the layout
/// of the repository): `edit` changes the copy's `module/` before Kbuild runs; `label` names
/// the variant in errors (a variant may warn: only the real module must not).
pub fn build_variant(
    tools: &Tools,
    kernel: &Kernel,
    dir: &Path,
    label: &str,
    edit: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    build_variant_of(&project_root(), tools, kernel, dir, label, edit)
}

/// [`build_variant`] of the sources under `root` (a copy of the repository's `module/` and
/// `uapi/src/`): a long run works on a snapshot, so that an edit meanwhile cannot reach it.
pub fn build_variant_of(
    root: &Path,
    tools: &Tools,
    kernel: &Kernel,
    dir: &Path,
    label: &str,
    edit: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let module_dir = copy_sources_from(root, dir)?;
    edit(&module_dir)?;
    kbuild_module(tools, kernel, &module_dir, false, Some(label))?;
    Ok(module_dir.join("pcmsig.ko"))
}

/// The module's crate root in the coverage copy (a composite module, the module linked with
/// `sancov.c`, needs another name than the module's).
pub const COVERAGE_CRATE_ROOT: &str = "pcmsig_main.rs";

/// Builds the coverage copy of the module under `dir` (`cargo xtask coverage`): the sources
/// unchanged but for the crate root's name, compiled with SanitizerCoverage and line tables,
/// and linked with `xtask/coverage/sancov.c`, which counts what runs. Returns the module and
/// the copy's directory (the paths its debug information names).
pub fn build_coverage_module(
    tools: &Tools,
    kernel: &Kernel,
    dir: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let _ = std::fs::remove_dir_all(dir);
    let module_dir = copy_sources(dir)?;
    let root = module_dir.join(COVERAGE_CRATE_ROOT);
    std::fs::rename(module_dir.join("pcmsig.rs"), &root)
        .with_context(|| format!("renaming the crate root to {}", root.display()))?;
    let c = project_root().join("xtask/coverage/sancov.c");
    std::fs::copy(&c, module_dir.join("sancov.c"))
        .with_context(|| format!("copying {}", c.display()))?;
    // The module's own Kbuild (its object, its series' cfg), then the coverage build's lines.
    let own = std::fs::read_to_string(module_dir.join("Kbuild")).context("reading the Kbuild")?;
    let kbuild = format!(
        "{own}# Added by cargo xtask coverage (xtask/src/kbuild/mod.rs): the coverage build.\n\
         pcmsig-y := {} sancov.o\n\
         rustflags-y += --cfg pcmsig_coverage -Cdebuginfo=line-tables-only \\\n\
         \t-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \\\n\
         \t-Cllvm-args=-sanitizer-coverage-trace-pc -Cllvm-args=-sanitizer-coverage-prune-blocks=0\n",
        COVERAGE_CRATE_ROOT.replace(".rs", ".o")
    );
    std::fs::write(module_dir.join("Kbuild"), kbuild).context("writing the coverage Kbuild")?;
    kbuild_module(
        tools,
        kernel,
        &module_dir,
        false,
        Some("the coverage build"),
    )?;
    Ok((module_dir.join("pcmsig.ko"), module_dir))
}

/// Copies the module's sources (and the UAPI file they include) under `dir`; returns the copy's
/// module directory.
pub fn copy_sources(dir: &Path) -> Result<PathBuf> {
    copy_sources_from(&project_root(), dir)
}

/// [`copy_sources`] from the tree at `root` (the repository, or a snapshot of it).
pub fn copy_sources_from(root: &Path, dir: &Path) -> Result<PathBuf> {
    let module_dir = dir.join("module");
    let uapi_dir = dir.join("uapi/src");
    for d in [&module_dir, &uapi_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let src = root.join("module");
    let entries = std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))?;
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rs") || p.file_name().is_some_and(|n| n == "Kbuild")
        {
            let to = module_dir.join(e.file_name());
            std::fs::copy(&p, &to)
                .with_context(|| format!("copying {} to {}", p.display(), to.display()))?;
        }
    }
    let uapi = root.join("uapi/src/uapi.rs");
    std::fs::copy(&uapi, uapi_dir.join("uapi.rs"))
        .with_context(|| format!("copying {}", uapi.display()))?;
    Ok(module_dir)
}

/// Runs kbuild on the module sources in `module_dir`; any warning of the real module (no
/// `variant`: a seeded bug, the coverage build) is an error.
fn kbuild_module(
    tools: &Tools,
    kernel: &Kernel,
    module_dir: &Path,
    clippy: bool,
    variant: Option<&str>,
) -> Result<()> {
    kbuild_ko(tools, kernel, module_dir, "pcmsig.ko", clippy, variant).map(drop)
}

/// Runs kbuild (`make M=module_dir modules`, the kernel's compilers) on any out-of-tree module
/// directory, C or Rust, which must produce `ko`; returns its path. Any warning is an error
/// unless the build is a `variant` (a seeded bug may leave correct code unused).
pub fn kbuild_ko(
    tools: &Tools,
    kernel: &Kernel,
    module_dir: &Path,
    ko: &str,
    clippy: bool,
    variant: Option<&str>,
) -> Result<PathBuf> {
    let ko = module_dir.join(ko);
    let mut make = tools.kbuild(&kernel.build_dir);
    make.arg(format!("M={}", module_dir.display()))
        .arg(format!("CC={}", probe_caching_cc(tools, kernel)?.display()));
    if clippy {
        let driver = tools.clippy_driver.as_ref().context(
            "the CLIPPY=1 build needs /usr/bin/clippy-driver (package: rust-web-clippy)",
        )?;
        make.arg("CLIPPY=1")
            .arg(format!("CLIPPY_DRIVER={}", driver.display()));
    }
    make.arg("modules");
    let out = make.output().context("running make for the module")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let what = variant.map_or(String::new(), |v| format!(" ({v})"));
    if !out.status.success() {
        bail!("building the module{what} failed:\n{text}");
    }
    // A seeded bug may leave correct code unused: only the real module must be warning-free.
    if variant.is_none() && text.contains("warning:") {
        bail!("the module build{what} printed warnings (they are errors here):\n{text}");
    }
    if !ko.is_file() {
        bail!("make succeeded but {} is missing", ko.display());
    }
    Ok(ko)
}

/// Kbuild runs its compiler probes (`cc-option`: does clang accept this flag? 22 of them on
/// this config) again on every external-module build: about 0.5 s of a 1.9 s build. Their
/// answers depend only on the arguments and the compiler, so the module builds use this wrapper
/// as `CC`: it answers a probe (a compile of `/dev/null`) from a file beside the kernel build,
/// keyed by the compiler's path and version and the kernel build's stamp, and hands every other
/// call to clang unchanged. Only clang's two plain answers are kept (0: accepted, 1: refused);
/// anything else (a crash, a signal) is passed on and asked again next time.
fn probe_caching_cc(tools: &Tools, kernel: &Kernel) -> Result<PathBuf> {
    let stamp = std::fs::read(kernel.build_dir.join(crate::kernel::STAMP)).unwrap_or_default();
    let key = crate::kernel::fnv64(&[
        tools.clang.to_string_lossy().as_bytes(),
        tools.clang_version.as_bytes(),
        &stamp,
    ]);
    let cache = kernel
        .build_dir
        .join(format!(".pcmsig-cc-probes-{key:016x}"));
    let script = format!(
        r#"#!/bin/sh
# Written by cargo xtask (xtask/src/kbuild/mod.rs, probe_caching_cc): clang for the module builds,
# with the answers to Kbuild's compiler probes (compiles of /dev/null) kept in the cache below.
real='{clang}'
cache='{cache}'
case " $* " in
*" -c "*" /dev/null "*) ;;
*) exec "$real" "$@" ;;
esac
key=
skip=
for a in "$@"; do
    if [ -n "$skip" ]; then skip=; continue; fi
    if [ "$a" = -o ]; then skip=1; continue; fi
    key="$key $a"
done
if hit=$(grep -m1 -xF -e "0$key" -e "1$key" "$cache" 2>/dev/null); then
    case "$hit" in 0*) exit 0 ;; *) exit 1 ;; esac
fi
"$real" "$@"
rc=$?
case $rc in 0|1) echo "$rc$key" >> "$cache" ;; esac
exit $rc
"#,
        clang = tools.clang.display(),
        cache = cache.display(),
    );
    let path = kernel.build_dir.join(".pcmsig-cc");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(script.as_str()) {
        // Written aside and renamed: a concurrent build never runs half a script.
        let tmp = kernel
            .build_dir
            .join(format!(".pcmsig-cc.{}", std::process::id()));
        std::fs::write(&tmp, &script).with_context(|| format!("writing {}", tmp.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    }
    Ok(path)
}

/// Hash of everything the module is built from: its sources, the shared UAPI, the kernel tree.
fn module_stamp(module_dir: &Path, kernel: &Kernel) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(module_dir)
        .with_context(|| format!("listing {}", module_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "rs") || p.file_name().is_some_and(|n| n == "Kbuild")
        })
        .collect();
    files.push(project_root().join("uapi/src/uapi.rs"));
    files.sort();
    let mut parts: Vec<Vec<u8>> = vec![kernel.build_dir.to_string_lossy().as_bytes().to_vec()];
    let stamp = std::fs::read(kernel.build_dir.join(crate::kernel::STAMP)).unwrap_or_default();
    parts.push(stamp);
    for f in &files {
        parts.push(f.to_string_lossy().as_bytes().to_vec());
        parts.push(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(format!("{:016x}", crate::kernel::fnv64(&refs)))
}
