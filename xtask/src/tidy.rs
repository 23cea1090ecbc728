//! Tidy checks, run by `cargo test`: every Rust source file opens with a `//!` comment saying
//! what it is for, and no tracked text file has trailing whitespace.

#[cfg(test)]
mod tests {
    use crate::project_root;
    use std::process::Command;

    fn tracked(pattern: &str) -> Vec<String> {
        let out = Command::new("git")
            .args([
                "ls-files",
                "--cached",
                "--others",
                "--exclude-standard",
                pattern,
            ])
            .current_dir(project_root())
            .output()
            .expect("git ls-files");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_rust_file_opens_with_a_doc_comment() {
        let mut missing = Vec::new();
        for f in tracked("*.rs") {
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
        for f in tracked("*") {
            let Ok(text) = std::fs::read_to_string(project_root().join(&f)) else {
                continue;
            };
            for (i, l) in text.lines().enumerate() {
                if l.ends_with(' ') || l.ends_with('\t') {
                    bad.push(format!("{f}:{}", i + 1));
                }
            }
        }
        assert!(bad.is_empty(), "trailing whitespace: {bad:?}");
    }
}
