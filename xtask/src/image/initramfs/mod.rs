//! What the guest's initramfs holds: init, busybox and its applet links, the module, the guest
//! programs, and the host files a command adds (`--add`, `exec`'s script); written by the
//! reproducible newc writer in `newc.rs`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::image::programs::{list_of, GUEST_BINS};
use crate::paths::project_root;
use crate::tools::Tools;

mod newc;
use newc::Initramfs;

/// Extra files for the initramfs: `(host path, guest path)`.
pub type ExtraFile = (PathBuf, String);

/// The suite's filter as a file of the initramfs (`FILTER_FILE`, which `vm/init` reads): a list
/// of tests is too long for the kernel command line. Written in `dir`.
pub fn filter_file(dir: &std::path::Path, filter: &str) -> anyhow::Result<ExtraFile> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = dir.join("filter");
    std::fs::write(&f, format!("{filter}\n"))
        .with_context(|| format!("writing {}", f.display()))?;
    Ok((f, pcmsig_contract::FILTER_FILE.to_string()))
}

/// Writes pcmsig's initramfs (its module, the guest programs and `extra`) in `out_dir`;
/// returns its path.
pub fn build_initramfs(
    tools: &Tools,
    ko: &Path,
    guest_dir: &Path,
    extra: &[ExtraFile],
    out_dir: &Path,
) -> Result<PathBuf> {
    let mut files = vec![(ko.to_path_buf(), "/lib/modules/pcmsig.ko".to_string())];
    files.extend(
        GUEST_BINS
            .iter()
            .map(|b| (guest_dir.join(b), format!("/bin/{b}"))),
    );
    files.extend(extra.iter().cloned());
    build_image(tools, &files, out_dir)
}

/// Writes an initramfs of the harness's init, busybox and `files` (any module's) in `out_dir`;
/// returns its path. A file is executable in the guest if it is on the host.
pub fn build_image(tools: &Tools, files: &[ExtraFile], out_dir: &Path) -> Result<PathBuf> {
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
    // costs about 0.2 s of boot under TCG; not where a file of ours goes.
    for applet in busybox_applets(&tools.busybox)? {
        let path = format!("/bin/{applet}");
        if applet != "busybox" && !files.iter().any(|(_, g)| *g == path) {
            img.symlink(&path, "busybox");
        }
    }
    for (host, guest) in files {
        let mode = if is_executable(host) { 0o755 } else { 0o644 };
        img.file(guest, mode, read(host)?);
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let path = out_dir.join("initramfs.cpio");
    std::fs::write(&path, img.to_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
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
}
