//! The guest kernel: finding its source, configuring it from `vm/kernel.config`, and building it
//! once into a cache shared by every clone on the machine.
//!
//! The build directory is keyed by the kernel version, the source's identity and the toolchain
//! versions. Inside it, a stamp records the hash of the config fragment: when it matches and the
//! image exists, no `make` runs at all; when the fragment changed, the config is merged again and
//! `make` rebuilds incrementally.

pub mod layout;

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

use crate::paths::project_root;
use crate::tools::{cache_dir, Tools};

/// Debian's `linux-source-7.3` tarball.
const DEBIAN_TARBALL_DIR: &str = "/usr/src";
const DEBIAN_TARBALL_PREFIX: &str = "linux-source-7.3";
/// Bump when the build procedure changes in a way that needs a fresh build directory.
const LAYOUT: &str = "v1";

/// A configured, built kernel tree.
pub struct Kernel {
    pub version: String,
    /// The source tree it was built from.
    pub src: PathBuf,
    pub build_dir: PathBuf,
    pub bzimage: PathBuf,
    /// Whether this invocation ran `make` on the kernel.
    pub built: bool,
}

/// FNV-1a, 64 bit: stable across Rust releases, unlike `DefaultHasher`.
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn makefile_version(src: &Path) -> Result<String> {
    let text = std::fs::read_to_string(src.join("Makefile")).with_context(|| {
        format!(
            "reading {}/Makefile: is this a kernel source tree?",
            src.display()
        )
    })?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|r| r.trim().strip_prefix('='))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let (v, p, s) = (get("VERSION"), get("PATCHLEVEL"), get("SUBLEVEL"));
    if v.is_empty() || p.is_empty() {
        bail!("{}/Makefile has no VERSION/PATCHLEVEL", src.display());
    }
    Ok(format!("{v}.{p}.{s}"))
}

/// `--kernel all`: `cargo xtask test` once per series the module supports.
pub const ALL: &str = "all";

/// The kernel source a command's `--kernel-src` and `--kernel SERIES` name: the tree or tarball
/// given, or Debian's `linux-source-SERIES` tarball, which must be installed; neither: `None`
/// (the default, [`default_source`]).
pub fn source_of(kernel_src: Option<PathBuf>, series: Option<&str>) -> Result<Option<PathBuf>> {
    let Some(series) = series else {
        return Ok(kernel_src);
    };
    if kernel_src.is_some() {
        bail!("--kernel {series} and --kernel-src: choose one");
    }
    let numbers: Vec<&str> = series.split('.').collect();
    if series == ALL {
        bail!("--kernel all runs `cargo xtask test` once per supported series: not this command");
    }
    if numbers.len() != 2
        || numbers
            .iter()
            .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!("--kernel {series:?}: a series is MAJOR.MINOR, such as 7.2 or 7.3");
    }
    let tarball = Path::new(DEBIAN_TARBALL_DIR).join(format!("linux-source-{series}.tar.xz"));
    if !tarball.is_file() {
        bail!(
            "--kernel {series}: {} is missing; install Debian's linux-source-{series} \
             (apt-get install -t trixie-backports linux-source-{series}, with \
             ci/install-deps.sh's sources list)",
            tarball.display()
        );
    }
    Ok(Some(tarball))
}

