//! `cargo xtask mutants`' verdict code (the command, which lists, builds and boots the mutants,
//! is `commands/mutants.rs`): cargo-mutants' list and outcome files read into [`Mutant`]s, the
//! run's choice of them (files, names, shard), the guest tests that cover a module mutant, a
//! mutant's [`Status`] from its VMs' judgements, and `xtask/mutants/equivalent.txt` with the
//! check of a run's missed mutants against it; also which files are mutated where
//! ([`HOST_FILES`] less their [`COMMAND_MACHINERY`], [`LIB_FILES`]). No build, no VM: this file
//! is one of the host files, whose mutants `cargo test` must kill.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};

use crate::report::ktap;

/// The explanations of the survivors that are equivalent to the code.
pub const EQUIVALENT: &str = "xtask/mutants/equivalent.txt";

/// The host files whose mutants `cargo test` must kill: the shared contract and UAPI, and
/// xtask's verdict code.
pub const HOST_FILES: &[&str] = &[
    "contract/src/*.rs",
    "uapi/src/*.rs",
    "xtask/src/report/ktap.rs",
    "xtask/src/report/junit.rs",
    "xtask/src/report/kunit.rs",
    "xtask/src/analyses/bugs.rs",
    "xtask/src/analyses/coverage.rs",
    "xtask/src/analyses/mutants.rs",
    "xtask/src/commands/mutants.rs",
    "xtask/src/target.rs",
    "xtask/src/kbuild/patch.rs",
    "xtask/src/analyses/edit.rs",
];

/// The command machinery among `HOST_FILES`, per file: functions that build modules, boot VMs,
/// run cargo-mutants and write reports. The commands themselves check them by running in CI
/// (`selftest --bugs`; `mutants --module --shard`, `mutants --host`), not `cargo test`: a unit
/// test of them would be a VM run or a cargo-mutants run of its own. The rest of those files is
/// verdict code (how a run is judged), whose mutants `cargo test` must kill.
const COMMAND_MACHINERY: &[(&str, &[&str])] = &[
    (
        "xtask/src/analyses/bugs.rs",
        &["run", "run_one", "table", "build_seeded_module"],
    ),
    (
        "xtask/src/commands/mutants.rs",
        &[
            "run",
            "run_module",
            "retry_on_kernel",
            "run_lib_vm",
            "run_host",
            "cargo_mutants",
            "one_module_mutant",
            "whole_suite",
            "boot_suite",
            "snapshot_ko",
            "line_map",
            "write_diff",
            "list_module",
            "list_files",
            "sync_tracked_files",
            "run_listing",
            "write_reports",
            "printed",
        ],
    ),
    ("xtask/src/analyses/edit.rs", &["of_module", "read_sources"]),
    (
        "xtask/src/target.rs",
        &[
            "prepare",
            "build_module",
            "build_programs",
            "initramfs",
            "run_bugs",
            "tests",
        ],
    ),
];

/// Whether a host mutant is in command machinery ([`COMMAND_MACHINERY`]), not verdict code.
pub fn is_command_machinery(m: &Mutant) -> bool {
    COMMAND_MACHINERY
        .iter()
        .filter(|(file, _)| m.file == *file)
        .flat_map(|(_, fns)| fns.iter())
        .any(|f| {
            // cargo-mutants names the function last (`... in NAME`, methods as `Type::NAME`),
            // or first for a replaced body (`replace NAME -> T with ...`).
            let what = m.what.as_str();
            what.ends_with(&format!(" in {f}"))
                || what.ends_with(&format!("::{f}"))
                || what.starts_with(&format!("replace {f} "))
                || what.contains(&format!("::{f} -> "))
                || what.contains(&format!("::{f} with "))
        })
}

/// The library's files (and the CLI's): their host tests first, then the guest suite.
pub const LIB_FILES: &[&str] = &[
    "userspace/src/lib.rs",
    "userspace/src/device.rs",
    "userspace/src/event.rs",
    "userspace/src/receive.rs",
    "userspace/src/sys.rs",
    "userspace/src/cricket.rs",
    "cli/src/main.rs",
];

