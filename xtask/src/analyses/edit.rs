//! `cargo xtask test --edit-first`: which guest tests run the lines of the module that changed
//! since the coverage map was made, so that they run first.
//!
//! The map is `lines.txt` of the last `cargo xtask coverage` (per line of the module, the tests
//! that ran it), and the module it measured is the copy that run built (`build/module/` beside
//! it). An edit is the difference between that copy and `module/` now, in the copy's line
//! numbers, the map's own; so the selection holds however many edits came since the map was
//! made: a stale map (the copy differs from `module/`) only makes the edit larger. Lines that
//! changed are looked up; an inserted line by its neighbours; a changed line that the map does
//! not know (a comment, a line with no code of its own) by the nearest lines the map knows
//! within [`NEAR`] lines.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// How far (in lines) from a changed line that no test ran the nearest run line may be.
pub const NEAR: u32 = 8;

/// Coverage's per-line map (`lines.txt`): per line of a file of `module/`, the tests that ran it.
pub type LineMap = BTreeMap<crate::analyses::coverage::Line, Vec<String>>;

/// The edit, and the tests that run it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Each changed place (`stream.rs:120-125`, in the map's line numbers), as said to the user.
    pub changed: Vec<String>,
    /// The tests that run any changed place (sorted).
    pub tests: Vec<String>,
    /// Changed places no test is known to run (a new file, lines far from any run line).
    pub unknown: Vec<String>,
}

impl Selection {
    /// Whether the module differs from the map's copy at all.
    pub fn is_edit(&self) -> bool {
        !self.changed.is_empty() || !self.unknown.is_empty()
    }
}

/// The old file's lines that an edit from `old` to `new` touches (1-based, inclusive ranges):
/// those deleted or replaced, and for an insertion the lines either side of it.
pub fn touched_lines(old: &str, new: &str) -> Vec<(u32, u32)> {
    let patch = diffy::create_patch(old, new);
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut mark = |a: u32, b: u32| match out.last_mut() {
        Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
        _ => out.push((a, b)),
    };
    for hunk in patch.hunks() {
        // The hunk's first line (it begins with context, unless the old file is empty).
        let mut line = u32::try_from(hunk.old_range().start())
            .unwrap_or(u32::MAX)
            .max(1);
        // Whether the lines inserted here replace deleted ones (then those are the place).
        let mut replacing = false;
        for l in hunk.lines() {
            match l {
                diffy::Line::Context(_) => {
                    line = line.saturating_add(1);
                    replacing = false;
                }
                diffy::Line::Delete(_) => {
                    mark(line, line);
                    line = line.saturating_add(1);
                    replacing = true;
                }
                diffy::Line::Insert(_) if replacing => {}
                diffy::Line::Insert(_) => mark(line.saturating_sub(1).max(1), line),
            }
        }
    }
    out
}

/// The tests of `map` that run `lines` of `file`; if none does, those of the nearest run lines
/// within [`NEAR`] above and below.
pub fn tests_of(map: &LineMap, file: &str, (a, b): (u32, u32)) -> BTreeSet<String> {
    let key = |l: u32| (file.to_string(), l);
    let mut tests: BTreeSet<String> = map
        .range(key(a)..=key(b))
        .flat_map(|(_, t)| t.iter().cloned())
        .collect();
    if tests.is_empty() {
        let above = map
            .range(key(a.saturating_sub(NEAR))..key(a))
            .next_back()
            .map(|(_, t)| t);
        let below = map
            .range(key(b.saturating_add(1))..=key(b.saturating_add(NEAR)))
            .next()
            .map(|(_, t)| t);
        tests.extend(above.into_iter().chain(below).flatten().cloned());
    }
    tests
}

/// The edit between `copy` (the map's module: `(name, text)` per file) and `now` (the module's
/// files now), and the tests of `map` that run it.
pub fn select(
    copy: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
    map: &LineMap,
) -> Selection {
    let mut sel = Selection::default();
    let mut tests = BTreeSet::new();
    let names: BTreeSet<&String> = copy.keys().chain(now.keys()).collect();
    for name in names {
        match (copy.get(name), now.get(name)) {
            // An unchanged file has no touched lines.
            (Some(old), Some(new)) => {
                for (a, b) in touched_lines(old, new) {
                    let place = if a == b {
                        format!("{name}:{a}")
                    } else {
                        format!("{name}:{a}-{b}")
                    };
                    let found = tests_of(map, name, (a, b));
                    if found.is_empty() {
                        sel.unknown.push(place);
                    } else {
                        sel.changed.push(place);
                        tests.extend(found);
                    }
                }
            }
            (None, Some(_)) => sel.unknown.push(format!("{name} (a new file)")),
            (Some(_), None) => sel.unknown.push(format!("{name} (removed)")),
            (None, None) => {}
        }
    }
    sel.tests = tests.into_iter().collect();
    sel
}

/// The `.rs` files of `dir` by name; `root_as` renames the coverage copy's crate root back.
pub fn read_sources(dir: &Path, root_as: Option<(&str, &str)>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(".rs") {
            continue;
        }
        let name = match root_as {
            Some((from, to)) if name == from => to.to_string(),
            _ => name.to_string(),
        };
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        out.insert(name, text);
    }
    Ok(out)
}

/// What `--edit-first` found: no map to choose by (and why), or the map's selection.
pub enum Found {
    NoMap(String),
    Map {
        selection: Selection,
        /// When the map was made, as said to the user.
        made: String,
    },
}