pub fn default_source() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KERNEL_SRC") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(DEBIAN_TARBALL_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    n.starts_with(DEBIAN_TARBALL_PREFIX)
                        && (n.ends_with(".tar.xz") || n.ends_with(".tar.gz") || n.ends_with(".tar"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().with_context(|| {
        format!(
            "no kernel source: pass --kernel-src DIR|TARBALL, set KERNEL_SRC, or install Debian's \
             linux-source-7.3 (bash ci/install-deps.sh) to get {DEBIAN_TARBALL_DIR}/{DEBIAN_TARBALL_PREFIX}.tar.xz"
        )
    })
}

/// The newest modification time (ns) of the files under `dir`, mixed with their count: changes
/// when a file is edited, added or removed. `.git` is skipped. About 0.5 s for a kernel tree.
pub fn tree_fingerprint(dir: &Path) -> u64 {
    fn walk(dir: &Path, newest: &mut u128, count: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            if e.file_name() == ".git" {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(&e.path(), newest, count);
            } else if let Ok(m) = e.metadata() {
                *count += 1;
                let t = crate::paths::mtime(&m).as_nanos();
                *newest = (*newest).max(t);
            }
        }
    }
    let (mut newest, mut count) = (0u128, 0u64);
    walk(dir, &mut newest, &mut count);
    fnv64(&[&newest.to_le_bytes(), &count.to_le_bytes()])
}

/// Resolves the source to a directory, extracting a tarball into the cache once.
fn source_dir(src: &Path) -> Result<PathBuf> {
    if src.is_dir() {
        return src
            .canonicalize()
            .with_context(|| format!("resolving {}", src.display()));
    }
    let meta = std::fs::metadata(src)
        .with_context(|| format!("kernel source {} not found", src.display()))?;
    let mtime = crate::paths::mtime(&meta).as_secs();
    let id = fnv64(&[
        src.to_string_lossy().as_bytes(),
        &meta.len().to_le_bytes(),
        &mtime.to_le_bytes(),
    ]);
    let dest = cache_dir().join("src").join(format!("{id:016x}"));
    let done = dest.join(".pcmsig-extracted");
    if !done.exists() {
        let t = Instant::now();
        println!("xtask: extracting {} (10 to 30 s, once)", src.display());
        let tmp = dest.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let sh = Shell::new()?;
        cmd!(sh, "tar -xf {src} -C {tmp}")
            .quiet()
            .run()
            .with_context(|| format!("extracting {} (packages: tar, xz-utils)", src.display()))?;
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
        std::fs::write(&done, src.to_string_lossy().as_bytes())
            .with_context(|| format!("writing {}", done.display()))?;
        println!("xtask: extracted in {:.1} s", t.elapsed().as_secs_f64());
    }
    // The tarball holds one top-level directory.
    let mut tops = std::fs::read_dir(&dest)
        .with_context(|| format!("listing {}", dest.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect::<Vec<_>>();
    tops.sort();
    match tops.as_slice() {
        [one] => Ok(one.clone()),
        _ if dest.join("Makefile").exists() => Ok(dest),
        _ => bail!(
            "{} does not hold one kernel source directory",
            dest.display()
        ),
    }
}

/// What [`STAMP`] holds after a build of exactly this: the fragments' text, the cache key, a
/// user tree's fingerprint and the series' fixes. Only a series with fixes adds them, so every
/// other build keeps the stamp it had before fixes existed (and is not rebuilt, here or in CI);
/// a changed fix is an incremental `make` in the same tree (the bindings and the kernel crate
/// depend on `rust/bindgen_parameters`).
fn build_stamp(fragment: &str, key: u64, tree: u64, fixes: &str) -> String {
    let (key, tree) = (key.to_le_bytes(), tree.to_le_bytes());
    let mut parts: Vec<&[u8]> = vec![fragment.as_bytes(), &key, &tree];
    if !fixes.is_empty() {
        parts.push(fixes.as_bytes());
    }
    format!("{:016x}", fnv64(&parts))
}

/// The directory of a series' fixes: `vm/series/MAJOR.MINOR/`.
fn series_dir(version: &str) -> PathBuf {
    let series: Vec<&str> = version.split('.').take(2).collect();
    project_root().join("vm/series").join(series.join("."))
}

/// The marker line a fixed `rust/bindgen_parameters` carries after its original text.
const FIXES_MARKER: &str = "# pcmsig: series fixes follow";

/// Applies the fixes `vm/series/SERIES/` holds for the tree of kernel `version` (an extracted
/// tarball): `bindgen_parameters` is appended to the tree's `rust/bindgen_parameters`, once
/// (after [`FIXES_MARKER`]; a changed fix replaces the old one). Returns the fixes' text, which
/// joins the build's stamp; empty when the series has none.
fn apply_series_fixes(src: &Path, version: &str) -> Result<String> {
    let fix = series_dir(version).join("bindgen_parameters");
    let Ok(text) = std::fs::read_to_string(&fix) else {
        return Ok(String::new());
    };
    let target = src.join("rust/bindgen_parameters");
    let current = std::fs::read_to_string(&target)
        .with_context(|| format!("reading {} to fix it", target.display()))?;
    let original = current
        .split_once(&format!("\n{FIXES_MARKER}\n"))
        .map_or(current.as_str(), |(before, _)| before);
    let fixed = format!(
        "{}\n{FIXES_MARKER}\n{text}",
        original.trim_end_matches('\n')
    );
    if fixed != current {
        std::fs::write(&target, &fixed)
            .with_context(|| format!("appending {} to {}", fix.display(), target.display()))?;
        println!(
            "xtask: kernel {version}: {} appended to rust/bindgen_parameters",
            fix.strip_prefix(project_root()).unwrap_or(&fix).display()
        );
    }
    Ok(text)
}

/// Options of the fragment: `(name, wanted line)`, where a wanted `n` is "is not set".
pub fn fragment_options(fragment: &str) -> Vec<(String, String)> {
    fragment
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix("# CONFIG_") {
                let name = rest.strip_suffix(" is not set")?;
                Some((format!("CONFIG_{name}"), "n".to_string()))
            } else if l.starts_with("CONFIG_") {
                let (k, v) = l.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            } else {
                None
            }
        })
        .collect()
}

