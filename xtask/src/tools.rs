//! Finding the tools the harness needs, installing them when missing, and their versions.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use xshell::{cmd, Shell};

use crate::paths::project_root;

/// The bindgen version `ci/install-deps.sh` installs (kernel 7.3 needs >= 0.71.1).
pub const BINDGEN_VERSION: &str = "0.73.2";

/// Every external tool, resolved to a path, with versions for the cache key and the log.
#[derive(Clone, Debug)]
pub struct Tools {
    pub rustc: PathBuf,
    /// The kernel's C compiler (`clang-19`), for the module builds' probe cache.
    pub clang: PathBuf,
    pub rustdoc: PathBuf,
    pub clippy_driver: Option<PathBuf>,
    pub bindgen: PathBuf,
    pub llvm_suffix: &'static str,
    pub qemu: PathBuf,
    pub busybox: PathBuf,
    pub rustc_version: String,
    pub clang_version: String,
    pub bindgen_version: String,
    pub qemu_version: String,
}

impl Tools {
    /// Tools pointing at `dir/qemu` and nothing real: for the harness's fault tests.
    #[cfg(test)]
    pub fn fake(dir: &Path) -> Tools {
        Tools {
            rustc: dir.join("rustc"),
            clang: dir.join("clang-19"),
            rustdoc: dir.join("rustdoc"),
            clippy_driver: None,
            bindgen: dir.join("bindgen"),
            llvm_suffix: "-19",
            qemu: dir.join("qemu"),
            busybox: dir.join("busybox"),
            rustc_version: String::new(),
            clang_version: String::new(),
            bindgen_version: String::new(),
            qemu_version: String::new(),
        }
    }
}

/// Where Debian's `libclang-19-dev` puts libclang (bindgen's `LIBCLANG_PATH`); the needs table
/// below names its files one by one.
pub const LIBCLANG_DIR: &str = "/usr/lib/llvm-19/lib";

/// Where `cargo xtask deps` installs bindgen (`ci/install-deps.sh`: `cargo install --root`).
pub fn bindgen_path() -> PathBuf {
    cache_dir().join("tools/bin/bindgen")
}

/// `$XDG_CACHE_HOME/pcmsig` or `~/.cache/pcmsig`: shared by every clone on the machine.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("pcmsig")
}

