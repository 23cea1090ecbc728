//! `cargo xtask deps`: installs what the harness needs (`ci/install-deps.sh`), or with `--check`
//! says whether every tool is present at the version it wants.

use anyhow::{bail, Result};

use crate::tools::{
    cargo_mutants_path, check_cargo_mutants, find, BINDGEN_VERSION, CARGO_MUTANTS_VERSION,
};

impl crate::flags::Deps {
    pub(crate) fn run(self) -> Result<()> {
        if self.check {
            return check_versions();
        }
        crate::tools::install()
    }
}

/// The oldest rustc kernel 7.3 accepts.
const RUSTC_MIN: (u32, u32) = (1, 85);

/// `x.y` of the first `x.y.z` word after `prefix` in a `--version` line.
fn major_minor(line: &str, prefix: &str) -> Option<(u32, u32)> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split(['.', '-', '~', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `cargo xtask deps --check`: every tool present and at the version the harness wants.
fn check_versions() -> Result<()> {
    let tools = find()?;
    let mut wrong = Vec::new();
    let rustc = major_minor(&tools.rustc_version, "rustc ");
    if rustc.is_none_or(|v| v < RUSTC_MIN) {
        wrong.push(format!(
            "{} is not rustc >= {}.{} (package rustc-web)",
            tools.rustc_version, RUSTC_MIN.0, RUSTC_MIN.1
        ));
    }
    if major_minor(&tools.clang_version, "clang version ").map(|v| v.0) != Some(19) {
        wrong.push(format!(
            "{} is not clang 19 (package clang-19)",
            tools.clang_version
        ));
    }
    if !tools.bindgen_version.contains(BINDGEN_VERSION) {
        wrong.push(format!(
            "{} is not bindgen {BINDGEN_VERSION} (bash ci/install-deps.sh)",
            tools.bindgen_version
        ));
    }
    let source = crate::kernel::default_source();
    match &source {
        Ok(p) => println!("xtask: kernel source: {}", p.display()),
        Err(e) => wrong.push(format!("{e:#}")),
    }
    // Every series the module carries, each from Debian's linux-source-SERIES (`--kernel`).
    for series in crate::image::PCMSIG_KERNELS {
        match crate::kernel::source_of(None, Some(series)) {
            Ok(Some(p)) => println!("xtask: kernel {series} source: {}", p.display()),
            Ok(None) => {}
            Err(e) => wrong.push(format!("{e:#}")),
        }
    }
    tools.print();
    println!("xtask: busybox: {}", tools.busybox.display());
    // cargo-mutants is installed in CI mode or on request (PCMSIG_MUTANTS=1): checked there.
    let want_mutants = ["PCMSIG_CI", "PCMSIG_MUTANTS"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|x| x == "1"));
    if want_mutants {
        match check_cargo_mutants(&cargo_mutants_path()) {
            Ok(()) => println!("xtask: cargo-mutants {}", CARGO_MUTANTS_VERSION),
            Err(e) => wrong.push(format!("{e:#}")),
        }
    }
    if !wrong.is_empty() {
        bail!("wrong versions: {}", wrong.join("; "));
    }
    println!("xtask: every tool the harness needs is present at its version");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_reads_the_version_lines_we_see() {
        assert_eq!(
            major_minor(
                "rustc 1.96.0 (ac68faa20 2026-05-25) (built from a source tarball)",
                "rustc "
            ),
            Some((1, 96))
        );
        assert_eq!(
            major_minor("Debian clang version 19.1.7 (3~deb12u1)", "clang version "),
            Some((19, 1))
        );
        assert_eq!(major_minor("bindgen 0.73.2", "rustc "), None);
    }
}
