//! JUnit XML from a KTAP report, for CI systems that display test results.

use crate::report::ktap::{Failure, Report, Splat, Status, TestCase};

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// One test case of the XML.
struct Case {
    classname: String,
    name: String,
    /// `Some((message, body))` for a failure.
    failure: Option<(String, String)>,
    skipped: Option<String>,
    /// Seconds, when the suite gave the test's duration.
    time: Option<f64>,
}

fn case_of(classname: String, t: &TestCase) -> Case {
    let (failure, skipped) = match &t.status {
        Status::Ok => (None, None),
        Status::Skip(reason) => (None, Some(reason.clone())),
        Status::NotOk => {
            let first = t
                .diagnostics
                .first()
                .cloned()
                .unwrap_or_else(|| "not ok".into());
            (Some((first, t.diagnostics.join("\n"))), None)
        }
    };
    Case {
        classname,
        name: t.name.clone(),
        failure,
        skipped,
        time: t.duration_ms.map(|ms| ms as f64 / 1000.0),
    }
}

fn add_leaves(cases: &mut Vec<Case>, path: &str, t: &TestCase) {
    if t.subtests.is_empty() {
        cases.push(case_of(path.to_string(), t));
    } else {
        let path = format!("{path}.{}", t.name);
        t.subtests.iter().for_each(|s| add_leaves(cases, &path, s));
    }
}

/// One `<testsuite>` named `suite` with a `<testcase>` per top-level KTAP test (named exactly as
/// in the KTAP), a failing case for the test during which the guest died (with the console's
/// report), and a `vm` case that fails with the run-level reasons (panic, timeout, short plan...)
/// when there are any. The suite's counts are those of the cases written.
pub fn render(
    suite: &str,
    report: &Report,
    failures: &[Failure],
    splats: &[Splat],
    seconds: f64,
) -> String {
    let mut cases: Vec<Case> = report
        .tests
        .iter()
        .map(|t| case_of("pcmsig.guest".into(), t))
        .collect();
    // Nested results (the module's KUnit suites under their relaying test): one case per leaf,
    // its class naming the path to it.
    for t in &report.tests {
        for sub in &t.subtests {
            add_leaves(&mut cases, &format!("pcmsig.{}", t.name), sub);
        }
    }
    for f in failures {
        if let Failure::DiedAfter { test, .. } = f {
            // The test reported ok, then the guest died of its aftermath: it fails here.
            let body = splats.first().map(|s| s.text.clone()).unwrap_or_default();
            if let Some(c) = cases.iter_mut().find(|c| &c.name == test) {
                // A skip the guest died after is a failed case, counted once.
                c.skipped = None;
                c.failure = Some((f.to_string(), body));
            }
        }
        if let Failure::WrongSkip(tests) = f {
            // The skip itself is the failure of that case.
            for (test, reason) in tests {
                if let Some(c) = cases.iter_mut().find(|c| &c.name == test) {
                    c.skipped = None;
                    c.failure = Some((
                        format!("skipped where it must run: {reason}"),
                        String::new(),
                    ));
                }
            }
        }
        if let Failure::MissingSkip(tests) = f {
            for test in tests {
                if let Some(c) = cases.iter_mut().find(|c| &c.name == test) {
                    c.failure = Some(("ran where it must skip".into(), String::new()));
                }
            }
        }
        if let Failure::DiedDuring { test, .. } = f {
            let body = splats.first().map(|s| s.text.clone()).unwrap_or_default();
            cases.push(Case {
                classname: "pcmsig.guest".into(),
                name: test.clone(),
                failure: Some((f.to_string(), body)),
                skipped: None,
                time: None,
            });
        }
    }
    let run_level: Vec<String> = failures
        .iter()
        .filter(|f| {
            !matches!(
                f,
                Failure::Failed(_)
                    | Failure::DiedDuring { .. }
                    | Failure::DiedAfter { .. }
                    | Failure::WrongSkip(_)
                    | Failure::MissingSkip(_)
            )
        })
        .map(ToString::to_string)
        .collect();
    if let Some(first) = run_level.first() {
        cases.push(Case {
            classname: "pcmsig.harness".into(),
            name: "vm".into(),
            failure: Some((first.clone(), run_level.join("\n"))),
            skipped: None,
            time: None,
        });
    }
    xml(suite, &cases, seconds)
}