/// Options of the fragment whose value did not survive `olddefconfig` (as kunit.py checks).
pub fn dropped_options(fragment: &str, config: &str) -> Vec<String> {
    fragment_options(fragment)
        .into_iter()
        .filter(|(k, v)| {
            let set = config
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string));
            match (v.as_str(), set) {
                ("n", None) => false,
                ("n", Some(_)) => true,
                (want, Some(have)) => want != have,
                (_, None) => true,
            }
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Opens the build log for appending and records the command about to run.
fn open_log(log: &Path, what: &str) -> Result<std::fs::File> {
    let mut logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening the build log {}", log.display()))?;
    writeln!(logf, "\n$ make {what}")
        .with_context(|| format!("writing the build log {}", log.display()))?;
    Ok(logf)
}

fn make(src: &Path, build: &Path, tools: &Tools, args: &[&str], log: &Path) -> Result<()> {
    let logf = open_log(log, &args.join(" "))?;
    let status = tools
        .kbuild(src)
        .arg(format!("O={}", build.display()))
        .args(args)
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .status()
        .context("running make")?;
    if !status.success() {
        bail!(
            "`make {}` failed; log: {}\n{}",
            args.join(" "),
            log.display(),
            tail(log, 30)
        );
    }
    Ok(())
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines a child writes to its piped stdout and stderr, as they come, from one reader
/// thread each (the channel closes when both have ended).
fn output_lines(
    child: &mut std::process::Child,
) -> (
    std::sync::mpsc::Receiver<String>,
    Vec<std::thread::JoinHandle<()>>,
) {
    fn forward(
        r: impl std::io::Read + Send + 'static,
        tx: std::sync::mpsc::Sender<String>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            BufReader::new(r)
                .lines()
                .map_while(Result::ok)
                .for_each(|l| drop(tx.send(l)))
        })
    }
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(forward(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(forward(err, tx));
    }
    (rx, readers)
}

/// Steps (Kbuild's `  CC ...` lines) a full build takes when no earlier build on this machine
/// said otherwise: what a cold build of `vm/kernel.config` printed on 2026-11-29 (1886).
const STEPS_ESTIMATE: usize = 1900;

/// The progress line: steps done of the expected total (from the last full build of this
/// flavour, else [`STEPS_ESTIMATE`]), and the current step.
fn progress_line(elapsed: Duration, steps: usize, expected: usize, now: &str) -> String {
    let e = elapsed.as_secs();
    let of = if steps <= expected {
        format!(
            "{steps} of ~{expected} steps ({}%)",
            steps * 100 / expected.max(1)
        )
    } else {
        format!("{steps} steps (more than the ~{expected} expected)")
    };
    format!(
        "xtask: kernel build {}m{:02}s, {of}, now: {now}",
        e / 60,
        e % 60
    )
}

/// Runs the long build with a progress line every 15 s and the full log in `log`; `counted`
/// holds the step count of the last full build, read for the estimate and written after.
fn make_with_progress(
    src: &Path,
    build: &Path,
    tools: &Tools,
    jobs: usize,
    (log, counted): (&Path, &Path),
) -> Result<()> {
    let expected = std::fs::read_to_string(counted)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(STEPS_ESTIMATE);
    let mut logf = open_log(log, &format!("-j{jobs}"))?;
    let mut child = tools
        .kbuild(src)
        .arg(format!("O={}", build.display()))
        .arg(format!("-j{jobs}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running make")?;
    let (rx, readers) = output_lines(&mut child);
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut steps = 0usize;
    let mut last = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                writeln!(logf, "{line}")
                    .with_context(|| format!("writing the build log {}", log.display()))?;
                if line.starts_with("  ") {
                    steps += 1;
                    last = line.trim().to_string();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last_report.elapsed() >= Duration::from_secs(15) {
            println!("{}", progress_line(start.elapsed(), steps, expected, &last));
            last_report = Instant::now();
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().context("waiting for the kernel's make")?;
    if !status.success() {
        bail!(
            "kernel build failed; full log: {}\n{}",
            log.display(),
            tail(log, 40)
        );
    }
    // An incremental build's few steps say nothing of the next full one.
    if steps > expected / 2 {
        let _ = std::fs::write(counted, steps.to_string());
    }
    Ok(())
}

/// A kernel build tree's stamp: the configuration and source it was built from (the module
/// build has its own, [`crate::kbuild::MODULE_STAMP`]).
pub const STAMP: &str = ".pcmsig-stamp";

/// Finds, configures and builds the kernel (or reuses the cached build).
///
/// With a `flavour`, another kernel in its own cache directory: `vm/kernel.config` plus
/// `vm/<flavour>.config` (`debug`: KASAN, lockdep, kmemleak, ...; `peers`: the virtio and 9p
/// options other VM test tools need, for `cargo xtask bench --peers`).
pub fn ensure(
    tools: &Tools,
    kernel_src: Option<&Path>,
    quiet: bool,
    flavour: Option<&str>,
) -> Result<Kernel> {
    let plan = Plan::new(tools, kernel_src, flavour)?;
    if !quiet {
        println!("xtask: kernel {} from {}", plan.version, plan.src.display());
    }
    let bzimage = plan.build.join("arch/x86/boot/bzImage");
    let stamp_path = plan.build.join(STAMP);
    let up_to_date = bzimage.is_file()
        && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(plan.stamp.as_str());
    if up_to_date && !quiet {
        println!("xtask: kernel up to date in {}", plan.build.display());
    }
    if !up_to_date {
        std::fs::create_dir_all(&plan.build)
            .with_context(|| format!("creating {}", plan.build.display()))?;
        let _ = std::fs::remove_file(&stamp_path);
        plan.configure(tools)?;
        plan.make(tools)?;
        std::fs::write(&stamp_path, &plan.stamp)
            .with_context(|| format!("writing {}", stamp_path.display()))?;
    }
    Ok(Kernel {
        version: plan.version,
        src: plan.src,
        build_dir: plan.build,
        bzimage,
        built: !up_to_date,
    })
}

/// Where a kernel comes from, where it is built and what its build must match.
struct Plan {
    src: PathBuf,
    version: String,
    /// `vm/kernel.config` and the flavour's fragment.
    fragment_paths: Vec<PathBuf>,
    /// Their text, concatenated.
    fragment: String,
    /// The cache directory: keyed by source identity and toolchain versions.
    build: PathBuf,
    /// What [`STAMP`] holds after a build of exactly this: the fragment, the key and,
    /// for a source directory, its tree's fingerprint.
    stamp: String,
}

impl Plan {
    fn new(tools: &Tools, kernel_src: Option<&Path>, flavour: Option<&str>) -> Result<Plan> {
        let src_arg = match kernel_src {
            Some(p) => p.to_path_buf(),
            None => default_source()?,
        };
        let src = source_dir(&src_arg)?;
        let version = makefile_version(&src)?;
        // A tree the user gave is theirs: only an extracted tarball (the harness's own copy)
        // gets its series' fixes.
        let fixes = if src_arg.is_dir() {
            String::new()
        } else {
            apply_series_fixes(&src, &version)?
        };
        let mut fragment_paths = vec![project_root().join("vm/kernel.config")];
        if let Some(f) = flavour {
            fragment_paths.push(project_root().join(format!("vm/{f}.config")));
        }
        let mut fragment = String::new();
        for p in &fragment_paths {
            fragment +=
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        }
        let key = fnv64(&[
            LAYOUT.as_bytes(),
            src.to_string_lossy().as_bytes(),
            version.as_bytes(),
            tools.rustc_version.as_bytes(),
            tools.clang_version.as_bytes(),
            tools.bindgen_version.as_bytes(),
        ]);
        let suffix = flavour.map(|f| format!("-{f}")).unwrap_or_default();
        let build = cache_dir()
            .join("kernel")
            .join(format!("{version}-{key:016x}{suffix}"));
        // Kbuild writes the real path of its output tree into its commands (`OBJTREE=...`), which
        // the layout guard and the module build read back: a cache reached through a symbolic
        // link (a cache directory on another disk) must be named as Kbuild names it.
        let build = build.canonicalize().unwrap_or(build);
        // A source directory the user gave may be edited between runs: its files' newest mtime
        // and their count join the stamp, so an edit means an incremental `make`. (An extracted
        // tarball is immutable: its cache directory is keyed by the tarball itself.)
        let tree = if src_arg.is_dir() {
            tree_fingerprint(&src)
        } else {
            0
        };
        let stamp = build_stamp(&fragment, key, tree, &fixes);
        Ok(Plan {
            src,
            version,
            fragment_paths,
            fragment,
            build,
            stamp,
        })
    }

    /// The fragments' names, relative to the repository.
    fn fragment_names(&self) -> String {
        self.fragment_paths
            .iter()
            .map(|p| {
                p.strip_prefix(project_root())
                    .unwrap_or(p)
                    .display()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// tinyconfig, the fragments merged onto it, olddefconfig; fails naming any option of the
    /// fragments that did not survive.
    fn configure(&self, tools: &Tools) -> Result<()> {
        let (src, build) = (&self.src, &self.build);
        let log = build.join("build.log");
        println!(
            "xtask: configuring the kernel (tinyconfig + {}); log: {}",
            self.fragment_names(),
            log.display()
        );
        make(src, build, tools, &["rustavailable"], &log)
            .context("the Rust toolchain is not usable for this kernel")?;
        make(src, build, tools, &["tinyconfig"], &log)?;
        let sh = Shell::new()?;
        sh.change_dir(src);
        let merge = src.join("scripts/kconfig/merge_config.sh");
        let (config, fragments) = (build.join(".config"), &self.fragment_paths);
        cmd!(sh, "{merge} -m -O {build} {config} {fragments...}")
            .quiet()
            .read()
            .context("merging the config fragments")?;
        make(src, build, tools, &["olddefconfig"], &log)?;
        let config_path = build.join(".config");
        let config = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let dropped = dropped_options(&self.fragment, &config);
        if !dropped.is_empty() {
            bail!(
                "these options of {} did not survive olddefconfig (missing dependency or \
                 renamed option): {}",
                self.fragment_names(),
                dropped.join(", ")
            );
        }
        Ok(())
    }

    /// The (incremental) kernel build, with progress.
    fn make(&self, tools: &Tools) -> Result<()> {
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        let t = Instant::now();
        println!(
            "xtask: building the kernel with -j{jobs} (about 7 minutes the first time on 2 cores)"
        );
        // Per flavour (the debug kernel compiles more), shared by every cache directory.
        let counted = cache_dir()
            .join("kernel")
            .join(format!("steps-{}.txt", self.fragment_paths.len()));
        make_with_progress(
            &self.src,
            &self.build,
            tools,
            jobs,
            (&self.build.join("build.log"), &counted),
        )?;
        println!("xtask: kernel built in {:.0} s", t.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Helpers for other modules' tests: a scratch directory and a fake kernel build tree.
#[cfg(test)]
pub mod testing {
    use super::Kernel;
    use std::path::{Path, PathBuf};

    /// An empty directory of its own under the temporary directory.
    pub fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pcmsig-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A "build tree" in `dir` that holds only `include/config/kernel.release`.
    pub fn fake_kernel(dir: &Path, release: &str) -> Kernel {
        std::fs::create_dir_all(dir.join("include/config")).unwrap();
        std::fs::write(
            dir.join("include/config/kernel.release"),
            format!("{release}\n"),
        )
        .unwrap();
        Kernel {
            version: release.into(),
            src: dir.to_path_buf(),
            build_dir: dir.to_path_buf(),
            bzimage: dir.join("bzImage"),
            built: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_series_names_debians_source_package_and_is_checked() {
        let tree = Some(PathBuf::from("/src/tree"));
        assert_eq!(source_of(tree.clone(), None).unwrap(), tree);
        assert_eq!(source_of(None, None).unwrap(), None);
        let both = source_of(tree, Some("7.2")).unwrap_err().to_string();
        assert!(both.contains("choose one"), "{both}");
        for bad in ["7", "7.", ".2", "7.2.1", "7.x", "seven"] {
            let e = source_of(None, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("MAJOR.MINOR"), "{bad}: {e}");
        }
        let e = source_of(None, Some("99.9")).unwrap_err().to_string();
        assert!(
            e.contains("/usr/src/linux-source-99.9.tar.xz is missing")
                && e.contains("install Debian's linux-source-99.9"),
            "{e}"
        );
    }

    use super::*;

    #[test]
    fn fixes_join_the_stamp_and_their_absence_keeps_the_old_one() {
        let fragment = "CONFIG_RUST=y\n";
        let old = format!(
            "{:016x}",
            fnv64(&[
                fragment.as_bytes(),
                &7u64.to_le_bytes(),
                &0u64.to_le_bytes()
            ])
        );
        assert_eq!(build_stamp(fragment, 7, 0, ""), old);
        let fixed = build_stamp(fragment, 7, 0, "--opaque-type t\n");
        assert_ne!(fixed, old);
        assert_ne!(fixed, build_stamp(fragment, 7, 0, "--opaque-type u\n"));
    }

    #[test]
    fn a_series_fix_is_appended_once() {
        let dir = std::env::temp_dir().join(format!("pcmsig-fixes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rust")).unwrap();
        let params = dir.join("rust/bindgen_parameters");
        std::fs::write(&params, "--opaque-type xregs_state\n").unwrap();
        let fix = std::fs::read_to_string(project_root().join("vm/series/7.2/bindgen_parameters"))
            .unwrap();
        assert!(fix.contains("--opaque-type ns_common"), "{fix}");
        // Twice: the second run changes nothing.
        for _ in 0..2 {
            assert_eq!(apply_series_fixes(&dir, "7.2.12").unwrap(), fix);
            let text = std::fs::read_to_string(&params).unwrap();
            assert_eq!(
                text,
                format!("--opaque-type xregs_state\n{FIXES_MARKER}\n{fix}")
            );
        }
        // A series without fixes: nothing applied, nothing in the stamp.
        std::fs::write(&params, "--opaque-type xregs_state\n").unwrap();
        assert_eq!(apply_series_fixes(&dir, "7.3.4").unwrap(), "");
        assert_eq!(
            std::fs::read_to_string(&params).unwrap(),
            "--opaque-type xregs_state\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dropped_options_names_what_olddefconfig_lost() {
        let fragment = "# comment\nCONFIG_RUST=y\nCONFIG_HZ=250\n# CONFIG_DEBUG_INFO is not set\nCONFIG_GONE=y\n";
        let config = "CONFIG_RUST=y\nCONFIG_HZ=300\nCONFIG_DEBUG_INFO=y\n";
        assert_eq!(
            dropped_options(fragment, config),
            vec![
                "CONFIG_HZ=250".to_string(),
                "CONFIG_DEBUG_INFO=n".into(),
                "CONFIG_GONE=y".into()
            ]
        );
        assert!(
            dropped_options("CONFIG_RUST=y\n# CONFIG_X is not set\n", "CONFIG_RUST=y\n").is_empty()
        );
    }

    #[test]
    fn the_committed_fragment_parses() {
        let text = std::fs::read_to_string(project_root().join("vm/kernel.config")).unwrap();
        let opts = fragment_options(&text);
        assert!(opts.iter().any(|(k, v)| k == "CONFIG_RUST" && v == "y"));
        assert!(opts.len() > 30);
    }

    #[test]
    fn the_progress_line_says_how_far_along_the_build_is() {
        let d = Duration::from_secs(185);
        assert_eq!(
            progress_line(d, 950, 1900, "CC mm/rmap.o"),
            "xtask: kernel build 3m05s, 950 of ~1900 steps (50%), now: CC mm/rmap.o"
        );
        assert_eq!(
            progress_line(d, 2000, 1900, "LD vmlinux"),
            "xtask: kernel build 3m05s, 2000 steps (more than the ~1900 expected), now: LD vmlinux"
        );
    }

    #[test]
    fn fnv_is_stable() {
        // Known values: FNV-1a 64 of the empty input is its offset basis; each part is followed
        // by a 0xff separator. A change of algorithm would silently invalidate every cache key.
        assert_eq!(fnv64(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(&[b""]), 0xaf64_724c_8602_eb6e);
        // Computed independently (Python) from the FNV-1a definition.
        assert_eq!(fnv64(&[b"fragment"]), 0x9fb3_f69a_4ccc_b8e6);
        assert_ne!(fnv64(&[b"CONFIG_HZ=250"]), fnv64(&[b"CONFIG_HZ=300"]));
        assert_ne!(fnv64(&[b"a", b"b"]), fnv64(&[b"ab"]));
    }

    #[test]
    fn editing_a_source_tree_changes_its_fingerprint() {
        let dir = std::env::temp_dir().join(format!("pcmsig-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kernel/sched")).unwrap();
        std::fs::write(dir.join("Makefile"), "VERSION = 7\n").unwrap();
        std::fs::write(dir.join("kernel/sched/core.c"), "int x;\n").unwrap();
        let before = tree_fingerprint(&dir);
        assert_eq!(
            tree_fingerprint(&dir),
            before,
            "stable while nothing changes"
        );
        // An edit (a later mtime), as an editor would make it.
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join("kernel/sched/core.c"))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let edited = tree_fingerprint(&dir);
        assert_ne!(edited, before);
        std::fs::write(dir.join("kernel/new.c"), "").unwrap();
        assert_ne!(tree_fingerprint(&dir), edited, "a new file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_plans_do_not_count() {
        let console = "KTAP version 1\n1..x\nok 1 a\n";
        let r = crate::report::ktap::parse(console);
        assert_eq!(r.plan, None);
    }
}
