//! A small KTAP v1 parser (`Documentation/dev-tools/ktap.rst`) and the run verdict.
//!
//! The guest suite writes its KTAP to its own serial port (`ktap.txt`), so the parser normally
//! sees pure KTAP; it still tolerates printk timestamps, `\r` and foreign lines (ignored), as
//! kunit.py does. Subtests are indented by four spaces and precede their parent's result line.
//! The verdict is strict: the plan, the numbering and every result must be right, and the kernel
//! console (a log) must show no kernel problem.

use crate::vm::Ending;
use std::fmt;

/// Result of one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    NotOk,
    Skip(String),
}

/// One test line with its diagnostics and subtests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    pub number: usize,
    pub name: String,
    pub status: Status,
    /// `#` lines printed before the result line (at the same level), but for its duration.
    pub diagnostics: Vec<String>,
    /// The test's wall time, when the suite gave it (`pcmsig_contract::duration_diag`).
    pub duration_ms: Option<u64>,
    pub subtests: Vec<TestCase>,
}

/// A parsed (possibly partial) KTAP document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Whether a `KTAP version 1` (or `TAP version`) header was seen.
    pub header: bool,
    pub plan: Option<usize>,
    pub tests: Vec<TestCase>,
    /// `Bail out!` reason, if any.
    pub bail_out: Option<String>,
}

#[derive(Default)]
struct Level {
    plan: Option<usize>,
    tests: Vec<TestCase>,
    diagnostics: Vec<String>,
}

/// Removes a printk timestamp (`[    1.234567] `), `\r` and ANSI escapes from a console line.
fn clean(line: &str) -> String {
    let mut s = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => {
                // CSI: ESC [ params final-byte
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            c => s.push(c),
        }
    }
    let t = s.trim_start();
    if let Some(rest) = t.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            let stamp = &rest[..end];
            if stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.')
                && !stamp.trim().is_empty()
            {
                return rest[end + 2..].to_string();
            }
        }
    }
    s
}

fn parse_result(content: &str) -> Option<(bool, usize, String, Option<String>)> {
    let (ok, rest) = if let Some(r) = content.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = content.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let num_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let number: usize = rest[..num_end].parse().ok()?;
    let rest = rest[num_end..].trim_start();
    let rest = rest.strip_prefix("- ").unwrap_or(rest);
    let (name, directive) = match rest.find(" # ") {
        Some(i) => (rest[..i].trim(), Some(rest[i + 3..].trim())),
        None => match rest.strip_prefix("# ") {
            Some(d) => ("", Some(d.trim())),
            None => (rest.trim(), None),
        },
    };
    let skip = directive.and_then(|d| {
        let upper = d.to_ascii_uppercase();
        upper
            .starts_with("SKIP")
            .then(|| d[4.min(d.len())..].trim().to_string())
    });
    Some((ok, number, name.to_string(), skip))
}

/// The level at `depth`, made (with any missing above it) if need be.
fn level_at(levels: &mut Vec<Level>, depth: usize) -> &mut Level {
    while levels.len() <= depth {
        levels.push(Level::default());
    }
    &mut levels[depth]
}

/// Adds a result line's test at `depth`; the levels below it are its subtests.
fn push_result(
    levels: &mut Vec<Level>,
    depth: usize,
    (ok, number, name, skip): (bool, usize, String, Option<String>),
) {
    level_at(levels, depth);
    // The level below (none: no subtests; split_off at the length takes nothing).
    let subtests = levels
        .split_off(depth + 1)
        .into_iter()
        .next()
        .map(|l| l.tests)
        .unwrap_or_default();
    let level = &mut levels[depth];
    let status = match (ok, skip) {
        (_, Some(reason)) => Status::Skip(reason),
        (true, None) => Status::Ok,
        (false, None) => Status::NotOk,
    };
    let (durations, diagnostics): (Vec<String>, Vec<String>) =
        std::mem::take(&mut level.diagnostics)
            .into_iter()
            .partition(|d| pcmsig_contract::duration_diag_ms(d).is_some());
    let duration_ms = durations
        .last()
        .and_then(|d| pcmsig_contract::duration_diag_ms(d));
    level.tests.push(TestCase {
        number,
        name,
        status,
        diagnostics,
        duration_ms,
        subtests,
    });
}

/// Parses every KTAP line found in `console`.
pub fn parse(console: &str) -> Report {
    let mut report = Report::default();
    // levels[d] collects the tests at indentation depth d.
    let mut levels: Vec<Level> = Vec::new();
    for raw in console.lines() {
        let line = clean(raw);
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = line.trim();
        if content.is_empty() {
            continue;
        }
        let depth = indent / 4;
        if content.starts_with("KTAP version") || content.starts_with("TAP version") {
            if depth == 0 {
                report.header = true;
            }
            // At depth 0 this empties the levels: a second top-level document (e.g. after a
            // reboot) starts over.
            levels.truncate(depth);
            level_at(&mut levels, depth);
            continue;
        }
        if !report.header {
            continue;
        }
        if let Some(reason) = content.strip_prefix("Bail out!") {
            report.bail_out = Some(reason.trim().to_string());
            continue;
        }
        if let Some(plan) = content.strip_prefix("1..") {
            if let Ok(n) = plan.trim().parse::<usize>() {
                level_at(&mut levels, depth).plan = Some(n);
            }
            continue;
        }
        if let Some(diag) = content.strip_prefix('#') {
            if let Some(level) = levels.get_mut(depth) {
                level.diagnostics.push(diag.trim().to_string());
            }
            continue;
        }
        if let Some(result) = parse_result(content) {
            push_result(&mut levels, depth, result);
        }
        // Anything else is kernel noise.
    }
    if let Some(top) = levels.into_iter().next() {
        report.plan = top.plan;
        report.tests = top.tests;
    }
    report
}

