//! The static guest programs (`pcmsig`, the CLI of `cli/`; `pcmsig-tests` and `pcmsig-bench`
//! of `guest/`), built by cargo on the host, and what the host asks of them (`--list`).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use crate::paths::project_root;

/// The guest's target triple: static binaries, built with `+crt-static` on the gnu target.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile of the guest programs (Cargo.toml: release, incremental).
const GUEST_PROFILE: &str = "guest";

/// Guest programs put on the initramfs's PATH.
pub const GUEST_BINS: &[&str] = &["pcmsig", "pcmsig-tests", "pcmsig-bench"];

/// Builds the static guest programs; returns the directory holding them.
pub fn build_guest() -> Result<PathBuf> {
    build_guest_in(&project_root())
}

/// [`build_guest`] of the workspace at `root` (a changed copy: `cargo xtask mutants --lib`).
pub fn build_guest_in(root: &Path) -> Result<PathBuf> {
    let sh = Shell::new()?;
    let _dir = sh.push_dir(root);
    let args = GUEST_BINS.iter().flat_map(|b| ["--bin", b]);
    cmd!(
        sh,
        "cargo build --quiet --profile {GUEST_PROFILE} --target {GUEST_TARGET} -p pcmsig-cli -p pcmsig-guest {args...}"
    )
    .env("RUSTFLAGS", "-C target-feature=+crt-static")
    .quiet()
    .run()
    .context("building the static guest programs")?;
    Ok(root.join("target").join(GUEST_TARGET).join(GUEST_PROFILE))
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
