//! Finding the tools the harness needs, installing them when missing, and their versions.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::project_root;

/// The bindgen version `ci/install-deps.sh` installs (kernel 7.3 needs >= 0.71.1).
const BINDGEN_VERSION: &str = "0.73.2";

/// Every external tool, resolved to a path, with versions for the cache key and the log.
#[derive(Clone, Debug)]
pub struct Tools {
    pub rustc: PathBuf,
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

/// `$XDG_CACHE_HOME/pcmsig` or `~/.cache/pcmsig`: shared by every clone on the machine.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("pcmsig")
}

fn first_line(cmd: &Path, arg: &str) -> Option<String> {
    let out = Command::new(cmd).arg(arg).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
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

fn check() -> std::result::Result<Tools, Vec<Missing>> {
    let mut missing = Vec::new();
    let mut need = |what: &str, package: &'static str| {
        missing.push(Missing {
            what: what.to_string(),
            package,
        });
    };
    // Debian's rustc (with rust-src) and never rustup's, which lacks rust-src.
    let rustc = PathBuf::from("/usr/bin/rustc");
    let rustdoc = PathBuf::from("/usr/bin/rustdoc");
    if !rustc.is_file() {
        need("/usr/bin/rustc (Rust for the kernel)", "rustc-web");
    }
    if !Path::new("/usr/lib/rustlib/src/rust/library/core").is_dir() {
        need(
            "the Rust standard library source for /usr/bin/rustc",
            "rust-web-src",
        );
    }
    let clippy = PathBuf::from("/usr/bin/clippy-driver");
    let clippy_driver = clippy.is_file().then_some(clippy);
    for (bin, pkg) in [
        ("clang-19", "clang-19"),
        ("ld.lld-19", "lld-19"),
        ("llvm-ar-19", "llvm-19"),
    ] {
        if which(bin).is_none() {
            need(bin, pkg);
        }
    }
    if !Path::new("/usr/lib/llvm-19/lib/libclang.so").exists()
        && !Path::new("/usr/lib/llvm-19/lib/libclang.so.1").exists()
    {
        need("libclang 19 (for bindgen)", "libclang-19-dev");
    }
    for (bin, pkg) in [
        ("make", "make"),
        ("bc", "bc"),
        ("flex", "flex"),
        ("bison", "bison"),
        ("xz", "xz-utils"),
    ] {
        if which(bin).is_none() {
            need(bin, pkg);
        }
    }
    if !Path::new("/usr/include/libelf.h").exists() {
        need("libelf headers", "libelf-dev");
    }
    if !Path::new("/usr/include/openssl/ssl.h").exists() {
        need("OpenSSL headers", "libssl-dev");
    }
    let qemu = which("qemu-system-x86_64");
    if qemu.is_none() {
        need("qemu-system-x86_64", "qemu-system-x86");
    }
    let busybox = PathBuf::from("/bin/busybox");
    if !busybox.is_file() {
        need("/bin/busybox (static)", "busybox-static");
    }
    let bindgen = std::env::var_os("BINDGEN").map(PathBuf::from).or_else(|| {
        let p = cache_dir().join("tools/bin/bindgen");
        p.is_file().then_some(p)
    });
    if bindgen.is_none() {
        need(
            &format!("bindgen {BINDGEN_VERSION}"),
            "bindgen-cli (cargo install, by ci/install-deps.sh)",
        );
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    let (Some(bindgen), Some(qemu)) = (bindgen, qemu) else {
        unreachable!("checked above")
    };
    let tools = Tools {
        rustc_version: first_line(&rustc, "--version").unwrap_or_default(),
        clang_version: which("clang-19")
            .and_then(|c| first_line(&c, "--version"))
            .unwrap_or_default(),
        bindgen_version: first_line(&bindgen, "--version").unwrap_or_default(),
        qemu_version: first_line(&qemu, "--version").unwrap_or_default(),
        rustc,
        rustdoc,
        clippy_driver,
        bindgen,
        llvm_suffix: "-19",
        qemu,
        busybox,
    };
    Ok(tools)
}

fn is_debian_root() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    root && Path::new("/etc/debian_version").exists()
}

impl crate::flags::Deps {
    pub(crate) fn run(self, _sh: &xshell::Shell) -> Result<()> {
        install()
    }
}

/// Runs `ci/install-deps.sh`.
pub fn install() -> Result<()> {
    run_script("ci/install-deps.sh")
}

/// Runs one of the project's bash scripts (a path from the project root).
pub fn run_script(path: &str) -> Result<()> {
    let script = project_root().join(path);
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
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
                let names: Vec<String> = still
                    .iter()
                    .map(|m| format!("{} ({})", m.what, m.package))
                    .collect();
                anyhow::anyhow!(
                    "still missing after ci/install-deps.sh: {}",
                    names.join(", ")
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
            .env("LIBCLANG_PATH", "/usr/lib/llvm-19/lib");
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
