//! Tidy checks, run by `cargo test`: every Rust source file opens with a `//!` comment saying
//! what it is for, and no source or text file has trailing whitespace. The tree is walked
//! directly (no `git`), so the checks also run in an exported tarball.

#[cfg(test)]
mod tests {
    use crate::paths::project_root;
    use std::path::{Path, PathBuf};

    /// Hidden entries that are part of the project.
    const HIDDEN_KEPT: &[&str] = &[".ci", ".github", ".cargo", ".gitignore"];
    /// Build output that lives beside the sources (`module/`'s Kbuild artefacts).
    const GENERATED: &[&str] = &["modules.order", "Module.symvers"];
    const GENERATED_SUFFIXES: &[&str] = &[".o", ".ko", ".mod", ".mod.c", ".rmeta"];

    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            let hidden = name.starts_with('.') && !HIDDEN_KEPT.contains(&name.as_str());
            let generated = GENERATED.contains(&name.as_str())
                || GENERATED_SUFFIXES.iter().any(|s| name.ends_with(s));
            if hidden || generated || (dir == project_root() && name == "target") {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }

    /// Every project file, relative to the root.
    fn files() -> Vec<String> {
        let mut out = Vec::new();
        walk(&project_root(), &mut out);
        let mut names: Vec<String> = out
            .iter()
            .filter_map(|p| p.strip_prefix(project_root()).ok())
            .map(|p| p.display().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_walk_sees_the_project_and_skips_build_output() {
        let f = files();
        for must in [
            "xtask/src/tidy.rs",
            "module/stream.rs",
            "README.md",
            ".ci/run",
            "vm/init",
        ] {
            assert!(f.iter().any(|x| x == must), "{must} not found: {f:?}");
        }
        assert!(f.iter().filter(|x| x.ends_with(".rs")).count() > 30);
        assert!(!f
            .iter()
            .any(|x| x.starts_with("target/") || x.ends_with(".ko")));
    }

    #[test]
    fn every_rust_file_opens_with_a_doc_comment() {
        let mut missing = Vec::new();
        for f in files().into_iter().filter(|f| f.ends_with(".rs")) {
            let Ok(text) = std::fs::read_to_string(project_root().join(&f)) else {
                continue;
            };
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with("// SPDX"));
            if !first.is_some_and(|l| l.starts_with("//!")) {
                missing.push(f);
            }
        }
        assert!(
            missing.is_empty(),
            "files without a `//!` header: {missing:?}"
        );
    }

    #[test]
    fn no_trailing_whitespace() {
        let mut bad = Vec::new();
        for f in files() {
            // Binary files are not read as text.
            let Ok(text) = std::fs::read_to_string(project_root().join(&f)) else {
                continue;
            };
            for (i, l) in text.lines().enumerate() {
                // In a unified diff (the seeded bugs' patches), a blank context line is a single
                // space: syntax, not whitespace. Anything after it is still checked.
                if f.ends_with(".patch") && l == " " {
                    continue;
                }
                if l.ends_with(' ') || l.ends_with('\t') {
                    bad.push(format!("{f}:{}", i + 1));
                }
            }
        }
        assert!(bad.is_empty(), "trailing whitespace: {bad:?}");
    }
}