/// One mutant, as cargo-mutants lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutant {
    /// `module/stream.rs` (relative to the repository, or to a module copy's root).
    pub file: String,
    /// The lines its change spans (a replaced function body: the whole body).
    pub lines: (u32, u32),
    /// cargo-mutants' description without the place: `replace Ring::push -> bool with true`.
    pub what: String,
    /// The unified diff of its change.
    pub diff: String,
}

impl Mutant {
    /// Its name in reports and in `equivalent.txt`: `file: what`, stable when lines move.
    pub fn key(&self) -> String {
        format!("{}: {}", self.file, self.what)
    }

    /// `file:line: what`, for the console.
    pub fn place(&self) -> String {
        format!("{}:{}: {}", self.file, self.lines.0, self.what)
    }
}

/// The mutants of cargo-mutants' `--list --json --diff` output.
pub fn parse_list(json: &str) -> Result<Vec<Mutant>> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("cargo-mutants' list is not JSON")?;
    let items = v
        .as_array()
        .context("cargo-mutants' list is not a JSON array")?;
    let mut out = Vec::new();
    for (i, m) in items.iter().enumerate() {
        let s = |k: &str| m.get(k).and_then(|x| x.as_str());
        let line = |end: &str| {
            m.get("span")
                .and_then(|sp| sp.get(end))
                .and_then(|p| p.get("line"))
                .and_then(|l| l.as_u64())
                .and_then(|l| u32::try_from(l).ok())
        };
        let (Some(file), Some(name), Some(diff), Some(a), Some(b)) =
            (s("file"), s("name"), s("diff"), line("start"), line("end"))
        else {
            bail!("cargo-mutants' list, item {i}: no file, name, diff or span: {m}");
        };
        // `module/stream.rs:123:9: replace ...`: the place is ours to keep apart.
        let what = name
            .strip_prefix(file)
            .and_then(|r| r.strip_prefix(':'))
            .and_then(|r| r.split_once(": "))
            .map_or(name, |(_, w)| w);
        out.push(Mutant {
            file: file.to_string(),
            lines: (a, b.max(a)),
            what: what.to_string(),
            diff: diff.to_string(),
        });
    }
    Ok(out)
}

/// Those of `all` in shard `k` of `n` (`k/n`, 0-based): every n-th, from the k-th.
pub fn shard(all: Vec<Mutant>, spec: Option<&str>) -> Result<Vec<Mutant>> {
    let Some(spec) = spec else {
        return Ok(all);
    };
    let s: pcmsig_contract::Shard = spec
        .parse()
        .map_err(|e| anyhow::anyhow!("--shard {spec:?}: {e}"))?;
    let (k, n) = (s.index as usize, s.count as usize);
    Ok(all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == k)
        .map(|(_, m)| m)
        .collect())
}

/// The guest tests that run any line of `m`, from coverage's per-line map (keyed by the file's
/// name in `module/`); empty when none does (or the map does not know the file).
pub fn covering_tests(m: &Mutant, map: &BTreeMap<(String, u32), Vec<String>>) -> Vec<String> {
    let name = m.file.rsplit('/').next().unwrap_or(&m.file).to_string();
    let from = (name.clone(), m.lines.0);
    let to = (name, m.lines.1);
    let tests: BTreeSet<&String> = map.range(from..=to).flat_map(|(_, t)| t).collect();
    tests.into_iter().cloned().collect()
}

/// One entry of `equivalent.txt`: a mutant's key and why no test can tell it from the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivalent {
    pub key: String,
    pub reason: String,
    /// Its line in the file.
    pub at: usize,
}

/// `equivalent.txt`: `#` comments and blank lines aside, each entry is a mutant's key (`file:
/// what`, as the reports print it) followed by its reason on indented lines.
pub fn parse_equivalent(text: &str) -> Result<Vec<Equivalent>> {
    let mut out: Vec<Equivalent> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let Some(last) = out.last_mut() else {
                bail!("{EQUIVALENT}:{}: a reason before any mutant", i + 1);
            };
            if !last.reason.is_empty() {
                last.reason.push(' ');
            }
            last.reason += line.trim();
        } else {
            out.push(Equivalent {
                key: line.trim_end().to_string(),
                reason: String::new(),
                at: i + 1,
            });
        }
    }
    let mut seen = BTreeSet::new();
    for e in &out {
        if e.reason.is_empty() {
            bail!("{EQUIVALENT}:{}: {} has no reason", e.at, e.key);
        }
        if !seen.insert(&e.key) {
            bail!("{EQUIVALENT}:{}: {} is listed twice", e.at, e.key);
        }
    }
    Ok(out)
}