fn first_line(cmd: &Path, arg: &str) -> Option<String> {
    let sh = Shell::new().ok()?;
    let out = sh.cmd(cmd).arg(arg).quiet().ignore_status().output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// `cmd --version`'s first line, remembered in the tool cache for as long as the binary's
/// size and mtime stay the same: four version probes cost ~0.2 s on every start otherwise.
fn version_of(cmd: &Path) -> String {
    let Ok(meta) = std::fs::metadata(cmd) else {
        return String::new();
    };
    let mtime = crate::paths::mtime(&meta).as_nanos();
    let key = format!("{}\t{}\t{mtime}\t", cmd.display(), meta.len());
    let file = cache_dir().join("tools/versions.txt");
    let known = std::fs::read_to_string(&file).unwrap_or_default();
    if let Some(v) = known.lines().find_map(|l| l.strip_prefix(&key)) {
        return v.to_string();
    }
    let version = first_line(cmd, "--version").unwrap_or_default();
    // Best effort: a cache that cannot be written only costs the probe next time.
    let kept: String = known
        .lines()
        .filter(|l| !l.starts_with(&format!("{}\t", cmd.display())))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = std::fs::create_dir_all(cache_dir().join("tools"));
    let _ = std::fs::write(&file, format!("{kept}{key}{version}\n"));
    version
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

struct Missing {
    what: String,
    package: &'static str,
}

/// `what (package)`, comma-separated.
fn describe(missing: &[Missing]) -> String {
    let names: Vec<String> = missing
        .iter()
        .map(|m| format!("{} ({})", m.what, m.package))
        .collect();
    names.join(", ")
}

/// How a requirement is found.
enum Need {
    /// A program on the PATH.
    Program(&'static str),
    /// Any of these files or directories.
    AnyOf(&'static [&'static str]),
}

/// What the harness needs from Debian, and the package that provides it.
const NEEDS: &[(Need, &str, &str)] = &[
    // Debian's rustc (with rust-src) and never rustup's, which lacks rust-src.
    (
        Need::AnyOf(&["/usr/bin/rustc"]),
        "/usr/bin/rustc (Rust for the kernel)",
        "rustc-web",
    ),
    (
        Need::AnyOf(&["/usr/lib/rustlib/src/rust/library/core"]),
        "the Rust standard library source for /usr/bin/rustc",
        "rust-web-src",
    ),
    (Need::Program("clang-19"), "clang-19", "clang-19"),
    (Need::Program("ld.lld-19"), "ld.lld-19", "lld-19"),
    (Need::Program("llvm-ar-19"), "llvm-ar-19", "llvm-19"),
    (
        Need::AnyOf(&[
            "/usr/lib/llvm-19/lib/libclang.so",
            "/usr/lib/llvm-19/lib/libclang.so.1",
        ]),
        "libclang 19 (for bindgen)",
        "libclang-19-dev",
    ),
    (Need::Program("make"), "make", "make"),
    (Need::Program("bc"), "bc", "bc"),
    (Need::Program("flex"), "flex", "flex"),
    (Need::Program("bison"), "bison", "bison"),
    (Need::Program("xz"), "xz", "xz-utils"),
    (
        Need::AnyOf(&["/usr/include/libelf.h"]),
        "libelf headers",
        "libelf-dev",
    ),
    (
        Need::AnyOf(&["/usr/include/openssl/ssl.h"]),
        "OpenSSL headers",
        "libssl-dev",
    ),
    (
        Need::Program("qemu-system-x86_64"),
        "qemu-system-x86_64",
        "qemu-system-x86",
    ),
    (
        Need::AnyOf(&["/bin/busybox"]),
        "/bin/busybox (static)",
        "busybox-static",
    ),
];

fn check() -> std::result::Result<Tools, Vec<Missing>> {
    let mut missing: Vec<Missing> = NEEDS
        .iter()
        .filter(|(need, _, _)| match need {
            Need::Program(p) => which(p).is_none(),
            Need::AnyOf(paths) => !paths.iter().any(|p| Path::new(p).exists()),
        })
        .map(|(_, what, package)| Missing {
            what: what.to_string(),
            package,
        })
        .collect();
    let bindgen = std::env::var_os("BINDGEN").map(PathBuf::from).or_else(|| {
        let p = bindgen_path();
        p.is_file().then_some(p)
    });
    if bindgen.is_none() {
        missing.push(Missing {
            what: format!("bindgen {BINDGEN_VERSION}"),
            package: "bindgen-cli (cargo install, by ci/install-deps.sh)",
        });
    }
    let qemu = which("qemu-system-x86_64");
    let (Some(bindgen), Some(qemu), true) = (bindgen, qemu, missing.is_empty()) else {
        return Err(missing);
    };
    let rustc = PathBuf::from("/usr/bin/rustc");
    let clippy = PathBuf::from("/usr/bin/clippy-driver");
    let clang = which("clang-19").unwrap_or_else(|| PathBuf::from("clang-19"));
    Ok(Tools {
        rustc_version: version_of(&rustc),
        clang_version: version_of(&clang),
        bindgen_version: version_of(&bindgen),
        qemu_version: version_of(&qemu),
        rustc,
        rustdoc: PathBuf::from("/usr/bin/rustdoc"),
        clang,
        clippy_driver: clippy.is_file().then_some(clippy),
        bindgen,
        llvm_suffix: "-19",
        qemu,
        busybox: PathBuf::from("/bin/busybox"),
    })
}

fn is_debian_root() -> bool {
    let root = Shell::new()
        .and_then(|sh| cmd!(sh, "id -u").quiet().read())
        .is_ok_and(|uid| uid.trim() == "0");
    root && Path::new("/etc/debian_version").exists()
}

/// Every tool, or an error naming the missing ones and their packages.
pub fn find() -> Result<Tools> {
    check().map_err(|missing| anyhow::anyhow!("missing: {}", describe(&missing)))
}

/// Runs `ci/install-deps.sh`.
pub fn install() -> Result<()> {
    run_script("ci/install-deps.sh", &[])
}

/// Runs one of the project's bash scripts (a path from the project root) with `args`.
pub fn run_script(path: &str, args: &[&str]) -> Result<()> {
    let script = project_root().join(path);
    let sh = Shell::new()?;
    cmd!(sh, "bash {script} {args...}")
        .run()
        .with_context(|| format!("{} failed", script.display()))
}

/// Finds every tool; when some are missing, installs them (as root on Debian) or says how.
pub fn ensure() -> Result<Tools> {
    match check() {
        Ok(t) => Ok(t),
        Err(missing) => {
            eprintln!("xtask: missing tools:");
            for m in &missing {
                eprintln!("  - {} (package: {})", m.what, m.package);
            }
            if !is_debian_root() {
                bail!(
                    "install them with:  sudo bash {}\n(or install the packages named above)",
                    project_root().join("ci/install-deps.sh").display()
                );
            }
            eprintln!("xtask: running ci/install-deps.sh to install them");
            install()?;
            check().map_err(|still| {
                anyhow::anyhow!(
                    "still missing after ci/install-deps.sh: {}",
                    describe(&still)
                )
            })
        }
    }
}

impl Tools {
    /// `make -C dir` with the variables and environment every kernel and module build needs:
    /// LLVM, the kernel's own rustc/rustdoc (never rustup's), bindgen and its libclang.
    pub fn kbuild(&self, dir: &Path) -> Command {
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(dir)
            .arg(format!("LLVM={}", self.llvm_suffix))
            .arg(format!("RUSTC={}", self.rustc.display()))
            .arg(format!("RUSTDOC={}", self.rustdoc.display()))
            .arg(format!("BINDGEN={}", self.bindgen.display()))
            .env("LIBCLANG_PATH", LIBCLANG_DIR);
        make
    }

    pub fn print(&self) {
        println!(
            "xtask: rustc for the kernel: {} ({})",
            self.rustc_version,
            self.rustc.display()
        );
        println!("xtask: clang: {}", self.clang_version);
        println!("xtask: bindgen: {}", self.bindgen_version);
        println!("xtask: qemu: {}", self.qemu_version);
    }
}

/// The cargo-mutants release `ci/install-deps.sh` installs.
pub const CARGO_MUTANTS_VERSION: &str = "27.1.0";

/// Where cargo-mutants is installed (`cargo install --root`, beside bindgen).
pub fn cargo_mutants_path() -> PathBuf {
    bindgen_path().with_file_name("cargo-mutants")
}

/// Fails unless `tool` is cargo-mutants at the pinned version, naming how to install it.
pub fn check_cargo_mutants(tool: &Path) -> Result<()> {
    let version = std::process::Command::new(tool)
        .args(["mutants", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match version {
        Some(v) if v.contains(CARGO_MUTANTS_VERSION) => Ok(()),
        Some(v) => bail!(
            "{} is {v}, not cargo-mutants {CARGO_MUTANTS_VERSION}: run `PCMSIG_MUTANTS=1 cargo xtask deps`",
            tool.display()
        ),
        None => bail!(
            "cargo-mutants {CARGO_MUTANTS_VERSION} not found at {} (crate cargo-mutants): run \
             `PCMSIG_MUTANTS=1 cargo xtask deps`, which installs it with cargo",
            tool.display()
        ),
    }
}
