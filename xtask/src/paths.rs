//! Where things are: the repository, and the harness's output under `target/pcmsig`.

use std::path::{Path, PathBuf};

/// The repository root, derived from this crate's manifest, never from the current directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The guest suite's sources, concatenated: host tests check the test names they cite.
#[cfg(test)]
pub fn guest_test_sources() -> String {
    std::fs::read_dir(project_root().join("userspace/src/bin/pcmsig-tests"))
        .expect("the guest suite's directory")
        .map(|e| std::fs::read_to_string(e.expect("a directory entry").path()).expect("a source"))
        .collect()
}

/// A file's modification time since the epoch (zero if the file system has none).
pub fn mtime(meta: &std::fs::Metadata) -> std::time::Duration {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
}

/// A command's output directory, `target/pcmsig/NAME`.
pub fn out_dir(name: &str) -> PathBuf {
    project_root().join("target/pcmsig").join(name)
}
