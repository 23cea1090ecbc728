//! The kunit.py cross-check: the kernel's own KTAP parser (`tools/testing/kunit/kunit.py
//! parse`) must read each VM's KTAP as `ktap.rs` does, or the run fails.

use anyhow::{Context, Result};
use std::path::Path;
use xshell::Shell;

use crate::ktap;

/// Runs the kernel's own KTAP parser (`tools/testing/kunit/kunit.py parse`) on `ktap` and
/// compares its counts with ours; returns the disagreement, if any. A run that did not complete
/// is not compared (the verdict already fails it, and kunit.py counts a crash its own way).
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
    let sh = Shell::new()?;
    let out = xshell::cmd!(sh, "python3 {kunit} parse {ktap}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| {
            format!(
                "running python3 {} parse (package: python3)",
                kunit.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(summary) = text
        .lines()
        .find_map(|l| l.split("Testing complete. ").nth(1))
    else {
        return Ok(Some(format!(
            "kunit.py parse {} printed no summary:\n{text}",
            ktap.display()
        )));
    };
    Ok(disagreement(c, summary))
}

/// Our leaf counts against kunit.py's summary line (`Ran 3 tests: passed: 1, failed: 1, ...`;
/// it leaves out the counts that are 0): every count it names, the disagreement if any.
pub fn disagreement(c: ktap::Counts, summary: &str) -> Option<String> {
    let theirs = counts(summary);
    let of = |k: &str| {
        theirs
            .iter()
            .find(|(tk, _)| tk == k)
            .map_or(0, |(_, tv)| *tv)
    };
    let ours = [
        ("passed", c.passed),
        ("failed", c.failed),
        ("skipped", c.skipped),
        ("crashed", 0),
        ("errors", 0),
    ];
    let differ: Vec<String> = ours
        .iter()
        .filter(|(k, v)| of(k) != *v)
        .map(|(k, v)| format!("{k}: ours {v}, kunit.py {}", of(k)))
        .collect();
    (!differ.is_empty()).then(|| {
        format!(
            "kunit.py parse disagrees ({summary}): {}",
            differ.join("; ")
        )
    })
}

/// `Ran 3 tests: passed: 1, failed: 1, skipped: 1` -> `[("passed", 1), ...]`.
pub fn counts(summary: &str) -> Vec<(String, usize)> {
    summary
        .split_once(':')
        .map_or("", |(_, r)| r)
        .split(',')
        .filter_map(|part| {
            let (k, v) = part.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kunit_cross_check_compares_every_count() {
        let ours = ktap::Counts {
            passed: 3,
            failed: 2,
            skipped: 1,
        };
        let same = "Ran 6 tests: passed: 3, failed: 2, skipped: 1";
        assert_eq!(disagreement(ours, same), None);
        for (summary, what) in [
            (
                "Ran 5 tests: passed: 2, failed: 2, skipped: 1",
                "passed: ours 3, kunit.py 2",
            ),
            (
                "Ran 5 tests: passed: 3, failed: 1, skipped: 1",
                "failed: ours 2, kunit.py 1",
            ),
            (
                "Ran 5 tests: passed: 3, failed: 2",
                "skipped: ours 1, kunit.py 0",
            ),
            (
                "Ran 7 tests: passed: 3, failed: 2, crashed: 1, skipped: 1",
                "crashed: ours 0, kunit.py 1",
            ),
            (
                "Ran 6 tests: passed: 3, failed: 2, skipped: 1, errors: 1",
                "errors: ours 0, kunit.py 1",
            ),
        ] {
            let d = disagreement(ours, summary);
            assert_eq!(
                d,
                Some(format!("kunit.py parse disagrees ({summary}): {what}")),
                "{summary}"
            );
        }
    }

    /// A kernel tree whose `kunit.py` prints `output` whatever it is asked, and a KTAP file.
    fn fake_tree(output: &str, ktap_text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "pcmsig-kunit-test-{}-{}",
            std::process::id(),
            output.len() + 1000 * ktap_text.len()
        ));
        let kunit = dir.join("tools/testing/kunit");
        std::fs::create_dir_all(&kunit).unwrap();
        std::fs::write(kunit.join("kunit.py"), format!("print({output:?})\n")).unwrap();
        let ktap = dir.join("ktap.txt");
        std::fs::write(&ktap, ktap_text).unwrap();
        (dir, ktap)
    }

    #[test]
    fn the_cross_check_runs_kunit_py_on_complete_runs_only_and_reads_its_summary() {
        let complete = "KTAP version 1\n1..2\nok 1 a\nnot ok 2 b\n";
        let report = ktap::parse(complete);
        // kunit.py agrees: no disagreement.
        let (dir, ktap) = fake_tree(
            "Testing complete. Ran 2 tests: passed: 1, failed: 1",
            complete,
        );
        assert_eq!(parse_disagrees(&dir, &ktap, &report).unwrap(), None);
        // It counts otherwise: said.
        let (dir, ktap) = fake_tree("Testing complete. Ran 2 tests: passed: 2", complete);
        let d = parse_disagrees(&dir, &ktap, &report).unwrap().unwrap();
        assert!(d.contains("passed: ours 1, kunit.py 2"), "{d}");
        // It prints no summary: said.
        let (dir, ktap) = fake_tree("Traceback (most recent call last)", complete);
        let d = parse_disagrees(&dir, &ktap, &report).unwrap().unwrap();
        assert!(d.contains("printed no summary"), "{d}");
        // Incomplete runs are not compared (the fake would disagree if it were asked): a plan
        // short of its tests, a bail-out, no test at all.
        for text in [
            "KTAP version 1\n1..3\nok 1 a\nnot ok 2 b\n",
            "KTAP version 1\n1..2\nok 1 a\nBail out! gone\n",
            "KTAP version 1\n1..0\n",
        ] {
            let (dir, ktap) = fake_tree("Testing complete. Ran 9 tests: passed: 9", text);
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
