//! `cargo xtask selftest --fresh-root [--suite SUITE]`: the install path checked from nothing,
//! in a minimal Debian root (`ci/fresh-root.sh` does the work: mmdebstrap, chroot, the install
//! step twice, `cargo xtask deps --check`).

use anyhow::Result;
use std::time::Instant;

/// Runs the fresh-root check for a Debian suite.
pub fn run(suite: &str) -> Result<()> {
    let t = Instant::now();
    let script = crate::project_root().join("ci/fresh-root.sh");
    let sh = xshell::Shell::new()?;
    xshell::cmd!(sh, "bash {script} {suite}")
        .run()
        .map_err(|e| anyhow::anyhow!("the fresh-root check on Debian {suite} failed: {e}"))?;
    println!(
        "xtask: fresh-root check on Debian {suite} passed in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_reads_the_version_lines_we_see() {
        use crate::tools::major_minor_for_test as mm;
        assert_eq!(
            mm(
                "rustc 1.96.0 (ac68faa20 2026-05-25) (built from a source tarball)",
                "rustc "
            ),
            Some((1, 96))
        );
        assert_eq!(
            mm("Debian clang version 19.1.7 (3~deb12u1)", "clang version "),
            Some((19, 1))
        );
        assert_eq!(mm("bindgen 0.73.2", "rustc "), None);
        let _ = run; // the check itself needs root and the network: `selftest --fresh-root`
    }
}
