//! The kunit.py cross-check: the kernel's own KTAP parser (`tools/testing/kunit/kunit.py
//! parse`) must read each VM's KTAP as `ktap.rs` does, or the run fails.

use anyhow::{Context, Result};
use std::path::Path;
use xshell::Shell;

use crate::report::ktap;

/// Runs the kernel's own KTAP parser (`tools/testing/kunit/kunit.py parse --json=FILE`) on
/// `ktap` and compares the counts of its JSON report with ours; returns the disagreement, if
/// any. A run that did not complete is not compared (the verdict already fails it, and
/// kunit.py counts a crash its own way).
pub fn parse_disagrees(
    kernel_src: &Path,
    ktap: &Path,
    report: &ktap::Report,
) -> Result<Option<String>> {
    let c = report.leaf_counts();
    if report.plan != Some(report.tests.len())
        || report.bail_out.is_some()
        || report.tests.is_empty()
    {
        return Ok(None);
    }
    let kunit = kernel_src.join("tools/testing/kunit/kunit.py");
    let json = ktap.with_extension("kunit.json");
    let _ = std::fs::remove_file(&json);
    let sh = Shell::new()?;
    let json_arg = format!("--json={}", json.display());
    let out = xshell::cmd!(sh, "python3 {kunit} parse {json_arg} {ktap}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| {
            format!(
                "running python3 {} parse (package: python3)",
                kunit.display()
            )
        })?;
    let theirs = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str::<KunitJson>(&t).ok());
    let Some(theirs) = theirs else {
        return Ok(Some(format!(
            "kunit.py parse {} wrote no JSON report to {}:\n{}{}",
            ktap.display(),
            json.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    };
    Ok(disagreement(c, &theirs.misc))
}

/// The part of kunit.py's JSON report (`kunit_json.py`) that we compare: its counts.
#[derive(Debug, serde::Deserialize)]
struct KunitJson {
    misc: KunitCounts,
}

/// kunit.py's counts of the leaves of a run.
#[derive(Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct KunitCounts {
    pub passed: usize,
    pub failed: usize,
    pub crashed: usize,
    pub skipped: usize,
    pub errors: usize,
}

/// Our leaf counts against kunit.py's: the disagreement, naming every count that differs
/// (we never count a crash or an error: a run with one is not complete).
pub fn disagreement(c: ktap::Counts, theirs: &KunitCounts) -> Option<String> {
    let pairs = [
        ("passed", c.passed, theirs.passed),
        ("failed", c.failed, theirs.failed),
        ("skipped", c.skipped, theirs.skipped),
        ("crashed", 0, theirs.crashed),
        ("errors", 0, theirs.errors),
    ];
    let differ: Vec<String> = pairs
        .iter()
        .filter(|(_, ours, theirs)| ours != theirs)
        .map(|(k, ours, theirs)| format!("{k}: ours {ours}, kunit.py {theirs}"))
        .collect();
    (!differ.is_empty()).then(|| format!("kunit.py parse disagrees: {}", differ.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(
        passed: usize,
        failed: usize,
        crashed: usize,
        skipped: usize,
        errors: usize,
    ) -> KunitCounts {
        KunitCounts {
            passed,
            failed,
            crashed,
            skipped,
            errors,
        }
    }

    #[test]
    fn the_kunit_cross_check_compares_every_count() {
        let ours = ktap::Counts {
            passed: 3,
            failed: 2,
            skipped: 1,
        };
        assert_eq!(disagreement(ours, &k(3, 2, 0, 1, 0)), None);
        for (theirs, what) in [
            (k(2, 2, 0, 1, 0), "passed: ours 3, kunit.py 2"),
            (k(3, 1, 0, 1, 0), "failed: ours 2, kunit.py 1"),
            (k(3, 2, 0, 0, 0), "skipped: ours 1, kunit.py 0"),
            (k(3, 2, 1, 1, 0), "crashed: ours 0, kunit.py 1"),
            (k(3, 2, 0, 1, 1), "errors: ours 0, kunit.py 1"),
        ] {
            assert_eq!(
                disagreement(ours, &theirs),
                Some(format!("kunit.py parse disagrees: {what}")),
                "{theirs:?}"
            );
        }
        assert_eq!(
            disagreement(ours, &k(0, 2, 0, 1, 0)),
            Some("kunit.py parse disagrees: passed: ours 3, kunit.py 0".into())
        );
    }

    /// A kernel tree whose `kunit.py` writes `json` to the file its `--json=FILE` names
    /// (nothing if `json` is empty), whatever KTAP it is given, and a KTAP file.
    fn fake_tree(json: &str, ktap_text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "pcmsig-kunit-test-{}-{}",
            std::process::id(),
            json.len() + 1000 * ktap_text.len()
        ));
        let kunit = dir.join("tools/testing/kunit");
        std::fs::create_dir_all(&kunit).unwrap();
        std::fs::write(
            kunit.join("kunit.py"),
            format!(
                "import sys\nassert sys.argv[1] == 'parse'\njson = {json:?}\n\
                 path = sys.argv[2].split('=', 1)[1]\n\
                 if json:\n    open(path, 'w').write(json)\n"
            ),
        )
        .unwrap();
        let ktap = dir.join("ktap.txt");
        std::fs::write(&ktap, ktap_text).unwrap();
        (dir, ktap)
    }

    #[test]
    fn the_cross_check_runs_kunit_py_on_complete_runs_only_and_reads_its_json() {
        let complete = "KTAP version 1\n1..2\nok 1 a\nnot ok 2 b\n";
        let report = ktap::parse(complete);
        let json = |p: usize, f: usize| {
            format!(
                "{{\"name\": \"x\", \"misc\": {{\"tests\": {}, \"passed\": {p}, \
                 \"failed\": {f}, \"crashed\": 0, \"skipped\": 0, \"errors\": 0}}}}",
                p + f
            )
        };
        // kunit.py agrees: no disagreement.
        let (dir, ktap) = fake_tree(&json(1, 1), complete);
        assert_eq!(parse_disagrees(&dir, &ktap, &report).unwrap(), None);
        // It counts otherwise: said.
        let (dir, ktap) = fake_tree(&json(2, 0), complete);
        let d = parse_disagrees(&dir, &ktap, &report).unwrap().unwrap();
        assert!(d.contains("passed: ours 1, kunit.py 2"), "{d}");
        // It writes no report, or one without counts: said (and a stale report of an
        // earlier run is not read).
        let (dir, ktap) = fake_tree(&json(1, 1), complete);
        assert_eq!(parse_disagrees(&dir, &ktap, &report).unwrap(), None);
        std::fs::write(
            dir.join("tools/testing/kunit/kunit.py"),
            "import sys\nprint('Traceback (most recent call last)')\n",
        )
        .unwrap();
        let d = parse_disagrees(&dir, &ktap, &report).unwrap().unwrap();
        assert!(d.contains("wrote no JSON report"), "{d}");
        let (dir, ktap) = fake_tree("{\"misc\": {}}", complete);
        let d = parse_disagrees(&dir, &ktap, &report).unwrap().unwrap();
        assert!(d.contains("wrote no JSON report"), "{d}");
        // Incomplete runs are not compared (the fake would disagree if it were asked): a plan
        // short of its tests, a bail-out, no test at all.
        for text in [
            "KTAP version 1\n1..3\nok 1 a\nnot ok 2 b\n",
            "KTAP version 1\n1..2\nok 1 a\nBail out! gone\n",
            "KTAP version 1\n1..0\n",
        ] {
            let (dir, ktap) = fake_tree(&json(9, 0), text);
            assert_eq!(
                parse_disagrees(&dir, &ktap, &ktap::parse(text)).unwrap(),
                None,
                "{text:?}"
            );
        }
        // Every fake tree of this process (they differ only by name suffix).
        let mine = format!("pcmsig-kunit-test-{}-", std::process::id());
        for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(&mine) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
