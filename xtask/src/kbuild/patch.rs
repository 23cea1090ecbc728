//! Unified diffs applied to a copy of a source directory: the seeded bugs' patches (pcmsig's
//! `xtask/bugs/`, a `--target`'s `[[bug]]` entries). Hunks may sit at other lines than the
//! patch says, but their context must match exactly (`diffy`).

use anyhow::{Context, Result};
use std::path::Path;

/// Applies a unified diff of files under `prefix` (`--- a/PREFIXFILE`; `prefix` empty or
/// ending in `/`) to the copy of that directory in `dir`. Hunks may sit at other lines than
/// the patch says, but their context must match exactly.
pub fn apply(text: &str, prefix: &str, dir: &Path) -> Result<()> {
    for (file, section) in sections(text, prefix)
        .with_context(|| format!("not a patch of files directly under {prefix:?}"))?
    {
        let target = dir.join(file);
        let original = std::fs::read_to_string(&target)
            .with_context(|| format!("reading {}", target.display()))?;
        let patch = diffy::Patch::from_str(section)
            .with_context(|| format!("parsing its patch of {prefix}{file}"))?;
        let patched = diffy::apply(&original, &patch).map_err(|e| {
            anyhow::anyhow!(
                "the patch no longer applies to {prefix}{file} ({e}): make the bug again on \
                 today's code and rewrite the patch"
            )
        })?;
        std::fs::write(&target, patched)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// A multi-file unified diff split by file: `(file name under prefix, its section)`.
fn sections<'a>(text: &'a str, prefix: &str) -> Option<Vec<(&'a str, &'a str)>> {
    let head = format!("--- a/{prefix}");
    let starts: Vec<usize> = text
        .match_indices(head.as_str())
        .filter(|(i, _)| *i == 0 || text.as_bytes()[i - 1] == b'\n')
        .map(|(i, _)| i)
        .collect();
    if starts.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        let section = &text[start..end];
        let file = section[head.len()..].lines().next()?.trim();
        if file.contains('/') || file.is_empty() {
            return None;
        }
        out.push((file, section));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_of_a_file_outside_module_or_of_no_file_is_refused() {
        assert!(sections("--- a/module/sub/x.rs\n+++ b/module/sub/x.rs\n", "module/").is_none());
        assert!(sections("--- a/module/\n+++ b/module/\n", "module/").is_none());
        let ok = sections("--- a/module/x.rs\n+++ b/module/x.rs\n", "module/").unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].0, "x.rs");
    }

    #[test]
    fn a_patch_changes_its_files_in_a_copy_and_refuses_one_that_no_longer_applies() {
        let dir = std::env::temp_dir().join(format!("pcmsig-patch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.c"), "one\ntwo\nthree\n").unwrap();
        let diff = "--- a/a.c\n+++ b/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n";
        apply(diff, "", &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.c")).unwrap(),
            "one\nTWO\nthree\n"
        );
        let e = format!("{:#}", apply(diff, "", &dir).unwrap_err());
        assert!(e.contains("no longer applies to a.c"), "{e}");
        assert!(apply("not a diff", "", &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