/// What happened to a mutant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// A test (or a detector) failed on it: by what.
    Caught(String),
    /// The guest hung and a limit ended it (caught): which.
    Timeout(String),
    /// No test failed, in the whole suite.
    Missed,
    /// It does not build: the first error.
    Unviable(String),
}

/// A mutant's status from the judgements of its VMs (none failing: missed).
pub fn status_of(judged: &[(&str, &ktap::Judgement)]) -> Status {
    let mut by = Vec::new();
    let mut hung = None;
    for (vm, j) in judged {
        for f in &j.failures {
            if matches!(f, ktap::Failure::TimedOut(_) | ktap::Failure::Silent(_)) {
                hung = Some(format!("{vm} VM: {f}"));
            }
        }
        if j.failures.is_empty() {
            continue;
        }
        if j.blamed.is_empty() {
            let first = j.failures.first().map(ToString::to_string);
            by.push(format!("{vm} VM: {}", first.unwrap_or_default()));
        }
        by.extend(j.blamed.iter().map(|(t, c)| format!("{vm}:{t} ({c})")));
    }
    match (hung, by.is_empty()) {
        (Some(h), _) => Status::Timeout(h),
        (None, true) => Status::Missed,
        (None, false) => Status::Caught(by.join(", ")),
    }
}

/// The verdict over a run's missed mutants: those `equivalent` does not explain, and the stale
/// entries (naming no mutant of `listed`, the full list, or only mutants a test killed in this
/// run). A key names every mutant of that file and description: where two share it (one
/// function, the same operator twice), an entry explains the missed one, and a test killing
/// the other does not contradict it.
pub fn check_equivalent<'a>(
    missed: &[&'a Mutant],
    killed: &[&Mutant],
    listed: &[Mutant],
    equivalent: &'a [Equivalent],
) -> (Vec<&'a Mutant>, Vec<(&'a Equivalent, &'static str)>) {
    let explained: BTreeSet<&str> = equivalent.iter().map(|e| e.key.as_str()).collect();
    let unexplained = missed
        .iter()
        .copied()
        .filter(|m| !explained.contains(m.key().as_str()))
        .collect();
    let listed_keys: BTreeSet<String> = listed.iter().map(Mutant::key).collect();
    let killed_places: BTreeSet<String> = killed.iter().map(|m| m.place()).collect();
    let killed: BTreeSet<String> = killed.iter().map(|m| m.key()).collect();
    let missed: BTreeSet<String> = missed.iter().map(|m| m.key()).collect();
    // Contradicted only when this run killed every mutant of the key: a part of the list
    // (`--shard`, `--in-diff`) may hold the killed twin and not the explained one.
    let all_killed = |key: &str| {
        listed
            .iter()
            .filter(|m| m.key() == key)
            .all(|m| killed_places.contains(&m.place()))
    };
    let stale = equivalent
        .iter()
        .filter_map(|e| {
            if !listed_keys.contains(&e.key) {
                Some((e, "names no mutant cargo-mutants lists today"))
            } else if killed.contains(&e.key) && !missed.contains(&e.key) && all_killed(&e.key) {
                Some((e, "a test kills this mutant: it is not equivalent"))
            } else {
                None
            }
        })
        .collect();
    (unexplained, stale)
}

/// The mutants of `chosen` that an outcome file of cargo-mutants names, one per line
/// (`FILE:LINE:COLUMN: WHAT`): matched by file, line and description, since one function may
/// hold several mutants of the same description (two `delete !` in `Target::check`).
pub fn listed_in(text: &str, chosen: &[Mutant]) -> Vec<Mutant> {
    text.lines()
        .filter_map(|l| {
            chosen.iter().find(|m| {
                l.strip_prefix(m.file.as_str())
                    .and_then(|r| r.strip_prefix(':'))
                    .and_then(|r| r.split_once(':'))
                    .is_some_and(|(line, _)| line == m.lines.0.to_string())
                    && l.ends_with(&format!(": {}", m.what))
            })
        })
        .cloned()
        .collect()
}