/// Counts over the top-level tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl TestCase {
    /// Adds this test's leaves to `c`: itself if it has no subtests, else theirs (kunit.py's
    /// way of counting).
    fn add_leaves(&self, c: &mut Counts) {
        if self.subtests.is_empty() {
            match self.status {
                Status::Ok => c.passed += 1,
                Status::NotOk => c.failed += 1,
                Status::Skip(_) => c.skipped += 1,
            }
        } else {
            self.subtests.iter().for_each(|t| t.add_leaves(c));
        }
    }
}

impl Report {
    /// The `n` top-level tests that took longest, by the durations the suite gave (`a 3.2 s,
    /// b 1.0 s`), or `None` when it gave none.
    pub fn slowest(&self, n: usize) -> Option<String> {
        let mut timed: Vec<(u64, &str)> = self
            .tests
            .iter()
            .filter_map(|t| Some((t.duration_ms?, t.name.as_str())))
            .collect();
        if timed.is_empty() {
            return None;
        }
        timed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let shown: Vec<String> = timed
            .iter()
            .take(n)
            .map(|(ms, name)| format!("{name} {:.1} s", *ms as f64 / 1000.0))
            .collect();
        Some(shown.join(", "))
    }

    /// Counts over the leaves of the test tree, as kunit.py reports them.
    pub fn leaf_counts(&self) -> Counts {
        let mut c = Counts::default();
        self.tests.iter().for_each(|t| t.add_leaves(&mut c));
        c
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in &self.tests {
            match t.status {
                Status::Ok => c.passed += 1,
                Status::NotOk => c.failed += 1,
                Status::Skip(_) => c.skipped += 1,
            }
        }
        c
    }
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    TimedOut(u64),
    Silent(u64),
    QemuFailed(Option<i32>),
    KernelProblem(String),
    NoKtap,
    NoPlan,
    ShortRun {
        planned: usize,
        seen: usize,
    },
    /// The guest stopped (crash, panic, kill) while this test ran; the console's first problem.
    DiedDuring {
        test: String,
        problem: Option<String>,
    },
    /// The guest stopped after this test had reported and before the next one began: in the
    /// test's aftermath (e.g. an RCU callback freeing what it left behind).
    DiedAfter {
        test: String,
        problem: Option<String>,
    },
    /// Test numbers that are not 1, 2, ... in order, or more results than planned.
    Numbering(String),
    BailOut(String),
    Failed(Vec<String>),
    /// The kernel's own KTAP parser (`kunit.py parse`) read the KTAP otherwise than we did.
    ParserDisagrees(String),
    /// Tests that skipped where the contract (`pcmsig_contract::SKIPS`) says they must run,
    /// with their reasons.
    WrongSkip(Vec<(String, String)>),
    /// Tests that ran where the contract says they must skip.
    MissingSkip(Vec<String>),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut(s) => write!(
                f,
                "timeout: the VM did not finish within {s} s and was killed"
            ),
            Failure::Silent(s) => write!(
                f,
                "hang: the guest printed nothing for {s} s and was killed"
            ),
            Failure::QemuFailed(code) => write!(f, "QEMU failed (exit status {code:?})"),
            Failure::KernelProblem(line) => write!(f, "kernel problem on the console: {line}"),
            Failure::NoKtap => write!(f, "no KTAP output: the guest suite never started"),
            Failure::NoPlan => write!(f, "no KTAP plan line (1..N): the run is incomplete"),
            Failure::ShortRun { planned, seen } => {
                write!(
                    f,
                    "short run: {seen} of {planned} planned results (truncated output)"
                )
            }
            Failure::DiedDuring { test, problem } => match problem {
                Some(p) => write!(f, "the guest died during test {test}: {p}"),
                None => write!(f, "the guest stopped during test {test}"),
            },
            Failure::DiedAfter { test, problem } => match problem {
                Some(p) => write!(
                    f,
                    "the guest died after test {test} reported, before the next began: {p}"
                ),
                None => write!(
                    f,
                    "the guest stopped after test {test}, before the next began"
                ),
            },
            Failure::Numbering(what) => write!(f, "bad KTAP numbering: {what}"),
            Failure::BailOut(r) => write!(f, "the suite bailed out: {r}"),
            Failure::Failed(names) => {
                write!(f, "{} test(s) failed: {}", names.len(), names.join(", "))
            }
            Failure::ParserDisagrees(what) => {
                write!(f, "kunit.py parse disagrees with our reading: {what}")
            }
            Failure::WrongSkip(tests) => {
                let list: Vec<String> = tests.iter().map(|(n, r)| format!("{n} ({r})")).collect();
                write!(
                    f,
                    "{} test(s) skipped where they must run: {}",
                    tests.len(),
                    list.join(", ")
                )
            }
            Failure::MissingSkip(names) => write!(
                f,
                "{} test(s) ran where they must skip (their condition was misread): {}",
                names.len(),
                names.join(", ")
            ),
        }
    }
}

pub use pcmsig_contract::TEST_MARKER;
use pcmsig_contract::{problem_in, KernelHas};

/// A kernel problem on the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splat {
    /// The line that matched.
    pub line: String,
    /// That line and up to 30 following lines (the report's body).
    pub text: String,
}

/// Every kernel problem on the console, one per report.
pub fn splats(console: &str) -> Vec<Splat> {
    let lines: Vec<String> = console.lines().map(clean).collect();
    let mut out: Vec<Splat> = Vec::new();
    let mut skip_until = 0;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        if i < skip_until {
            continue;
        }
        if problem_in(t).is_none() {
            continue;
        }
        // One report spans many matching lines (cut here, WARNING, Call Trace): take it whole.
        skip_until = i + 30;
        let body: Vec<&str> = lines[i..lines.len().min(i + 30)]
            .iter()
            .map(|l| l.trim_end())
            .collect();
        out.push(Splat {
            line: t.to_string(),
            text: body.join("\n"),
        });
    }
    out
}

