//! Checks of the built module before a boot is spent on it: the kernel's own style for its
//! sources, and a `vermagic` that matches the kernel the VM runs.

use anyhow::{bail, Context, Result};
use std::path::Path;
use xshell::{cmd, Shell};

use crate::kernel::Kernel;
use crate::paths::project_root;

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