/// The edit of `module/` since the last `cargo xtask coverage`, and the tests that run it.
pub fn of_module() -> Result<Found> {
    let out = crate::paths::out_dir("coverage");
    let lines = out.join("lines.txt");
    let copy_dir = crate::analyses::coverage::build_dir(&out).join("module");
    let Ok(text) = std::fs::read_to_string(&lines) else {
        return Ok(Found::NoMap(
            "no coverage map yet (`cargo xtask coverage` makes one)".to_string(),
        ));
    };
    let map = crate::analyses::coverage::parse_per_line(&text)
        .with_context(|| format!("reading {}", lines.display()))?;
    if map.is_empty() || !copy_dir.is_dir() {
        return Ok(Found::NoMap(format!(
            "the coverage map in {} is empty or without its module copy",
            out.display()
        )));
    }
    let copy = read_sources(
        &copy_dir,
        Some((crate::kbuild::COVERAGE_CRATE_ROOT, "pcmsig.rs")),
    )?;
    let now = read_sources(&crate::paths::project_root().join("module"), None)?;
    let made = std::fs::metadata(&lines)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or("of unknown age".to_string(), |age| {
            format!("made {} min ago", age.as_secs() / 60)
        });
    Ok(Found::Map {
        selection: select(&copy, &now, &map),
        made,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: u32) -> String {
        (1..=n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn a_replaced_line_is_touched_itself_and_an_insertion_by_its_neighbours() {
        let old = lines(20);
        let replaced = old.replace("line 7\n", "line seven\n");
        assert_eq!(touched_lines(&old, &replaced), vec![(7, 7)]);
        let grown = old.replace("line 7\n", "line seven\nand more\n");
        assert_eq!(touched_lines(&old, &grown), vec![(7, 7)]);
        let inserted = old.replace("line 7\n", "line 7\nnew\n");
        assert_eq!(touched_lines(&old, &inserted), vec![(7, 8)]);
        let deleted = old.replace("line 3\nline 4\n", "");
        assert_eq!(touched_lines(&old, &deleted), vec![(3, 4)]);
        let first = format!("new\n{old}");
        assert_eq!(touched_lines(&old, &first), vec![(1, 1)]);
        let appended = format!("{old}new\n");
        assert_eq!(touched_lines(&old, &appended), vec![(20, 21)]);
        let two = old
            .replace("line 2\n", "two\n")
            .replace("line 15\n", "fifteen\n");
        assert_eq!(touched_lines(&old, &two), vec![(2, 2), (15, 15)]);
        assert!(touched_lines(&old, &old).is_empty());
    }

    fn map() -> LineMap {
        let mut m = LineMap::new();
        m.insert(("s.rs".into(), 10), vec!["a".into(), "b".into()]);
        m.insert(("s.rs".into(), 12), vec!["c".into()]);
        m.insert(("s.rs".into(), 40), vec!["d".into()]);
        m.insert(("t.rs".into(), 11), vec!["e".into()]);
        m
    }

    #[test]
    fn a_line_no_test_ran_takes_the_tests_of_the_nearest_run_lines() {
        let m = map();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(tests_of(&m, "s.rs", (10, 10)), set(&["a", "b"]));
        assert_eq!(tests_of(&m, "s.rs", (10, 12)), set(&["a", "b", "c"]));
        // 11 ran nowhere: 10 above and 12 below.
        assert_eq!(tests_of(&m, "s.rs", (11, 11)), set(&["a", "b", "c"]));
        // Only the nearest run line each side, within NEAR, in the same file.
        assert_eq!(tests_of(&m, "s.rs", (20, 20)), set(&["c"]));
        assert_eq!(tests_of(&m, "s.rs", (33, 33)), set(&["d"]));
        assert!(tests_of(&m, "s.rs", (25, 25)).is_empty());
        assert!(tests_of(&m, "u.rs", (10, 10)).is_empty());
    }

    #[test]
    fn the_selection_names_each_change_and_what_no_test_reaches() {
        let m = map();
        let old = lines(50);
        let copy: BTreeMap<String, String> = [
            ("s.rs".to_string(), old.clone()),
            ("t.rs".to_string(), old.clone()),
            ("gone.rs".to_string(), old.clone()),
        ]
        .into();
        let now: BTreeMap<String, String> = [
            (
                "s.rs".to_string(),
                old.replace("line 12\n", "twelve\n")
                    .replace("line 25\n", "x\n"),
            ),
            ("t.rs".to_string(), old.clone()),
            ("new.rs".to_string(), old.clone()),
        ]
        .into();
        let sel = select(&copy, &now, &m);
        assert_eq!(sel.changed, vec!["s.rs:12"]);
        assert_eq!(sel.tests, vec!["c"]);
        assert_eq!(
            sel.unknown,
            vec!["gone.rs (removed)", "new.rs (a new file)", "s.rs:25"]
        );
        assert!(sel.is_edit());
        // An edit either way: only lines some test runs, or only what no test is known to run.
        let mut known = copy.clone();
        known.insert("s.rs".into(), old.replace("line 12\n", "twelve\n"));
        let sel = select(&copy, &known, &m);
        assert!(sel.unknown.is_empty() && sel.is_edit());
        let mut unknown = copy.clone();
        unknown.insert("s.rs".into(), old.replace("line 25\n", "x\n"));
        let sel = select(&copy, &unknown, &m);
        assert!(sel.changed.is_empty() && sel.is_edit());
        let same = select(&copy, &copy, &m);
        assert!(!same.is_edit());
        assert!(same.tests.is_empty());
    }
}