/// The first console line that reports a kernel problem.
pub fn kernel_problem(console: &str) -> Option<String> {
    splats(console).into_iter().next().map(|s| s.line)
}

/// The test whose start the suite logged last (`TEST_MARKER` records reach the console in log
/// order, and a panic flushes the console): the one running when the guest stopped.
pub fn last_started_test(console: &str) -> Option<String> {
    console
        .lines()
        .filter_map(|l| l.split(TEST_MARKER).nth(1))
        .map(|n| n.trim().to_string())
        .next_back()
}

/// Checks that the results are numbered 1, 2, ... with no gap, duplicate or excess.
fn numbering(report: &Report) -> Option<String> {
    for (i, t) in report.tests.iter().enumerate() {
        if t.number != i + 1 {
            return Some(format!(
                "result {} is numbered {} ({}): expected {}",
                i + 1,
                t.number,
                t.name,
                i + 1
            ));
        }
    }
    match report.plan {
        Some(planned) if report.tests.len() > planned => Some(format!(
            "{} results for a plan of {planned}",
            report.tests.len()
        )),
        _ => None,
    }
}

/// A finished VM judged: the one verdict `test`, `selftest --bugs` and `selftest` share.
pub struct Judgement {
    /// The suite's KTAP (the VM's second port), parsed.
    pub report: Report,
    /// Every reason the run fails; none if it passes.
    pub failures: Vec<Failure>,
    /// `(test, detector)` for every test blamed ([`blamed`]).
    pub blamed: Vec<(String, String)>,
}

/// Judges a finished VM: its KTAP parsed; the [`verdict`] from it, the console and how QEMU
/// ended; the skip contract ([`skip_failures`]) for a VM with (`edu`) or without the device, on a
/// kernel that has what `kernel` says; and the blame.
pub fn judge(run: &crate::vm::Finished, edu: bool, kernel: KernelHas) -> Judgement {
    judge_with(run, &|name| pcmsig_contract::must_skip(name, edu, kernel))
}

/// [`judge`] with any suite's skip rule: `skip_rule(test)` is `None` where the test must never
/// skip, `Some(true)` where it must skip, `Some(false)` where it must run. Besides the suite's
/// own blame, every kernel problem on the console is blamed on the test that was running
/// ([`splat_blame`]), so that a suite which never reads the kernel log is blamed alike.
pub fn judge_with(
    run: &crate::vm::Finished,
    skip_rule: &dyn Fn(&str) -> Option<bool>,
) -> Judgement {
    let report = parse(&run.ktap);
    let mut failures = verdict(&run.console, &report, &run.ending);
    failures.extend(skip_failures_with(&report, skip_rule));
    let mut blamed = blamed(&report, &failures);
    for b in splat_blame(&run.console) {
        if !blamed.contains(&b) {
            blamed.push(b);
        }
    }
    Judgement {
        report,
        failures,
        blamed,
    }
}

