//! The guest side, built on the host: the module (normal, seeded-bug and CLIPPY builds, its
//! style check and vermagic), the static guest programs, and the initramfs that carries them.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use crate::initramfs::Initramfs;
use crate::kernel::Kernel;
use crate::paths::project_root;
use crate::tools::Tools;

/// The guest's target triple: static binaries, built with `+crt-static` on the gnu target.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile of the guest programs (Cargo.toml: release, incremental).
const GUEST_PROFILE: &str = "guest";

/// Guest programs put on the initramfs's PATH.
pub const GUEST_BINS: &[&str] = &["pcmsig", "pcmsig-tests", "pcmsig-bench"];

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

/// Builds the module with one seeded bug (its patch, `xtask/bugs/NAME.patch`, applied to a copy
/// of the sources under `dir`), so that `module/` is never touched: it is the shipped driver.
pub fn build_seeded_module(
    tools: &Tools,
    kernel: &Kernel,
    bug: &str,
    dir: &Path,
) -> Result<PathBuf> {
    let module_dir = copy_sources(dir)?;
    crate::bugs::apply(bug, &module_dir)?;
    kbuild_module(
        tools,
        kernel,
        &module_dir,
        false,
        Some(&format!("seeded bug {bug}")),
    )?;
    Ok(module_dir.join("pcmsig.ko"))
}

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
    let root = module_dir.join(crate::coverage::CRATE_ROOT);
    std::fs::rename(module_dir.join("pcmsig.rs"), &root)
        .with_context(|| format!("renaming the crate root to {}", root.display()))?;
    let c = project_root().join("xtask/coverage/sancov.c");
    std::fs::copy(&c, module_dir.join("sancov.c"))
        .with_context(|| format!("copying {}", c.display()))?;
    let kbuild = format!(
        "# Written by cargo xtask coverage (xtask/src/guest.rs): the coverage build.\n\
         obj-m := pcmsig.o\n\
         pcmsig-y := {} sancov.o\n\
         rustflags-y += --cfg pcmsig_coverage -Cdebuginfo=line-tables-only \\\n\
         \t-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \\\n\
         \t-Cllvm-args=-sanitizer-coverage-trace-pc -Cllvm-args=-sanitizer-coverage-prune-blocks=0\n",
        crate::coverage::CRATE_ROOT.replace(".rs", ".o")
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
fn copy_sources(dir: &Path) -> Result<PathBuf> {
    let module_dir = dir.join("module");
    let uapi_dir = dir.join("uapi/src");
    for d in [&module_dir, &uapi_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let src = project_root().join("module");
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
    let uapi = project_root().join("uapi/src/uapi.rs");
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
    let ko = module_dir.join("pcmsig.ko");
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
    Ok(())
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
# Written by cargo xtask (xtask/src/guest.rs, probe_caching_cc): clang for the module builds,
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

/// Checks the module's sources against the kernel's own style: `rustfmt --check` with the
/// tree's `.rustfmt.toml` (what `make rustfmtcheck` applies in-tree) and lines of at most 100
/// columns (the kernel's coding style; rustfmt leaves comments alone).
pub fn check_module_style(kernel: &Kernel) -> Result<()> {
    let module_dir = project_root().join("module");
    let config = kernel.src.join(".rustfmt.toml");
    let sh = Shell::new()?;
    let root = module_dir.join("pcmsig.rs");
    let out = cmd!(sh, "rustfmt --check --config-path {config} {root}")
        .quiet()
        .ignore_status()
        .output()
        .context("running rustfmt (rustup component add rustfmt)")?;
    if !out.status.success() {
        bail!(
            "module/ does not follow {} (fix with `rustfmt --config-path {} module/pcmsig.rs`):\n{}{}",
            config.display(),
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut long = Vec::new();
    let entries = std::fs::read_dir(&module_dir)
        .with_context(|| format!("reading {}", module_dir.display()))?;
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rs") {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            for (i, l) in text.lines().enumerate() {
                if l.chars().count() > 100 {
                    long.push(format!("{}:{}", p.display(), i + 1));
                }
            }
        }
    }
    if !long.is_empty() {
        bail!("module lines over 100 columns: {}", long.join(", "));
    }
    Ok(())
}

/// Hash of everything the module is built from: its sources, the shared UAPI, the kernel tree.
fn module_stamp(module_dir: &Path, kernel: &Kernel) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(module_dir)?
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

/// Refuses a module built for another kernel: its `vermagic` must start with the build tree's
/// release, as the guest's `insmod` would insist (checked here, before a boot is wasted).
pub fn check_vermagic(ko: &Path, kernel: &Kernel) -> Result<()> {
    let release_file = kernel.build_dir.join("include/config/kernel.release");
    let release = std::fs::read_to_string(&release_file)
        .with_context(|| format!("reading {}", release_file.display()))?;
    let release = release.trim();
    let bytes = std::fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    let vermagic = modinfo(&bytes, "vermagic")
        .with_context(|| format!("{} has no vermagic: not a kernel module?", ko.display()))?;
    if vermagic.split_whitespace().next() != Some(release) {
        bail!("{} was built for kernel {vermagic:?}, but the VM runs {release:?}: rebuild it against this tree", ko.display());
    }
    Ok(())
}

/// The value of `key=` in a module's `.modinfo` strings.
pub fn modinfo(ko: &[u8], key: &str) -> Option<String> {
    let needle = format!("{key}=");
    ko.split(|b| *b == 0).find_map(|s| {
        let s = std::str::from_utf8(s).ok()?;
        s.strip_prefix(&needle).map(str::to_string)
    })
}

/// Builds the static guest programs; returns the directory holding them.
pub fn build_guest(sh: &Shell) -> Result<PathBuf> {
    let root = project_root();
    let _dir = sh.push_dir(&root);
    let args = GUEST_BINS.iter().flat_map(|b| ["--bin", b]);
    cmd!(
        sh,
        "cargo build --quiet --profile {GUEST_PROFILE} --target {GUEST_TARGET} -p pcmsig {args...}"
    )
    .env("RUSTFLAGS", "-C target-feature=+crt-static")
    .quiet()
    .run()
    .context("building the static guest programs")?;
    Ok(root.join("target").join(GUEST_TARGET).join(GUEST_PROFILE))
}

/// Extra files for the initramfs: `(host path, guest path)`.
pub type ExtraFile = (PathBuf, String);

/// Writes the initramfs for `mode`; returns its path.
pub fn build_initramfs(
    tools: &Tools,
    ko: &Path,
    guest_dir: &Path,
    extra: &[ExtraFile],
    out_dir: &Path,
) -> Result<PathBuf> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut img = Initramfs::new();
    for d in ["/dev", "/proc", "/sys", "/tmp", "/root", "/etc"] {
        img.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    img.char_dev("/dev/console", 0o600, 5, 1);
    img.file("/init", 0o755, read(&project_root().join("vm/init"))?);
    img.file("/bin/busybox", 0o755, read(&tools.busybox)?);
    // Every applet as a link, made here rather than by `busybox --install` in the guest, which
    // costs about 0.2 s of boot under TCG.
    for applet in busybox_applets(&tools.busybox)? {
        if applet != "busybox" && !GUEST_BINS.contains(&applet.as_str()) {
            img.symlink(&format!("/bin/{applet}"), "busybox");
        }
    }
    img.file("/lib/modules/pcmsig.ko", 0o644, read(ko)?);
    for b in GUEST_BINS {
        img.file(&format!("/bin/{b}"), 0o755, read(&guest_dir.join(b))?);
    }
    for (host, guest) in extra {
        let mode = if is_executable(host) { 0o755 } else { 0o644 };
        img.file(guest, mode, read(host)?);
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let path = out_dir.join("initramfs.cpio");
    std::fs::write(&path, img.to_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The non-empty lines `program --list` prints. Guest programs are static, so the host runs
/// them: busybox names its applets, `pcmsig-tests` its tests.
pub fn list_of(program: &Path) -> Result<Vec<String>> {
    let sh = Shell::new()?;
    let out = cmd!(sh, "{program} --list").quiet().read()?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The applets `busybox --list` names.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let applets: Vec<String> = list_of(busybox)?
        .into_iter()
        .filter(|a| !a.contains('/'))
        .collect();
    if !applets.iter().any(|a| a == "sh") {
        bail!("{} --list does not name `sh`", busybox.display());
    }
    Ok(applets)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Every `--add` of a command ([`parse_add`]).
pub fn parse_adds(specs: &[String]) -> Result<Vec<ExtraFile>> {
    specs.iter().map(|a| parse_add(a)).collect()
}

/// Parses `HOST_FILE[:GUEST_PATH]`; the default guest path is `/root/<file name>`.
pub fn parse_add(spec: &str) -> Result<ExtraFile> {
    let (host, guest) = match spec.split_once(':') {
        Some((h, g)) => (PathBuf::from(h), g.to_string()),
        None => {
            let name = Path::new(spec)
                .file_name()
                .and_then(|n| n.to_str())
                .context("--add needs a file path")?;
            (PathBuf::from(spec), format!("/root/{name}"))
        }
    };
    if !host.is_file() {
        bail!("--add {spec}: {} is not a file", host.display());
    }
    if !guest.starts_with('/') || guest.ends_with('/') {
        bail!("--add {spec}: the guest path must be an absolute file path");
    }
    Ok((host, guest))
}

/// Where the guest's init looks for the script of `cargo xtask exec` (`vm/init`).
pub const EXEC_SCRIPT: &str = "/pcmsig-exec";

/// The initramfs file of `exec`'s script running `argv` ([`exec_script`]), written in `out`.
pub fn exec_file(out: &Path, argv: &[String]) -> Result<ExtraFile> {
    let script = out.join(EXEC_SCRIPT.trim_start_matches('/'));
    std::fs::write(&script, exec_script(argv))
        .with_context(|| format!("writing {}", script.display()))?;
    Ok((script, EXEC_SCRIPT.to_string()))
}

/// A shell script running `argv` in /root, with every argument single-quoted.
pub fn exec_script(argv: &[String]) -> String {
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    format!("cd /root\n{}\n", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernel::testing::{fake_kernel, scratch};

    #[test]
    fn modinfo_finds_vermagic_among_nul_separated_strings() {
        let blob = b"\x7fELF\0junk\0license=GPL\0vermagic=7.3.4 SMP mod_unload \0name=pcmsig\0";
        assert_eq!(
            modinfo(blob, "vermagic").as_deref(),
            Some("7.3.4 SMP mod_unload ")
        );
        assert_eq!(modinfo(blob, "name").as_deref(), Some("pcmsig"));
        assert_eq!(modinfo(blob, "author"), None);
    }

    #[test]
    fn add_specs_and_exec_quoting() {
        let dir = std::env::temp_dir().join(format!("pcmsig-add-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("prog");
        std::fs::write(&f, "x").unwrap();
        let spec = f.to_string_lossy().to_string();
        assert_eq!(parse_add(&spec).unwrap().1, "/root/prog");
        assert_eq!(
            parse_add(&format!("{spec}:/bin/prog")).unwrap().1,
            "/bin/prog"
        );
        assert!(parse_add(&format!("{spec}:relative")).is_err());
        assert!(parse_add("/nonexistent/file").is_err());
        assert_eq!(
            exec_script(&["echo".into(), "it's".into(), "a b".into()]),
            "cd /root\n'echo' 'it'\\''s' 'a b'\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn module_for_another_kernel_is_refused_before_boot() {
        let dir = scratch("vermagic");
        let kernel = fake_kernel(&dir, "7.3.4");
        let ko = dir.join("m.ko");
        std::fs::write(
            &ko,
            b"\x7fELF\0vermagic=6.1.0-18-amd64 SMP preempt mod_unload modversions \0",
        )
        .unwrap();
        let e = check_vermagic(&ko, &kernel).unwrap_err().to_string();
        assert!(
            e.contains("built for kernel \"6.1.0-18-amd64") && e.contains("\"7.3.4\""),
            "{e}"
        );
        std::fs::write(&ko, b"\x7fELF\0vermagic=7.3.4 SMP mod_unload \0").unwrap();
        check_vermagic(&ko, &kernel).unwrap();
        std::fs::write(&ko, b"not a module").unwrap();
        assert!(check_vermagic(&ko, &kernel)
            .unwrap_err()
            .to_string()
            .contains("no vermagic"));
    }
}