/// The JUnit file of a judged VM: its failures, with the kernel's reports from the console
/// (the channel the verdict's splats come from), and the VM's wall time.
pub fn of_run(
    suite: &str,
    run: &crate::vm::Finished,
    judged: &crate::report::ktap::Judgement,
) -> String {
    render(
        suite,
        &judged.report,
        &judged.failures,
        &crate::report::ktap::splats(&run.console),
        run.wall.as_secs_f64(),
    )
}

/// The document: one `<testsuite>` holding `cases`, its counts theirs.
fn xml(suite: &str, cases: &[Case], seconds: f64) -> String {
    let failed = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped.is_some()).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites>\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" skipped=\"{skipped}\" errors=\"0\" time=\"{seconds:.3}\">\n",
        esc(suite),
        cases.len(),
    ));
    for c in cases {
        let time = c
            .time
            .map(|t| format!(" time=\"{t:.3}\""))
            .unwrap_or_default();
        x.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\"{time}>",
            c.classname,
            esc(&c.name)
        ));
        if let Some(reason) = &c.skipped {
            x.push_str(&format!("<skipped message=\"{}\"/>", esc(reason)));
        }
        if let Some((message, body)) = &c.failure {
            x.push_str(&format!(
                "<failure message=\"{}\">{}</failure>",
                esc(message),
                esc(body)
            ));
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_become_question_marks_and_whitespace_stays() {
        assert_eq!(
            super::esc("a\u{1}b\u{1f}c\n\t\r<&>\"'"),
            "a?b?c\n\t\r&lt;&amp;&gt;&quot;&apos;"
        );
    }

    use super::*;
    use crate::report::ktap::{parse, verdict};
    use crate::vm::Ending;

    /// A minimal well-formedness check: tags balance and attribute values hold no raw `<&"`.
    fn well_formed(x: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = x;
        while let Some(i) = rest.find('<') {
            let text = &rest[..i];
            if text.contains('>') || (text.contains('&') && !text.contains(';')) {
                return Err(format!("raw markup in text {text:?}"));
            }
            let end = rest[i..].find('>').ok_or("unclosed tag")? + i;
            let tag = &rest[i + 1..end];
            if tag.starts_with('?') {
            } else if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("mismatched </{name}>"));
                }
            } else {
                let name = tag
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_end_matches('/')
                    .to_string();
                let attrs = &tag[name.len()..];
                if attrs
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .any(|v| v.contains('<') || v.contains('&') && !v.contains(';'))
                {
                    return Err(format!("bad attribute in <{tag}>"));
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    #[test]
    fn counts_match_the_ktap_and_text_is_escaped() {
        let ktap = "KTAP version 1\n1..3\nok 1 a\n# left: <1> & \"2\"\nnot ok 2 b<&>\nok 3 c # SKIP no \"edu\"\n";
        let r = parse(ktap);
        let f = verdict("", &r, &Ending::Exited(Some(0)));
        let x = render("pcmsig.plain", &r, &f, &[], 1.5);
        well_formed(&x).unwrap();
        assert!(x.contains("<testsuite name=\"pcmsig.plain\""), "{x}");
        assert!(
            x.contains("tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{x}"
        );
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert_eq!(x.matches("<skipped ").count(), 1);
        assert!(x.contains("name=\"b&lt;&amp;&gt;\""));
        assert!(x.contains("left: &lt;1&gt; &amp; &quot;2&quot;"));
        assert!(!x.contains("<testcase classname=\"pcmsig.guest\" name=\"a\" time="));
    }

    #[test]
    fn a_timed_test_carries_its_time() {
        let ktap = format!(
            "KTAP version 1\n1..1\n# {}\nok 1 a\n",
            pcmsig_contract::duration_diag(1234)
        );
        let r = parse(&ktap);
        let x = render("pcmsig.plain", &r, &[], &[], 2.0);
        well_formed(&x).unwrap();
        assert!(x.contains("name=\"a\" time=\"1.234\"></testcase>"), "{x}");
    }

    #[test]
    fn nested_results_become_cases_named_by_their_path() {
        let ktap = "KTAP version 1\n1..1\n    KTAP version 1\n    1..1\n        KTAP version 1\n\
                    \x20       1..2\n        ok 1 ring\n        not ok 2 layout\n    not ok 1 pcmsig_signal\n\
                    not ok 1 module_kunit_suites_pass\n";
        let r = parse(ktap);
        let f = verdict("", &r, &Ending::Exited(Some(0)));
        let x = render("pcmsig.plain", &r, &f, &[], 0.0);
        well_formed(&x).unwrap();
        assert!(x.contains("classname=\"pcmsig.module_kunit_suites_pass.pcmsig_signal\" name=\"layout\"><failure"), "{x}");
        assert!(x.contains("name=\"ring\"></testcase>"), "{x}");
        assert!(x.contains("tests=\"3\" failures=\"2\""), "{x}");
    }

    #[test]
    fn the_test_the_guest_died_in_fails_with_the_report_and_counts_agree() {
        let ktap = "KTAP version 1\n1..3\nok 1 a\n";
        let console = "[ 0.9] pcmsig-tests: begin a\n[ 1.0] pcmsig-tests: begin b\n\
                       [ 1.1] BUG: KASAN: use-after-free in x\n[ 1.2] Kernel panic - not syncing: boom\n";
        let r = parse(ktap);
        let f = verdict(console, &r, &Ending::Exited(Some(0)));
        let x = render(
            "pcmsig.plain",
            &r,
            &f,
            &crate::report::ktap::splats(console),
            0.0,
        );
        well_formed(&x).unwrap();
        // a passes; b failed (died); the vm case carries the run-level reasons.
        assert!(x.contains("tests=\"3\" failures=\"2\""), "{x}");
        assert_eq!(x.matches("<failure ").count(), 2, "{x}");
        assert!(x.contains(
            "name=\"b\"><failure message=\"the guest died during test b: BUG: KASAN: use-after-free in x\""
        ), "{x}");
        assert!(
            x.contains("name=\"vm\"><failure message=\"kernel problem on the console: BUG: KASAN"),
            "{x}"
        );
        assert!(x.contains("short run: 1 of 3"));
    }

    /// The suite's `(tests, failures, skipped)`, checked against the cases written: each count
    /// is its elements', and no case is both skipped and failed.
    fn suite_counts(x: &str) -> (usize, usize, usize) {
        let attr = |name: &str| -> usize {
            let key = format!(" {name}=\"");
            let i = x.find(&key).unwrap_or_else(|| panic!("no {name}: {x}")) + key.len();
            x[i..].split('"').next().unwrap().parse().unwrap()
        };
        let counts = (attr("tests"), attr("failures"), attr("skipped"));
        assert_eq!(counts.0, x.matches("<testcase ").count(), "{x}");
        assert_eq!(counts.1, x.matches("<failure ").count(), "{x}");
        assert_eq!(counts.2, x.matches("<skipped ").count(), "{x}");
        for case in x.split("<testcase ").skip(1) {
            assert!(
                !(case.contains("<skipped ") && case.contains("<failure ")),
                "a case both skipped and failed: {case}"
            );
        }
        counts
    }

    const EDU: &str = "edu_periods_come_from_device_interrupts";

    /// A plain VM on the normal kernel judged, and its JUnit file.
    fn judged(console: &str, ktap: &str, ending: Ending) -> (String, Vec<Failure>) {
        let run = crate::report::ktap::finished(console, ktap, ending);
        let j = crate::report::ktap::judge(&run, false, pcmsig_contract::KernelHas::default());
        let x = of_run("pcmsig.plain", &run, &j);
        well_formed(&x).unwrap();
        (x, j.failures)
    }

    #[test]
    fn a_test_skipped_where_it_must_run_is_a_failed_case_not_a_skip() {
        let (x, f) = judged(
            "",
            "KTAP version 1\n1..2\nok 1 a\nok 2 b # SKIP reading failed\n",
            Ending::Exited(Some(0)),
        );
        assert!(matches!(f.as_slice(), [Failure::WrongSkip(_)]), "{f:?}");
        assert_eq!(suite_counts(&x), (2, 1, 0), "{x}");
        assert!(x.contains(
            "name=\"b\"><failure message=\"skipped where it must run: reading failed\"></failure>"
        ), "{x}");
    }

    #[test]
    fn a_test_run_where_it_must_skip_is_a_failed_case() {
        let (x, f) = judged(
            "",
            &format!("KTAP version 1\n1..2\nok 1 a\nok 2 {EDU}\n"),
            Ending::Exited(Some(0)),
        );
        assert_eq!(f, vec![Failure::MissingSkip(vec![EDU.into()])]);
        assert_eq!(suite_counts(&x), (2, 1, 0), "{x}");
        assert!(
            x.contains(&format!(
                "name=\"{EDU}\"><failure message=\"ran where it must skip\"></failure>"
            )),
            "{x}"
        );
    }

    #[test]
    fn a_death_after_a_test_fails_that_test_with_the_report_and_the_run() {
        let console = "[ 1.0] pcmsig-tests: begin a\n[ 1.1] pcmsig-tests: begin b\n\
                       [ 1.2] BUG: KASAN: slab-use-after-free in rcu_do_batch\n[ 1.3] Call Trace:\n";
        let (x, f) = judged(
            console,
            "KTAP version 1\n1..3\nok 1 a\nok 2 b\n",
            Ending::Panicked,
        );
        assert!(
            f.iter()
                .any(|f| matches!(f, Failure::DiedAfter { test, .. } if test == "b")),
            "{f:?}"
        );
        assert_eq!(suite_counts(&x), (3, 2, 0), "{x}");
        assert!(x.contains(
            "name=\"b\"><failure message=\"the guest died after test b reported, before the next \
             began: BUG: KASAN: slab-use-after-free in rcu_do_batch\">BUG: KASAN: \
             slab-use-after-free in rcu_do_batch\nCall Trace:</failure>"
        ), "{x}");
        assert!(x.contains("name=\"a\"></testcase>"), "{x}");
        assert!(
            x.contains("name=\"vm\"><failure message=\"kernel problem on the console"),
            "{x}"
        );
    }

    #[test]
    fn a_death_after_an_allowed_skip_fails_that_case_and_counts_it_failed_only() {
        let console =
            format!("[ 1.0] pcmsig-tests: begin {EDU}\n[ 1.1] BUG: KASAN: use-after-free in x\n");
        let (x, f) = judged(
            &console,
            &format!("KTAP version 1\n1..2\nok 1 {EDU} # SKIP no edu device in this VM\n"),
            Ending::Panicked,
        );
        assert!(
            f.iter().any(|f| matches!(f, Failure::DiedAfter { .. })),
            "{f:?}"
        );
        assert_eq!(suite_counts(&x), (2, 2, 0), "{x}");
        assert!(
            x.contains(&format!(
                "name=\"{EDU}\"><failure message=\"the guest died after"
            )),
            "{x}"
        );
    }

    #[test]
    fn a_missing_test_fails_the_vm_case() {
        let (x, f) = judged(
            "",
            "KTAP version 1\n1..3\nok 1 a\nok 2 b\n",
            Ending::Exited(Some(0)),
        );
        assert_eq!(
            f,
            vec![Failure::ShortRun {
                planned: 3,
                seen: 2
            }]
        );
        assert_eq!(suite_counts(&x), (3, 1, 0), "{x}");
        assert!(x.contains(
            "classname=\"pcmsig.harness\" name=\"vm\"><failure message=\"short run: 2 of 3 planned \
             results (truncated output)\">short run: 2 of 3 planned results (truncated output)</failure>"
        ), "{x}");
    }

    #[test]
    fn a_failing_verdict_always_has_a_failing_case_and_a_passing_one_never() {
        let good = "KTAP version 1\n1..2\nok 1 a\nok 2 b\n";
        let nested = |parent: &str| {
            format!(
                "KTAP version 1\n1..1\n    KTAP version 1\n    1..2\n    ok 1 ring\n    \
                 not ok 2 layout\n{parent} 1 module_kunit_suites_pass\n"
            )
        };
        let cases: Vec<(&str, String, String, Ending)> = vec![
            ("pass", String::new(), good.into(), Ending::Exited(Some(0))),
            (
                "allowed skip",
                String::new(),
                format!("KTAP version 1\n1..1\nok 1 {EDU} # SKIP no edu\n"),
                Ending::Exited(Some(0)),
            ),
            (
                "not ok",
                String::new(),
                "KTAP version 1\n1..1\nnot ok 1 a\n".into(),
                Ending::Exited(Some(0)),
            ),
            (
                "wrong skip",
                String::new(),
                "KTAP version 1\n1..1\nok 1 a # SKIP x\n".into(),
                Ending::Exited(Some(0)),
            ),
            (
                "missing skip",
                String::new(),
                format!("KTAP version 1\n1..1\nok 1 {EDU}\n"),
                Ending::Exited(Some(0)),
            ),
            (
                "short",
                String::new(),
                "KTAP version 1\n1..3\nok 1 a\n".into(),
                Ending::Exited(Some(0)),
            ),
            (
                "died during",
                "pcmsig-tests: begin a\npcmsig-tests: begin b\n".into(),
                "KTAP version 1\n1..2\nok 1 a\n".into(),
                Ending::Silent(60),
            ),
            (
                "died after",
                "pcmsig-tests: begin a\n".into(),
                "KTAP version 1\n1..2\nok 1 a\n".into(),
                Ending::TimedOut(300),
            ),
            (
                "no plan",
                String::new(),
                "KTAP version 1\nok 1 a\n".into(),
                Ending::Exited(Some(0)),
            ),
            (
                "no KTAP",
                String::new(),
                String::new(),
                Ending::Exited(Some(0)),
            ),
            (
                "numbering",
                String::new(),
                "KTAP version 1\n1..2\nok 1 a\nok 3 b\n".into(),
                Ending::Exited(Some(0)),
            ),
            (
                "bail out",
                String::new(),
                "KTAP version 1\n1..0\nBail out! none\n".into(),
                Ending::Exited(Some(0)),
            ),
            (
                "kernel problem",
                "WARNING: CPU: 0 PID: 1 at x\n".into(),
                good.into(),
                Ending::Exited(Some(0)),
            ),
            (
                "QEMU failed",
                String::new(),
                good.into(),
                Ending::Exited(Some(1)),
            ),
            (
                "failing leaf",
                String::new(),
                nested("not ok"),
                Ending::Exited(Some(0)),
            ),
            (
                "failing leaf under an ok parent",
                String::new(),
                nested("ok"),
                Ending::Exited(Some(0)),
            ),
        ];
        for (what, console, ktap, ending) in cases {
            let (x, f) = judged(&console, &ktap, ending);
            let failed = suite_counts(&x).1;
            assert_eq!(failed > 0, !f.is_empty(), "{what}: verdict {f:?}\n{x}");
        }
        // kunit.py's disagreement is added after the judgement: the vm case carries it.
        let r = parse(good);
        let f = vec![Failure::ParserDisagrees(
            "passed: ours 2, kunit.py 1".into(),
        )];
        let x = render("pcmsig.plain", &r, &f, &[], 0.0);
        assert_eq!(suite_counts(&x), (3, 1, 0), "{x}");
        assert!(
            x.contains("name=\"vm\"><failure message=\"kunit.py parse disagrees"),
            "{x}"
        );
    }
}