/// `(test, class)` for each kernel problem on the console, blamed on the test whose
/// [`TEST_MARKER`] came last before it (none before the first marker: the boot's).
pub fn splat_blame(console: &str) -> Vec<(String, String)> {
    let mut test: Option<String> = None;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut skip_until = 0;
    for (i, line) in console.lines().enumerate() {
        let line = clean(line);
        if let Some(name) = line.split(TEST_MARKER).nth(1) {
            test = Some(name.trim().to_string());
            // A report ends where the next test begins.
            skip_until = 0;
            continue;
        }
        if i < skip_until {
            continue;
        }
        let Some(p) = problem_in(line.trim()) else {
            continue;
        };
        // One report spans many matching lines (as in [`splats`]): its first names it.
        skip_until = i + 30;
        if let Some(t) = &test {
            let b = (t.clone(), p.class.to_string());
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// Every reason this run fails; empty means pass. `ktap` is the suite's KTAP channel, `console`
/// the kernel console.
pub fn verdict(console: &str, report: &Report, ending: &Ending) -> Vec<Failure> {
    let mut failures = Vec::new();
    let first_splat = splats(console).into_iter().next();
    if let Some(splat) = &first_splat {
        failures.push(Failure::KernelProblem(splat.line.clone()));
    }
    match ending {
        Ending::TimedOut(s) => failures.push(Failure::TimedOut(*s)),
        Ending::Silent(s) => failures.push(Failure::Silent(*s)),
        // The panic itself is on the console, hence a `KernelProblem` already.
        Ending::Exited(Some(0)) | Ending::Panicked => {}
        Ending::Exited(code) => failures.push(Failure::QemuFailed(*code)),
    }
    if !report.header {
        failures.push(Failure::NoKtap);
        return failures;
    }
    if let Some(r) = &report.bail_out {
        failures.push(Failure::BailOut(r.clone()));
    }
    match report.plan {
        None => failures.push(Failure::NoPlan),
        Some(planned) if report.tests.len() < planned => {
            failures.push(Failure::ShortRun {
                planned,
                seen: report.tests.len(),
            });
            if report.bail_out.is_none() {
                let problem = first_splat.as_ref().map(|s| s.line.clone());
                match died_during(console, report) {
                    Some((test, true)) => failures.push(Failure::DiedDuring { test, problem }),
                    Some((test, false)) => failures.push(Failure::DiedAfter { test, problem }),
                    None => {}
                }
            }
        }
        Some(_) => {}
    }
    if let Some(what) = numbering(report) {
        failures.push(Failure::Numbering(what));
    }
    let failed: Vec<String> = report
        .tests
        .iter()
        .filter_map(|t| {
            // A failing test with subtests (the KUnit suites the first test relays) is named
            // with its failing leaves: `module_kunit_suites_pass (pcmsig_stream.ring_wraps)`.
            let leaves = failing_leaves(t);
            if leaves.is_empty() {
                (t.status == Status::NotOk).then(|| t.name.clone())
            } else {
                Some(format!("{} ({})", t.name, leaves.join(", ")))
            }
        })
        .collect();
    if !failed.is_empty() {
        failures.push(Failure::Failed(failed));
    }
    failures
}

/// The failed tests below `t`, as dotted paths under it, the deepest of each branch: a `not ok`
/// test fails its parents, whatever they reported (KTAP: a test fails if a subtest does).
fn failing_leaves(t: &TestCase) -> Vec<String> {
    fn walk(tests: &[TestCase], prefix: &str, out: &mut Vec<String>) {
        for t in tests {
            let path = if prefix.is_empty() {
                t.name.clone()
            } else {
                format!("{prefix}.{}", t.name)
            };
            let before = out.len();
            walk(&t.subtests, &path, out);
            if out.len() == before && t.status == Status::NotOk {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&t.subtests, "", &mut out);
    out
}

/// Whether top-level test `t` failed: `not ok`, or a subtest of it was.
fn failed(t: &TestCase) -> bool {
    t.status == Status::NotOk || !failing_leaves(t).is_empty()
}

/// The skip rule (`pcmsig_contract::SKIPS`) for a VM with or without the `edu` device, on a
/// kernel that has what `kernel` says: every skip must be allowed there, and every test that
/// must skip there and reported must have skipped.
#[cfg(test)]
pub fn skip_failures(report: &Report, edu: bool, kernel: KernelHas) -> Vec<Failure> {
    skip_failures_with(report, &|name| {
        pcmsig_contract::must_skip(name, edu, kernel)
    })
}

/// [`skip_failures`] under any suite's skip rule (as [`judge_with`] takes it).
fn skip_failures_with(report: &Report, rule: &dyn Fn(&str) -> Option<bool>) -> Vec<Failure> {
    let (mut wrong, mut missing) = (Vec::new(), Vec::new());
    for t in &report.tests {
        let must = rule(&t.name);
        match (&t.status, must) {
            (Status::Skip(reason), None | Some(false)) => {
                wrong.push((t.name.clone(), reason.clone()));
            }
            (Status::Ok | Status::NotOk, Some(true)) => missing.push(t.name.clone()),
            _ => {}
        }
    }
    let mut failures = Vec::new();
    if !wrong.is_empty() {
        failures.push(Failure::WrongSkip(wrong));
    }
    if !missing.is_empty() {
        failures.push(Failure::MissingSkip(missing));
    }
    failures
}

/// The test a short run ended in: the last one started, and whether it was still running
/// (`false`: it had reported its result, the next had not begun).
fn died_during(console: &str, report: &Report) -> Option<(String, bool)> {
    let name = last_started_test(console)?;
    let reported = report.tests.iter().any(|t| t.name == name);
    Some((name, !reported))
}

/// `(test, detector)` for every test the verdict blames: a failed test (`not ok`, or over a
/// `not ok` subtest; the detector from its
/// `kernel problem (CLASS)` diagnostic, else `test` for its own assertion) and the test during
/// which the guest died (the console problem's class).
pub fn blamed(report: &Report, failures: &[Failure]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in report.tests.iter().filter(|t| failed(t)) {
        let class = t
            .diagnostics
            .iter()
            .find_map(|d| pcmsig_contract::problem_diag_class(d).map(str::to_string))
            .unwrap_or_else(|| "test".to_string());
        out.push((t.name.clone(), class));
    }
    for f in failures {
        if let Failure::DiedDuring { test, problem } | Failure::DiedAfter { test, problem } = f {
            let class = problem
                .as_deref()
                .and_then(problem_in)
                .map_or("stopped", |p| p.class);
            out.push((test.clone(), class.to_string()));
        }
    }
    out
}

/// A finished VM made from its channels' text, for the host tests of the verdict and its reports.
#[cfg(test)]
pub(crate) fn finished(console: &str, ktap: &str, ending: Ending) -> crate::vm::Finished {
    crate::vm::Finished {
        console: console.to_string(),
        ending,
        wall: std::time::Duration::from_secs(1),
        first_ktap: None,
        console_log: "console.txt".into(),
        ktap: ktap.to_string(),
        ktap_log: "ktap.txt".into(),
        dmesg_log: "dmesg.txt".into(),
        coverage_log: "coverage.txt".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_kernel_problem_is_blamed_on_the_test_running_when_it_came() {
        let m = TEST_MARKER;
        let warn = "[ 1.2] WARNING: ringbuf.c:91 at rb_write";
        let mut console = format!("[ 0.5] BUG: boot noise\n[ 1.0] {m}first\n{warn}\n");
        // The report's own lines (up to 30) are one report, not 30.
        for _ in 0..5 {
            console.push_str("[ 1.2] Call Trace:\n");
        }
        console.push_str(&format!("[ 1.3] {m}second\n[ 1.4] ok\n[ 1.5] {m}third\n"));
        console.push_str("[ 1.6] BUG: KASAN: slab-out-of-bounds in x\n");
        assert_eq!(
            splat_blame(&console),
            [
                ("first".to_string(), "warning".to_string()),
                ("third".to_string(), "KASAN".to_string()),
            ]
        );
        // A report's lines are one report: its Call Trace (a class of its own) is not another;
        // a report 30 lines on is one of its own; a second one of a class is one entry.
        let mut again = format!("[ 1.0] {m}only\n[ 1.0] x\n[ 1.1] BUG: KASAN: use-after-free\n");
        for _ in 0..28 {
            again.push_str("[ 1.1] Call Trace:\n");
        }
        again.push_str("[ 1.1] filler\n[ 1.2] INFO: task x blocked for more than 30 s\n");
        for _ in 0..29 {
            again.push_str("[ 1.1] filler\n");
        }
        again.push_str("[ 1.3] BUG: KASAN: slab-out-of-bounds\n");
        assert_eq!(
            splat_blame(&again),
            [
                ("only".to_string(), "KASAN".to_string()),
                ("only".to_string(), "hung-task".to_string()),
            ]
        );
        assert!(splat_blame("[ 0.1] BUG: before any test\n").is_empty());
    }

    #[test]
    fn judge_with_adds_the_console_blame_once_and_applies_its_skip_rule() {
        let m = TEST_MARKER;
        let console = format!("[ 1.0] {m}a\n[ 1.1] WARNING: at x\n");
        let ktap =
            "KTAP version 1\n1..2\n# kernel problem (warning) at x\nnot ok 1 a\nok 2 b # SKIP no\n";
        let run = finished(&console, ktap, Ending::Exited(Some(0)));
        let j = judge_with(&run, &|_| None);
        assert_eq!(j.blamed, [("a".to_string(), "warning".to_string())]);
        assert!(j
            .failures
            .iter()
            .any(|f| matches!(f, Failure::WrongSkip(w) if w[0].0 == "b")));
        // Where the rule says b must skip, its skip is no failure.
        let j = judge_with(&run, &|n| (n == "b").then_some(true));
        assert!(!j
            .failures
            .iter()
            .any(|f| matches!(f, Failure::WrongSkip(_) | Failure::MissingSkip(_))));
    }

    use super::*;

    #[test]
    fn clean_strips_a_printk_stamp_and_nothing_that_only_looks_like_one() {
        assert_eq!(clean("[    1.234567] ok 1 a"), "ok 1 a");
        assert_eq!(clean("[abc] ok 1 a"), "[abc] ok 1 a");
        assert_eq!(clean("[] ok 1 a"), "[] ok 1 a");
        assert_eq!(clean("[   ] ok 1 a"), "[   ] ok 1 a");
    }

    const GOOD: &str = "\
[    0.712345] Run /init as init process
KTAP version 1
1..3
[    0.801000] pcmsig: loading out-of-tree module taints kernel.
ok 1 register_and_receive
# injected 3 events
ok 2 sigtimedwait_times_out
ok 3 needs_edu # SKIP no edu device
";

    #[test]
    fn parses_results_amid_kernel_noise_and_timestamps() {
        let r = parse(GOOD);
        assert!(r.header);
        assert_eq!(r.plan, Some(3));
        assert_eq!(r.tests.len(), 3);
        assert_eq!(r.tests[0].name, "register_and_receive");
        assert_eq!(
            r.tests[1].diagnostics,
            vec!["injected 3 events".to_string()]
        );
        assert_eq!(r.tests[2].status, Status::Skip("no edu device".into()));
        assert_eq!(
            r.counts(),
            Counts {
                passed: 2,
                failed: 0,
                skipped: 1
            }
        );
        assert!(verdict(GOOD, &r, &Ending::Exited(Some(0))).is_empty());
    }

    #[test]
    fn durations_are_taken_out_of_the_diagnostics_and_rank_the_slowest() {
        let ktap = format!(
            "KTAP version 1\n1..3\n# {}\nok 1 quick\n# left 1, right 2\n# {}\nnot ok 2 slow\nok 3 untimed\n",
            pcmsig_contract::duration_diag(40),
            pcmsig_contract::duration_diag(2500),
        );
        let r = parse(&ktap);
        assert_eq!(r.tests[0].duration_ms, Some(40));
        assert_eq!(r.tests[1].duration_ms, Some(2500));
        assert_eq!(r.tests[1].diagnostics, vec!["left 1, right 2".to_string()]);
        assert_eq!(r.tests[2].duration_ms, None);
        assert_eq!(r.slowest(3).as_deref(), Some("slow 2.5 s, quick 0.0 s"));
        assert_eq!(r.slowest(1).as_deref(), Some("slow 2.5 s"));
        assert_eq!(parse("KTAP version 1\n1..1\nok 1 a\n").slowest(3), None);
    }

    #[test]
    fn timestamps_crlf_and_ansi_are_stripped() {
        let console =
            "\x1b[0m[    1.000000] KTAP version 1\r\n[    1.000001] 1..1\r\n[    1.2] ok 1 a\r\n";
        let r = parse(console);
        assert_eq!(r.plan, Some(1));
        assert_eq!(r.tests[0].name, "a");
        assert!(verdict(console, &r, &Ending::Exited(Some(0))).is_empty());
    }

    #[test]
    fn nested_subtests_attach_to_their_parent() {
        let console = "\
KTAP version 1
1..2
    KTAP version 1
    # Subtest: ordering
    1..2
    ok 1 fifo
    not ok 2 rt_before_standard
not ok 1 ordering
ok 2 other
";
        let r = parse(console);
        assert_eq!(r.tests.len(), 2);
        let sub = &r.tests[0].subtests;
        assert_eq!(sub.len(), 2);
        assert_eq!(sub[1].name, "rt_before_standard");
        assert_eq!(sub[1].status, Status::NotOk);
        assert_eq!(r.tests[1].subtests.len(), 0);
        let v = verdict(console, &r, &Ending::Exited(Some(0)));
        assert_eq!(
            v,
            vec![Failure::Failed(
                vec!["ordering (rt_before_standard)".into()]
            )]
        );
    }

    #[test]
    fn only_the_contracts_skips_pass_and_each_where_it_must() {
        let edu = "edu_periods_come_from_device_interrupts";
        const KMEMLEAK: KernelHas = KernelHas {
            kmemleak: true,
            fault_injection: false,
        };
        let ktap = |edu_line: &str, other: &str| {
            format!("KTAP version 1\n1..3\nok 1 a\n{edu_line}\n{other}\n")
        };
        // The plain VM on the normal kernel: the edu test must skip, nothing else may.
        let good = ktap(
            &format!("ok 2 {edu} # SKIP no edu device in this VM"),
            "ok 3 kmemleak_finds_no_leak # SKIP no kmemleak in this kernel",
        );
        assert_eq!(
            skip_failures(&parse(&good), false, KernelHas::default()),
            vec![]
        );
        // A failure whose reason reads SKIP is a skip in KTAP: not allowed for this test.
        let sneaky = ktap(
            &format!("ok 2 {edu} # SKIP no edu device in this VM"),
            "ok 3 read_records_match_the_signals # SKIP: reading failed",
        );
        assert_eq!(
            skip_failures(&parse(&sneaky), false, KernelHas::default()),
            vec![Failure::WrongSkip(vec![(
                "read_records_match_the_signals".into(),
                ": reading failed".into()
            )])]
        );
        // In the edu VM the edu test must run; on the debug kernel the kmemleak test must run.
        assert_eq!(
            skip_failures(&parse(&good), true, KMEMLEAK),
            vec![Failure::WrongSkip(vec![
                (edu.into(), "no edu device in this VM".into()),
                (
                    "kmemleak_finds_no_leak".into(),
                    "no kmemleak in this kernel".into()
                ),
            ])]
        );
        // Running where it must skip: its condition was misread.
        let ran = ktap(&format!("ok 2 {edu}"), "ok 3 kmemleak_finds_no_leak");
        assert_eq!(
            skip_failures(&parse(&ran), false, KMEMLEAK),
            vec![Failure::MissingSkip(vec![edu.into()])]
        );
    }

    #[test]
    fn every_test_the_skip_contract_names_exists() {
        let tests = crate::paths::guest_test_sources();
        for (name, _) in pcmsig_contract::SKIPS {
            assert!(tests.contains(&format!("fn {name}()")), "no test {name}");
        }
    }

    #[test]
    fn not_ok_fails_the_run() {
        let console = "KTAP version 1\n1..2\nok 1 a\nnot ok 2 b\n# expected 3, got 2\n";
        let r = parse(console);
        assert_eq!(
            verdict(console, &r, &Ending::Exited(Some(0))),
            vec![Failure::Failed(vec!["b".into()])]
        );
    }

    #[test]
    fn missing_plan_fails_the_run() {
        let console = "KTAP version 1\nok 1 a\n";
        let r = parse(console);
        assert_eq!(
            verdict(console, &r, &Ending::Exited(Some(0))),
            vec![Failure::NoPlan]
        );
    }

    #[test]
    fn truncated_run_fails_as_short() {
        let console = "KTAP version 1\n1..4\nok 1 a\nok 2 b\nok 3 c";
        let r = parse(console);
        assert_eq!(
            verdict(console, &r, &Ending::Exited(Some(0))),
            vec![Failure::ShortRun {
                planned: 4,
                seen: 3
            }]
        );
    }

    #[test]
    fn no_ktap_at_all_fails() {
        let console = "[    0.5] Run /init as init process\n/init: not found\n";
        let r = parse(console);
        assert_eq!(
            verdict(console, &r, &Ending::Exited(Some(0))),
            vec![Failure::NoKtap]
        );
    }

    #[test]
    fn kernel_panic_oops_bug_and_warning_fail_even_with_all_tests_ok() {
        for noise in [
            "[    2.0] Kernel panic - not syncing: sysrq triggered crash",
            "[    2.0] Oops: general protection fault, probably for non-canonical address",
            "[    2.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "[    2.0] WARNING: CPU: 1 PID: 42 at kernel/signal.c:1234 foo+0x10/0x20",
        ] {
            let console = format!("KTAP version 1\n1..1\n{noise}\nok 1 a\n");
            let r = parse(&console);
            let v = verdict(&console, &r, &Ending::Exited(Some(0)));
            assert!(
                matches!(v.as_slice(), [Failure::KernelProblem(_)]),
                "{noise}: {v:?}"
            );
        }
    }

    #[test]
    fn timeout_and_qemu_death_fail() {
        let r = parse(GOOD);
        assert_eq!(
            verdict(GOOD, &r, &Ending::TimedOut(5)),
            vec![Failure::TimedOut(5)]
        );
        assert_eq!(
            verdict(GOOD, &r, &Ending::Exited(Some(1))),
            vec![Failure::QemuFailed(Some(1))]
        );
    }

    #[test]
    fn a_guest_death_is_blamed_on_the_test_that_was_running() {
        let ktap = "KTAP version 1\n1..3\nok 1 first\n";
        let console = "[ 1.0] pcmsig-tests: begin first\n[ 1.1] pcmsig-tests: begin second\n\
                       [ 1.2] BUG: KASAN: slab-use-after-free in send_sig_info+0x1/0x2\n\
                       [ 1.2] Call Trace:\n[ 1.3] Kernel panic - not syncing: KASAN: panic_on_warn set ...\n";
        let r = parse(ktap);
        let v = verdict(console, &r, &Ending::Exited(Some(0)));
        let kasan = "BUG: KASAN: slab-use-after-free in send_sig_info+0x1/0x2";
        assert_eq!(
            v,
            vec![
                Failure::KernelProblem(kasan.into()),
                Failure::ShortRun {
                    planned: 3,
                    seen: 1
                },
                Failure::DiedDuring {
                    test: "second".into(),
                    problem: Some(kasan.into())
                },
            ]
        );
        assert_eq!(blamed(&r, &v), vec![("second".into(), "KASAN".into())]);
        let s = splats(console);
        assert_eq!(s.len(), 1, "one report, however many lines match: {s:?}");
        assert!(s[0].text.contains("Call Trace:"));
    }

    #[test]
    fn a_death_between_tests_is_blamed_on_the_one_that_had_just_finished() {
        let ktap = "KTAP version 1\n1..2\n# 5 events\nok 1 first\n";
        let console = "[ 1.0] pcmsig-tests: begin first\n\
                       [ 1.1] BUG: KASAN: slab-use-after-free in rcu_cblist_dequeue+0x2e/0x60\n";
        let r = parse(ktap);
        let v = verdict(console, &r, &Ending::Panicked);
        assert!(v.contains(&Failure::DiedAfter {
            test: "first".into(),
            problem: Some("BUG: KASAN: slab-use-after-free in rcu_cblist_dequeue+0x2e/0x60".into())
        }));
        assert_eq!(blamed(&r, &v), vec![("first".into(), "KASAN".into())]);
    }

    #[test]
    fn a_problem_the_suite_found_blames_its_test_and_its_detector() {
        let ktap =
            "KTAP version 1\n1..2\nok 1 a\n# kernel problem (lockdep) while this test ran:\n\
                    # kernel: WARNING: possible circular locking dependency detected\nnot ok 2 b\n";
        let r = parse(ktap);
        let v = verdict("", &r, &Ending::Exited(Some(0)));
        assert_eq!(v, vec![Failure::Failed(vec!["b".into()])]);
        assert_eq!(blamed(&r, &v), vec![("b".into(), "lockdep".into())]);
        let plain = parse("KTAP version 1\n1..1\n# expected 3, got 2\nnot ok 1 c\n");
        assert_eq!(blamed(&plain, &[]), vec![("c".into(), "test".into())]);
    }

    #[test]
    fn leaves_are_counted_like_kunit_py() {
        let r = parse(
            "KTAP version 1\n1..2\n    KTAP version 1\n    1..2\n        1..2\n        ok 1 a\n\
             \x20       not ok 2 b\n    not ok 1 s\n        1..1\n        ok 1 c # SKIP no\n\
             \x20   ok 2 t\nnot ok 1 kunit\nok 2 plain\n",
        );
        assert_eq!(
            r.counts(),
            Counts {
                passed: 1,
                failed: 1,
                skipped: 0
            }
        );
        assert_eq!(
            r.leaf_counts(),
            Counts {
                passed: 2,
                failed: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn numbers_must_run_1_to_n_without_duplicates_gaps_or_excess() {
        for (ktap, what) in [
            ("KTAP version 1\n1..2\nok 1 a\nok 1 b\n", "duplicate"),
            ("KTAP version 1\n1..2\nok 2 a\nok 1 b\n", "out of order"),
            ("KTAP version 1\n1..3\nok 1 a\nok 3 b\nok 4 c\n", "gap"),
            ("KTAP version 1\n1..1\nok 1 a\nok 2 b\n", "beyond the plan"),
        ] {
            let r = parse(ktap);
            let v = verdict("", &r, &Ending::Exited(Some(0)));
            assert!(
                v.iter().any(|f| matches!(f, Failure::Numbering(_))),
                "{what}: {v:?}"
            );
        }
        let good = "KTAP version 1\n1..2\nok 1 a\nok 2 b\n";
        assert!(verdict("", &parse(good), &Ending::Exited(Some(0))).is_empty());
    }

    #[test]
    fn an_empty_plan_with_a_bail_out_fails() {
        let ktap = "KTAP version 1\n1..0\nBail out! no test matches --filter typo*\n";
        let v = verdict("", &parse(ktap), &Ending::Exited(Some(0)));
        assert_eq!(
            v,
            vec![Failure::BailOut("no test matches --filter typo*".into())]
        );
    }

    #[test]
    fn silence_fails() {
        let r = parse(GOOD);
        assert_eq!(
            verdict(GOOD, &r, &Ending::Silent(60)),
            vec![Failure::Silent(60)]
        );
    }

    #[test]
    fn bail_out_fails() {
        let console = "KTAP version 1\n1..2\nok 1 a\nBail out! /dev/pcmsig missing\n";
        let r = parse(console);
        let v = verdict(console, &r, &Ending::Exited(Some(0)));
        assert!(v.contains(&Failure::BailOut("/dev/pcmsig missing".into())));
        assert!(v.contains(&Failure::ShortRun {
            planned: 2,
            seen: 1
        }));
    }

    #[test]
    fn result_line_formats() {
        assert_eq!(
            parse_result("ok 7 - name # SKIP why"),
            Some((true, 7, "name".into(), Some("why".into())))
        );
        assert_eq!(
            parse_result("not ok 12 x"),
            Some((false, 12, "x".into(), None))
        );
        assert_eq!(parse_result("ok x"), None);
        assert_eq!(parse_result("okay"), None);
    }

    #[test]
    fn a_failing_subtest_fails_its_parent_whatever_the_parent_reported() {
        let ktap = "KTAP version 1\n1..2\n    KTAP version 1\n    1..2\n        1..1\n        \
                    not ok 1 ring\n    ok 1 pcmsig_stream\n        1..1\n        ok 1 rule\n    \
                    not ok 2 pcmsig_signal\nok 1 module_kunit_suites_pass\nok 2 other\n";
        let r = parse(ktap);
        let v = verdict("", &r, &Ending::Exited(Some(0)));
        assert_eq!(
            v,
            vec![Failure::Failed(vec![
                "module_kunit_suites_pass (pcmsig_stream.ring, pcmsig_signal)".into()
            ])]
        );
        assert_eq!(
            blamed(&r, &v),
            vec![("module_kunit_suites_pass".into(), "test".into())]
        );
    }

    #[test]
    fn judge_reads_ktap_from_its_port_and_kernel_problems_from_the_console() {
        let bug = "BUG: KASAN: slab-use-after-free in send_sig_info+0x1/0x2";
        let ktap = "KTAP version 1\n1..2\nok 1 a\n";
        let console = format!("pcmsig-tests: begin a\npcmsig-tests: begin b\n{bug}\n");
        let j = judge(
            &finished(&console, ktap, Ending::Panicked),
            false,
            KernelHas::default(),
        );
        assert_eq!(j.report, parse(ktap));
        assert_eq!(
            j.failures,
            vec![
                Failure::KernelProblem(bug.into()),
                Failure::ShortRun {
                    planned: 2,
                    seen: 1
                },
                Failure::DiedDuring {
                    test: "b".into(),
                    problem: Some(bug.into())
                },
            ]
        );
        assert_eq!(j.blamed, vec![("b".into(), "KASAN".into())]);
        // A problem's words in the KTAP (a test's quoted diagnostic) are not the console's.
        let quoted = format!("KTAP version 1\n1..1\n# {bug}\nok 1 a\n");
        let j = judge(
            &finished("", &quoted, Ending::Exited(Some(0))),
            false,
            KernelHas::default(),
        );
        assert_eq!(j.failures, vec![]);
        // KTAP on the console alone is no KTAP: the suite's port is the channel.
        let j = judge(
            &finished(&quoted, "", Ending::Exited(Some(0))),
            false,
            KernelHas::default(),
        );
        assert!(j.failures.contains(&Failure::NoKtap), "{:?}", j.failures);
    }

    #[test]
    fn judge_applies_the_skip_contract_of_its_vm_and_kernel() {
        let edu = "edu_periods_come_from_device_interrupts";
        let ktap = format!("KTAP version 1\n1..2\nok 1 {edu} # SKIP no edu\nok 2 kmemleak_finds_no_leak # SKIP no kmemleak\n");
        let run = finished("", &ktap, Ending::Exited(Some(0)));
        assert_eq!(judge(&run, false, KernelHas::default()).failures, vec![]);
        let wrong = |name: &str, why: &str| Failure::WrongSkip(vec![(name.into(), why.into())]);
        assert_eq!(
            judge(&run, true, KernelHas::default()).failures,
            vec![wrong(edu, "no edu")]
        );
        let kmemleak = KernelHas {
            kmemleak: true,
            fault_injection: false,
        };
        let j = judge(&run, false, kmemleak);
        assert_eq!(
            j.failures,
            vec![wrong("kmemleak_finds_no_leak", "no kmemleak")]
        );
        assert_eq!(j.blamed, vec![]);
    }

    #[test]
    fn each_report_is_one_splat_of_its_first_30_lines_from_the_console_s_first_line_on() {
        // A WARNING on the console's very first line whose report has more matching lines
        // (Call Trace, a panic_on_warn panic), a BUG exactly 30 lines on (a new report), and
        // an oops 32 lines after that.
        let mut lines: Vec<String> = (0..65)
            .map(|i| format!("[    2.{i:06}] frame_{i}+0x10/0x20"))
            .collect();
        lines[0] =
            "[    2.000000] WARNING: CPU: 1 PID: 42 at kernel/signal.c:1234 foo+0x10/0x20".into();
        lines[3] = "[    2.000003] Call Trace:".into();
        lines[5] =
            "[    2.000005] Kernel panic - not syncing: kernel: panic_on_warn set ...".into();
        lines[30] =
            "[    2.000030] BUG: kernel NULL pointer dereference, address: 0000000000000000".into();
        lines[62] =
            "[    2.000062] Oops: general protection fault, probably for non-canonical address"
                .into();
        let console = lines.join("\n") + "\n";
        let body = |from: usize, to: usize| {
            lines[from..to]
                .iter()
                .map(|l| clean(l))
                .collect::<Vec<String>>()
                .join("\n")
        };
        let warning = "WARNING: CPU: 1 PID: 42 at kernel/signal.c:1234 foo+0x10/0x20";
        assert_eq!(
            splats(&console),
            vec![
                Splat {
                    line: warning.into(),
                    text: body(0, 30),
                },
                Splat {
                    line: "BUG: kernel NULL pointer dereference, address: 0000000000000000".into(),
                    text: body(30, 60),
                },
                Splat {
                    line: "Oops: general protection fault, probably for non-canonical address"
                        .into(),
                    text: body(62, 65),
                },
            ]
        );
        assert!(body(0, 30).starts_with(warning) && body(0, 30).ends_with("frame_29+0x10/0x20"));
        assert_eq!(kernel_problem(&console), Some(warning.to_string()));
        assert_eq!(kernel_problem(GOOD), None);
    }

    #[test]
    fn a_second_top_level_document_starts_over() {
        // The first run was cut inside a subtest (the guest rebooted); the second is whole.
        let console = "KTAP version 1\n1..2\nok 1 a\n    KTAP version 1\n    1..2\n    ok 1 sub\n\
                       # partial\nKTAP version 1\n1..1\n# 4 events\nok 1 b\n";
        let r = parse(console);
        assert_eq!(r.plan, Some(1));
        assert_eq!(
            r.tests,
            vec![TestCase {
                number: 1,
                name: "b".into(),
                status: Status::Ok,
                diagnostics: vec!["4 events".into()],
                duration_ms: None,
                subtests: Vec::new(),
            }]
        );
    }
}