pub fn label(s: &Status) -> &'static str {
    match s {
        Status::Caught(_) => "caught",
        Status::Timeout(_) => "timeout",
        Status::Missed => "MISSED",
        Status::Unviable(_) => "unviable",
    }
}

/// Keeps the mutants in files that match one of `globs` (all if there is none).
pub fn filter_files(list: Vec<Mutant>, globs: &[String]) -> Vec<Mutant> {
    if globs.is_empty() {
        return list;
    }
    list.into_iter()
        .filter(|m| globs.iter().any(|g| pcmsig_contract::glob(g, &m.file)))
        .collect()
}

/// Keeps the mutants whose `file:line: what` contains one of `texts` (all if there is none).
pub fn filter_names(list: Vec<Mutant>, texts: &[String]) -> Vec<Mutant> {
    if texts.is_empty() {
        return list;
    }
    list.into_iter()
        .filter(|m| texts.iter().any(|t| m.place().contains(t.as_str())))
        .collect()
}

pub fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The mutants the tests of both halves of `cargo xtask mutants` share.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    const LIST: &str = r#"[
      {"file": "module/stream.rs", "name": "module/stream.rs:12:9: replace Ring::push -> bool with true",
       "span": {"start": {"line": 12, "column": 9}, "end": {"line": 14, "column": 10}},
       "diff": "--- module/stream.rs\n+++ replace Ring::push -> bool with true\n@@ -1,3 +1,3 @@\n a\n-b\n+true\n c\n"},
      {"file": "module/pcmsig.rs", "name": "module/pcmsig.rs:40:5: replace < with <= in read",
       "span": {"start": {"line": 40, "column": 5}, "end": {"line": 40, "column": 6}},
       "diff": "--- module/pcmsig.rs\n+++ x\n@@ -1 +1 @@\n-a < b\n+a <= b\n"}
    ]"#;

    pub(crate) fn mutants() -> Vec<Mutant> {
        parse_list(LIST).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::mutants;
    use super::*;

    #[test]
    fn the_list_gives_file_lines_description_and_diff() {
        let m = mutants();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].file, "module/stream.rs");
        assert_eq!(m[0].lines, (12, 14));
        assert_eq!(m[0].what, "replace Ring::push -> bool with true");
        assert_eq!(
            m[0].key(),
            "module/stream.rs: replace Ring::push -> bool with true"
        );
        assert_eq!(
            m[1].place(),
            "module/pcmsig.rs:40: replace < with <= in read"
        );
        assert!(m[0].diff.starts_with("--- module/stream.rs\n"));
        assert!(parse_list("[{\"file\": \"a.rs\"}]").is_err());
        assert!(parse_list("{}").is_err());
        assert_eq!(parse_list("[]").unwrap(), []);
    }

    #[test]
    fn an_outcome_names_its_mutant_by_file_line_and_description() {
        let m = |line: u32, what: &str| Mutant {
            file: "xtask/src/target.rs".into(),
            lines: (line, line),
            what: what.into(),
            diff: String::new(),
        };
        let chosen = [
            m(133, "delete ! in Target::check"),
            m(149, "delete ! in Target::check"),
            m(149, "replace || with && in Target::check"),
        ];
        let text = "xtask/src/target.rs:149:50: delete ! in Target::check\n\
                    xtask/src/target.rs:1490:5: delete ! in Target::check\n\
                    xtask/src/target.rsx:149:5: delete ! in Target::check\n\
                    xtask/src/target.rs:149:9: replace || with && in Target::check\n";
        assert_eq!(
            listed_in(text, &chosen),
            [chosen[1].clone(), chosen[2].clone()]
        );
        assert_eq!(listed_in("", &chosen), []);
    }

    #[test]
    fn the_catalogues_command_is_not_verdict_code() {
        let m = |what: &str| Mutant {
            file: "xtask/src/analyses/bugs.rs".into(),
            lines: (1, 1),
            what: what.into(),
            diff: String::new(),
        };
        assert!(is_command_machinery(&m("replace > with == in run")));
        assert!(is_command_machinery(&m(
            "delete field cpus from struct vm::Options expression in run_one"
        )));
        assert!(is_command_machinery(&m(
            "replace table -> String with String::new()"
        )));
        assert!(!is_command_machinery(&m(
            "replace hit -> Option<&(String, String)> with None"
        )));
        assert!(!is_command_machinery(&m(
            "replace run_dir -> PathBuf with Default::default()"
        )));
        assert!(is_command_machinery(&m(
            "replace build_seeded_module -> Result<PathBuf> with Ok(Default::default())"
        )));
        let other = Mutant {
            file: "xtask/src/report/ktap.rs".into(),
            ..m("replace > with == in run")
        };
        assert!(!is_command_machinery(&other));
        let in_file = |file: &str, what: &str| Mutant {
            file: file.into(),
            ..m(what)
        };
        // In target.rs: the methods that build and boot, not the target's checks.
        let target = |what: &str| in_file("xtask/src/target.rs", what);
        for machinery in [
            "replace Target::build_module -> Result<PathBuf> with Ok(Default::default())",
            "delete ! in Target::prepare",
            "delete field env from struct vm::Boot expression in run_bugs",
        ] {
            assert!(is_command_machinery(&target(machinery)), "{machinery}");
        }
        // In this file: the verdict's functions, none of them machinery.
        let here = |what: &str| in_file("xtask/src/analyses/mutants.rs", what);
        for verdict in [
            "replace status_of -> Status with Default::default()",
            "replace == with != in check_equivalent",
            "replace shard -> Result<Vec<Mutant>> with Ok(vec![])",
        ] {
            assert!(!is_command_machinery(&here(verdict)), "{verdict}");
        }
    }

    #[test]
    fn files_and_names_narrow_the_list() {
        let m = mutants();
        assert_eq!(filter_files(m.clone(), &[]).len(), 2);
        let only = filter_files(m.clone(), &["module/pcmsig*".to_string()]);
        assert_eq!(only, [m[1].clone()]);
        let named = filter_names(m.clone(), &["stream.rs:12: replace Ring".to_string()]);
        assert_eq!(named, [m[0].clone()]);
        assert!(filter_names(m, &["no such".to_string()]).is_empty());
    }

    #[test]
    fn shards_split_the_list_without_overlap() {
        let all: Vec<Mutant> = (0..7)
            .map(|i| Mutant {
                file: "module/x.rs".into(),
                lines: (i, i),
                what: format!("m{i}"),
                diff: String::new(),
            })
            .collect();
        let mut seen = Vec::new();
        for k in 0..3 {
            let part = shard(all.clone(), Some(&format!("{k}/3"))).unwrap();
            seen.extend(part.into_iter().map(|m| m.lines.0));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        assert_eq!(shard(all.clone(), None).unwrap().len(), 7);
        assert_eq!(shard(all.clone(), Some("1/3")).unwrap()[0].lines.0, 1);
        assert!(shard(all, Some("3/3")).is_err());
    }

    #[test]
    fn covering_tests_are_those_of_any_line_of_the_span() {
        let map = crate::analyses::coverage::parse_per_line(
            "stream.rs:11: before\nstream.rs:12: a b\nstream.rs:14: c\nstream.rs:15: after\npcmsig.rs:13: other\n",
        )
        .unwrap();
        let m = mutants();
        assert_eq!(covering_tests(&m[0], &map), ["a", "b", "c"]);
        assert!(covering_tests(&m[1], &map).is_empty());
    }

    #[test]
    fn equivalent_entries_need_a_reason_and_are_unique() {
        let text = "# comment\n\nmodule/x.rs: replace a with b\n    because\n    of this\n";
        let e = parse_equivalent(text).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].reason, "because of this");
        assert_eq!(e[0].at, 3);
        assert!(parse_equivalent("module/x.rs: m\n").is_err());
        assert!(parse_equivalent("  reason first\n").is_err());
        assert!(parse_equivalent("m\n  r\nm\n  r\n").is_err());
    }

    #[test]
    fn a_missed_mutant_must_be_explained_and_an_explanation_must_be_current() {
        let m = mutants();
        let eq = |key: &str| Equivalent {
            key: key.to_string(),
            reason: "r".to_string(),
            at: 1,
        };
        let equivalent = vec![eq(&m[0].key())];
        // Missed and explained: fine.
        let (u, s) = check_equivalent(&[&m[0]], &[&m[1]], &m, &equivalent);
        assert!(u.is_empty() && s.is_empty());
        // Missed, not explained.
        let (u, s) = check_equivalent(&[&m[1]], &[], &m, &equivalent);
        assert_eq!(u, [&m[1]]);
        assert!(s.is_empty());
        // Explained, but a test kills it.
        let (u, s) = check_equivalent(&[], &[&m[0]], &m, &equivalent);
        assert!(u.is_empty());
        assert_eq!(s.len(), 1);
        // Two mutants of one key (the same operator twice in a function): one killed, one
        // missed. The entry explains the missed one; the killed one does not contradict it.
        let mut twin = m[0].clone();
        twin.lines = (twin.lines.0 + 7, twin.lines.1 + 7);
        assert_eq!(twin.key(), m[0].key());
        let (u, s) = check_equivalent(&[&m[0]], &[&twin], &m, &equivalent);
        assert!(u.is_empty() && s.is_empty(), "{u:?} {s:?}");
        // Both killed: contradicted.
        let (_, s) = check_equivalent(&[], &[&m[0], &twin], &m, &equivalent);
        assert_eq!(s.len(), 1);
        // A part of the list (a shard) ran the killed twin only: the other, which the entry
        // explains, was not run, so nothing contradicts the entry.
        let mut both = m.clone();
        both.push(twin.clone());
        let (u, s) = check_equivalent(&[], &[&twin], &both, &equivalent);
        assert!(u.is_empty() && s.is_empty(), "{u:?} {s:?}");
        // The whole list ran and both were killed: contradicted.
        let (_, s) = check_equivalent(&[], &[&m[0], &twin], &both, &equivalent);
        assert_eq!(s.len(), 1);
        // Explained, but no such mutant any more.
        let gone = vec![eq("module/x.rs: replace gone with ()")];
        let (_, s) = check_equivalent(&[], &[], &m, &gone);
        assert_eq!(s.len(), 1);
    }

    fn judgement(failures: Vec<ktap::Failure>, blamed: &[(&str, &str)]) -> ktap::Judgement {
        ktap::Judgement {
            report: ktap::parse(""),
            failures,
            blamed: blamed
                .iter()
                .map(|(t, c)| (t.to_string(), c.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_status_comes_from_the_failures_and_the_blame() {
        let pass = judgement(vec![], &[]);
        assert_eq!(status_of(&[("plain", &pass)]), Status::Missed);
        let failed = judgement(
            vec![ktap::Failure::Failed(vec!["read_test".to_string()])],
            &[("read_test", "test")],
        );
        assert_eq!(
            status_of(&[("plain", &pass), ("edu", &failed)]),
            Status::Caught("edu:read_test (test)".to_string())
        );
        let hung = judgement(vec![ktap::Failure::TimedOut(180)], &[]);
        assert!(matches!(status_of(&[("plain", &hung)]), Status::Timeout(_)));
        let no_ktap = judgement(vec![ktap::Failure::NoKtap], &[]);
        assert!(matches!(
            status_of(&[("plain", &no_ktap)]),
            Status::Caught(_)
        ));
    }

    #[test]
    fn a_description_is_matched_literally_by_cargo_mutants() {
        assert_eq!(
            regex_escape("delete match arm Some((\"+\", v)) in referenced_symbols"),
            "delete match arm Some\\(\\(\"\\+\", v\\)\\) in referenced_symbols"
        );
        assert_eq!(
            regex_escape("replace pct -> f64 with -1.0"),
            "replace pct \\-> f64 with \\-1\\.0"
        );
        assert_eq!(
            regex_escape("replace | with ^ in ioc; [a] {b} * ? $ # & ~ \\"),
            "replace \\| with \\^ in ioc; \\[a\\] \\{b\\} \\* \\? \\$ \\# \\& \\~ \\\\"
        );
    }
}
