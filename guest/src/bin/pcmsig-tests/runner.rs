//! A tiny KTAP v1 test runner: each test runs in a forked child, so that signal masks,
//! handlers, rlimits and threads of one test cannot leak into the next, and a crash or hang
//! becomes a `not ok` line instead of ending the suite.
//!
//! Nothing a test starts outlives it: the child leads its own process group, the runner is the
//! subreaper of everything below it, and after each test the group is killed and every process
//! left is killed and reaped. A test that did not pass is followed by a module reload (its
//! stream, its files' state and its hooks gone); when the module cannot be restored the suite
//! bails out, naming why, and the tests after it are reported as not run, never as failed.
//!
//! A test is killed when it makes no progress for its limit: the per-test base
//! (`PCMSIG_TEST_TIMEOUT`) times the VM's pace, measured against a fixed piece of work when the
//! suite starts and again before a test is declared stuck; each [`Progress`] report restarts
//! the count.

use std::io::Write;
use std::time::Duration;

/// A test: its name (what behaviour it pins down) and its body.
pub struct Test {
    pub name: &'static str,
    pub run: fn() -> TestResult,
}

/// `Err` holds the reason, printed as a KTAP diagnostic.
pub type TestResult = Result<(), String>;

/// Seconds a test may take before it is killed and reported `not ok`: `PCMSIG_TEST_TIMEOUT`
/// (the host raises it for the debug kernel, several times slower), else
/// [`TEST_TIMEOUT_AT_REFERENCE_S`].
pub fn test_timeout_s() -> u32 {
    std::env::var(pcmsig_contract::env::TEST_TIMEOUT)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(TEST_TIMEOUT_AT_REFERENCE_S)
}

/// The per-test base on the normal kernel, the reference pace's.
const TEST_TIMEOUT_AT_REFERENCE_S: u32 = 30;

/// Whether the suite stops at its first failure (`PCMSIG_FAIL_FAST=1`: `cargo xtask test
/// --fail-fast`, and every mutant's run, where one failure is the whole answer).
fn fail_fast() -> bool {
    std::env::var(pcmsig_contract::FAIL_FAST_ENV).is_ok_and(|v| v == "1")
}

/// The longest a test may wait for one thing before failing with what it saw: two thirds of the
/// per-test base at the reference pace (20 s; less where the host lowers the base, as for the
/// mutants' runs), times the VM's pace, so that a wait that never ends is reported by its own
/// message rather than by the runner, which says only that time ran out. Not the debug
/// kernel's raised base: its slowness is in the measured pace already (at the 10x cap there:
/// 200 s), and counting it twice made a failing wait there take 1,600 s.
pub fn hang_guard() -> std::time::Duration {
    let base = test_timeout_s().min(TEST_TIMEOUT_AT_REFERENCE_S);
    paced(std::time::Duration::from_secs(u64::from(base) * 2 / 3))
}

/// The VM's pace factor as the runner measured it before the test started (see
/// [`Limits`]), as `f64` bits: the runner stores it before each fork, so the test's process
/// inherits it. 1 outside the runner.
static PACE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1f64.to_bits());

/// How many times slower than the reference pace the VM ran when the test started (1 to
/// [`PACE_CAP`]).
pub fn pace() -> f64 {
    f64::from_bits(PACE.load(std::sync::atomic::Ordering::Relaxed))
}

/// A hang guard written for the reference pace, scaled by the VM's measured pace: every wait a
/// test gives up on is one of these (or [`hang_guard`], or [`wait`]), never fixed seconds, so
/// that a slow or crowded machine slows the guards with the tests (`cargo xtask test --slow N`).
pub fn paced(at_reference: Duration) -> Duration {
    at_reference.mul_f64(pace())
}

/// How long tests wait for a signal that should come: a hang guard, far above any honest
/// delivery (milliseconds, also on the debug kernel on a slow machine), never a measure: 10 s
/// at the reference pace, [`paced`].
pub fn wait() -> Duration {
    paced(WAIT_AT_REFERENCE)
}

const WAIT_AT_REFERENCE: Duration = Duration::from_secs(10);

/// The write end of the heartbeat pipe in a test's process (-1 elsewhere): each [`Progress`]
/// report writes a byte there, which restarts the runner's count of the test's time.
static HEARTBEAT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Tells the runner that the test progresses (no-op outside a test's process).
fn beat() {
    let fd = HEARTBEAT.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: `fd` is the pipe's write end, open (O_NONBLOCK) for the test process's life; a
        // full pipe (EAGAIN) already holds a beat the runner has not read.
        unsafe { libc::write(fd, b"p".as_ptr().cast(), 1) };
    }
}

/// The fixed piece of work that measures the VM's pace: thread starts and forks, the costs
/// the tests are made of. Its time on the normal kernel under TCG, on the project's quiet 2-core
/// machine, is [`PACE_REFERENCE`]. Takes the best of three samples, so one preemption does not
/// count; stops after one that is past twice the cap (the factor is the cap whatever the others
/// show, unless they ran over twice as fast: the debug kernel's samples take 5 s each, and the
/// three of them were 15 s of every boot there).
fn pace_sample() -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        best = best.min(pace_sample_once());
        if best > PACE_REFERENCE.mul_f64(2.0 * PACE_CAP) {
            break;
        }
    }
    best
}

fn pace_sample_once() -> Duration {
    let t = std::time::Instant::now();
    for _ in 0..PACE_ROUNDS {
        let _ = std::thread::spawn(|| std::hint::black_box(0u64)).join();
        // SAFETY: the child only calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
    t.elapsed()
}

/// Rounds of one [`pace_sample`].
const PACE_ROUNDS: usize = 40;
/// [`pace_sample`] on the normal kernel under TCG on a quiet 2-core machine (2 vCPUs).
const PACE_REFERENCE: Duration = Duration::from_millis(PACE_REFERENCE_MS);
const PACE_REFERENCE_MS: u64 = 40;
/// The largest pace factor a limit is scaled by: past it the VM is not slow but stuck.
const PACE_CAP: f64 = 10.0;

/// How many times slower than the reference this VM runs now (at least 1, at most
/// [`PACE_CAP`]), with the sample it was derived from.
fn pace_factor() -> (f64, Duration) {
    let sample = pace_sample();
    let factor = (sample.as_secs_f64() / PACE_REFERENCE.as_secs_f64()).clamp(1.0, PACE_CAP);
    (factor, sample)
}

use pcmsig_contract::{duration_diag, problem_in, TEST_MARKER};

/// Prints a diagnostic line.
pub fn diag(msg: &str) {
    let mut out = std::io::stdout().lock();
    for line in msg.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let _ = out.flush();
}

/// A long test's sign of life: a `# progress` diagnostic, at most every 2 s, so that the
/// host's silence watchdog (which counts KTAP output) tells a slow test from a stuck guest.
/// Printed only when the test makes progress: a test stuck between two calls says nothing.
pub struct Progress {
    what: &'static str,
    last: std::time::Instant,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        Progress {
            what,
            last: std::time::Instant::now(),
        }
    }

    /// Reports `done` of `total`, if 2 s have passed since the last report: to the host (a
    /// diagnostic) and to the runner (a heartbeat: a test that progresses is not killed).
    pub fn step(&mut self, done: usize, total: usize) {
        if self.last.elapsed() >= Duration::from_secs(2) {
            diag(&format!("progress: {} {done} of {total}", self.what));
            beat();
            self.last = std::time::Instant::now();
        }
    }
}

/// Waits until everything written to standard output has left (a serial port drains slowly).
pub fn drain_output() {
    let _ = std::io::stdout().flush();
    // Fails harmlessly when stdout is not a tty.
    let _ = nix::sys::termios::tcdrain(std::io::stdout());
}

/// Runs the tests matching `filter`, printing KTAP; returns the number that failed, or `None`
/// when the filter matches no test (a bail-out: a typo must not pass). After a test that did not
/// pass, `restore` puts the device back as the suite found it (the module reloaded); when it
/// cannot, the suite bails out and the remaining tests are not run.
pub fn run(
    tests: &[Test],
    filter: Option<&str>,
    restore: &dyn Fn() -> Result<(), String>,
) -> Option<usize> {
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| filter.is_none_or(|f| pcmsig_contract::filter_matches(f, t.name)))
        .collect();
    println!("KTAP version 1");
    if selected.is_empty() {
        println!("1..0");
        println!(
            "Bail out! no test matches --filter {}",
            filter.unwrap_or("")
        );
        drain_output();
        return None;
    }
    println!("1..{}", selected.len());
    let names: Vec<&str> = selected.iter().map(|t| t.name).collect();
    if let Err(e) = crate::coverage::begin(&names) {
        diag(&format!("coverage: {e}"));
    }
    let mut log = KernelLog::open();
    if log.is_none() {
        diag("/dev/kmsg cannot be read: kernel problems are not attributed to tests");
    }
    // Every process a test leaves behind becomes the runner's child, to be killed and reaped.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        diag("PR_SET_CHILD_SUBREAPER failed: a test's stray processes may outlive it");
    }
    let mut limits = Limits::measure();
    let mut failed = 0;
    for (i, t) in selected.iter().enumerate() {
        let _ = std::io::stdout().flush();
        mark(t.name);
        crate::coverage::enter_test(i as u32 + 1);
        let started = std::time::Instant::now();
        let mut outcome = run_one(t, &mut limits);
        let strays = kill_strays();
        if strays > 0 {
            diag(&format!(
                "the test left {strays} process(es) running: killed and reaped"
            ));
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        crate::coverage::enter_test(0);
        // Everything the kernel logged while the test ran, in log order: a problem there fails
        // this test, whatever its own verdict.
        if let Some(problem) = log.as_mut().and_then(KernelLog::problem) {
            diag(&problem);
            outcome = Outcome::Fail;
        }
        diag(&duration_diag(ms));
        match outcome {
            Outcome::Pass => println!("ok {} {}", i + 1, t.name),
            Outcome::Skip(ref why) => println!("ok {} {} # SKIP {why}", i + 1, t.name),
            Outcome::Fail => {
                println!("not ok {} {}", i + 1, t.name);
                failed += 1;
            }
        }
        let _ = std::io::stdout().flush();
        if matches!(outcome, Outcome::Fail) {
            // What the failed test left in the module (its stream, hooks, delay points) must
            // not reach the next test.
            if let Err(e) = restore() {
                println!(
                    "Bail out! after {} failed, the module could not be restored ({e}): the \
                     {} tests after it did not run",
                    t.name,
                    selected.len() - i - 1
                );
                break;
            }
            diag("the module was reloaded after this failure");
            if fail_fast() {
                println!(
                    "Bail out! {} failed and {}=1 stops at the first failure: the {} tests \
                     after it did not run",
                    t.name,
                    pcmsig_contract::FAIL_FAST_ENV,
                    selected.len() - i - 1
                );
                break;
            }
        }
    }
    crate::coverage::send_table();
    drain_output();
    Some(failed)
}

/// The kernel log, read record by record from `/dev/kmsg` (each record whole, in sequence
/// order, unlike the console, whose output is asynchronous).
pub struct KernelLog {
    fd: std::os::fd::OwnedFd,
}

/// Log lines kept after the first line of a problem, as the test's diagnostics.
const PROBLEM_LINES: usize = 24;

impl KernelLog {
    /// Opens the log at its first record still in the buffer.
    fn from_start() -> Option<Self> {
        use nix::fcntl::{open, OFlag};
        let fd = open(
            "/dev/kmsg",
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        Some(Self { fd })
    }

    /// Opens the log positioned after its last record.
    pub fn open() -> Option<Self> {
        let log = Self::from_start()?;
        nix::unistd::lseek(&log.fd, 0, nix::unistd::Whence::SeekEnd).ok()?;
        Some(log)
    }

    /// The messages of the records logged since the last call.
    pub fn take(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) => break,
                // `PREFIX;message\n` then ` KEY=value` dictionary lines.
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let first = rec.lines().next().unwrap_or("");
                    if let Some((_, msg)) = first.split_once(';') {
                        out.push(msg.to_string());
                    }
                }
                // Records overwritten before we read them: go on with the next one.
                Err(nix::errno::Errno::EPIPE) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// The first kernel problem logged since the last call, with the lines that follow it.
    fn problem(&mut self) -> Option<String> {
        let lines = self.take();
        let (at, p) = lines
            .iter()
            .enumerate()
            .find_map(|(i, l)| problem_in(l).map(|p| (i, p)))?;
        let mut text = pcmsig_contract::problem_diag(p.class, " while this test ran:");
        for l in lines.iter().skip(at).take(PROBLEM_LINES) {
            text.push_str("\nkernel: ");
            text.push_str(l.trim_end());
        }
        Some(text)
    }
}

/// What a test's result means for its KTAP line.
enum Outcome {
    Pass,
    Skip(String),
    Fail,
}

/// Prefix of a test's `Err` that means "skipped" rather than "failed".
pub const SKIP: &str = "SKIP: ";

/// Exit code of a skipped test's process; the reason travels through a pipe.
const SKIP_EXIT: i32 = 77;

/// The module's in-kernel KUnit suites (those named `{prefix}...`), as they ran when the module
/// was loaded: their KTAP, taken from the kernel log (every record from the start), printed as
/// the subtests of the current test. Returns the suites that did not pass.
pub fn relay_kunit_suites(prefix: &str) -> Result<Vec<String>, String> {
    let lines = KernelLog::from_start()
        .ok_or("/dev/kmsg cannot be read")?
        .take();
    // A suite: `    KTAP version 1`, `    # Subtest: NAME`, its cases, then `[not ]ok N NAME`.
    let mut suites: Vec<(String, Vec<String>, bool)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let name = lines[i].trim_start().strip_prefix("# Subtest: ");
        let Some(name) = name.filter(|n| n.starts_with(prefix)) else {
            i += 1;
            continue;
        };
        let name = name.trim().to_string();
        let start = i.saturating_sub(1);
        let end = (i..lines.len()).find(|&j| {
            let l = lines[j].as_str();
            !l.starts_with(' ')
                && (l.starts_with("ok ") || l.starts_with("not ok "))
                && l.split_whitespace()
                    .nth(if l.starts_with("ok ") { 2 } else { 3 })
                    == Some(name.as_str())
        });
        let Some(end) = end else {
            return Err(format!(
                "KUnit suite {name} has no result line in the kernel log"
            ));
        };
        // Only the first run (init's load; the unload tests load the module again).
        if !suites.iter().any(|(n, _, _)| *n == name) {
            let body = lines[start..end]
                .iter()
                .filter(|l| l.starts_with(' '))
                .cloned()
                .collect();
            suites.push((name, body, lines[end].starts_with("ok ")));
        }
        i = end + 1;
    }
    if suites.is_empty() {
        return Err(format!(
            "no KUnit suite named {prefix}* in the kernel log (CONFIG_KUNIT, the module's \
             #[kunit_tests])"
        ));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "    KTAP version 1");
    let _ = writeln!(out, "    1..{}", suites.len());
    for (n, (name, body, ok)) in suites.iter().enumerate() {
        for l in body {
            // /dev/kmsg escapes a record's inner newlines (KUnit's assertion messages have one):
            // the continuation lines become diagnostics at the same indentation.
            let indent = &l[..l.len() - l.trim_start().len()];
            for (k, piece) in l.split("\\x0a").enumerate() {
                if k == 0 {
                    let _ = writeln!(out, "    {piece}");
                } else {
                    let _ = writeln!(out, "    {indent}# {}", piece.trim_start());
                }
            }
        }
        let _ = writeln!(
            out,
            "    {} {} {name}",
            if *ok { "ok" } else { "not ok" },
            n + 1
        );
    }
    let _ = out.flush();
    Ok(suites
        .into_iter()
        .filter(|(_, _, ok)| !ok)
        .map(|(n, _, _)| n)
        .collect())
}

/// Logs the test's start in the kernel log: the host names the test that was running when the
/// guest died by the last such record on the console (a panic flushes the console).
fn mark(name: &str) {
    if let Ok(mut k) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        // One write(2): each write to /dev/kmsg is one log record.
        let _ = k.write_all(format!("{TEST_MARKER}{name}\n").as_bytes());
    }
}

/// The time a test may go without progress before it is killed.
struct Limits {
    /// `PCMSIG_TEST_TIMEOUT`: the limit at the reference pace.
    base: Duration,
    /// The VM's pace factor as last measured.
    factor: f64,
}

impl Limits {
    fn measure() -> Self {
        let (factor, sample) = pace_factor();
        let limits = Limits {
            base: Duration::from_secs(u64::from(test_timeout_s())),
            factor,
        };
        diag(&format!(
            "pace: {} ms for the sample ({} ms at the reference pace): {:.1}x, so a test is \
             killed after {} s without progress, and gives up on a signal after {} s",
            sample.as_millis(),
            PACE_REFERENCE_MS,
            limits.factor,
            limits.now().as_secs(),
            WAIT_AT_REFERENCE.mul_f64(limits.factor).as_secs()
        ));
        limits
    }

    fn now(&self) -> Duration {
        self.base.mul_f64(self.factor)
    }

    /// Measures the pace again (the machine may have become busier): whether the limit grew.
    fn remeasure(&mut self) -> bool {
        let (factor, sample) = pace_factor();
        let grew = factor > self.factor * 1.1;
        if grew {
            diag(&format!(
                "pace: {} ms for the sample now: {factor:.1}x, the limit raised to {} s",
                sample.as_millis(),
                self.base.mul_f64(factor).as_secs()
            ));
            self.factor = factor;
        }
        grew
    }
}

/// Measures the pace again with the test's process group stopped: a test spinning on a
/// single vCPU would otherwise slow the sample down itself and buy its own extension (seen: a
/// mutant's busy loop measured 10x and ran to the VM's limit). Whether the limit grew.
fn remeasure_paused(pid: libc::pid_t, limits: &mut Limits) -> bool {
    // SAFETY: signalling the test's own process group.
    unsafe { libc::kill(-pid, libc::SIGSTOP) };
    let grew = limits.remeasure();
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGCONT) };
    grew
}

/// Runs `t` in a child process of its own group; kills the group when it makes no progress for
/// the limit.
fn run_one(t: &Test, limits: &mut Limits) -> Outcome {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    let Ok((skip_rd, skip_wr)) = nix::unistd::pipe() else {
        diag("pipe failed");
        return Outcome::Fail;
    };
    let Ok((beat_rd, beat_wr)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        diag("pipe failed");
        return Outcome::Fail;
    };
    // A beat never blocks the test (a full pipe holds one already); the runner drains them.
    for fd in [beat_rd.as_fd(), beat_wr.as_fd()] {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    // The test's own hang guards scale with the pace the runner measured last.
    PACE.store(
        limits.factor.to_bits(),
        std::sync::atomic::Ordering::Relaxed,
    );
    // SAFETY: the runner is single-threaded when it forks; the child only runs the test and
    // exits with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        diag(&format!("fork failed: {}", std::io::Error::last_os_error()));
        return Outcome::Fail;
    }
    if pid == 0 {
        // Its own process group: the runner kills the test and all it started in one call.
        // SAFETY: plain syscall on ourselves.
        unsafe { libc::setpgid(0, 0) };
        HEARTBEAT.store(beat_wr.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
        std::mem::forget(beat_wr);
        let result = std::panic::catch_unwind(t.run);
        let code = match result {
            Ok(Ok(())) => 0,
            Ok(Err(reason)) if reason.starts_with(SKIP) => {
                let _ = nix::unistd::write(&skip_wr, &reason.as_bytes()[SKIP.len()..]);
                SKIP_EXIT
            }
            Ok(Err(reason)) => {
                diag(&reason);
                1
            }
            Err(_) => {
                diag("the test panicked");
                2
            }
        };
        let _ = std::io::stdout().flush();
        // SAFETY: ending the forked child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    // Also here, so that the group exists before the runner may kill it.
    // SAFETY: plain syscall on our child.
    unsafe { libc::setpgid(pid, pid) };
    drop(skip_wr);
    drop(beat_wr);
    // SAFETY: pidfd_open on our own, not yet reaped, child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = (pidfd >= 0).then(|| {
        // SAFETY: a new descriptor that only this owner closes.
        unsafe { OwnedFd::from_raw_fd(pidfd as i32) }
    });
    let mut last_progress = std::time::Instant::now();
    let mut killed_after = None;
    let mut said = std::time::Instant::now();
    let mut status = 0;
    loop {
        let mut fds = vec![libc::pollfd {
            fd: beat_rd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(p) = &pidfd {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Without a pidfd, the child's end is seen by polling waitpid.
        let wait_ms = if pidfd.is_some() { 1000 } else { 50 };
        // SAFETY: `fds` is a valid array of pollfd for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&beat_rd, &mut buf), Ok(n) if n > 0) {
            last_progress = std::time::Instant::now();
        }
        // SAFETY: waiting for our own child, without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            diag("waitpid failed");
            return Outcome::Fail;
        }
        let quiet = last_progress.elapsed();
        if killed_after.is_none() && quiet >= limits.now() && !remeasure_paused(pid, limits) {
            killed_after = Some(quiet);
            // SAFETY: signalling the test's own process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        // The host's silence limit counts output: a slow test that is still within its limit
        // says so (a stuck guest cannot).
        if said.elapsed() >= Duration::from_secs(20) && killed_after.is_none() {
            diag(&format!(
                "still running: {} s since its last progress, killed at {} s",
                quiet.as_secs(),
                limits.now().as_secs()
            ));
            said = std::time::Instant::now();
        }
    }
    if let Some(quiet) = killed_after {
        diag(&format!(
            "killed: no progress for {} s (the limit: {} s, {:.1}x the reference pace)",
            quiet.as_secs(),
            limits.now().as_secs(),
            limits.factor
        ));
        return Outcome::Fail;
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Outcome::Pass,
            SKIP_EXIT => {
                let mut why = [0u8; 256];
                let n = nix::unistd::read(&skip_rd, &mut why).unwrap_or(0);
                Outcome::Skip(String::from_utf8_lossy(&why[..n]).replace(['\n', '#'], " "))
            }
            _ => Outcome::Fail,
        }
    } else {
        let sig = libc::WTERMSIG(status);
        diag(&format!("the test process was killed by signal {sig}"));
        Outcome::Fail
    }
}

/// Kills every process left below the runner (the test's group first, then whatever escaped
/// it: the runner is their subreaper) and reaps them; returns how many there were.
fn kill_strays() -> usize {
    let me = std::process::id() as i32;
    let deadline = std::time::Instant::now() + paced(Duration::from_secs(10));
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let children = children_of(me);
        if children.is_empty() {
            break;
        }
        for &c in &children {
            seen.insert(c);
            // SAFETY: signalling our own children and their groups.
            unsafe {
                libc::kill(-c, libc::SIGKILL);
                libc::kill(c, libc::SIGKILL);
            }
        }
        let mut status = 0;
        // SAFETY: reaping our own children.
        while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
        if std::time::Instant::now() > deadline {
            diag(&format!(
                "processes {children:?} did not die within 10 s of SIGKILL (stuck in the kernel?)"
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen.len()
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
            let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
            after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) == Some(parent)
        })
        .collect()
}

/// A `Vec<Test>` of test functions, each named after its function.
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        vec![$($crate::runner::Test { name: stringify!($f), run: $f }),*]
    };
}

/// Fails with a message unless `cond`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// Fails unless `a == b`, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!(
                "{}:{}: {} == {} failed\n  left:  {:?}\n  right: {:?}",
                file!(), line!(), stringify!($a), stringify!($b), a, b
            ));
        }
    }};
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!(
                "{}:{}: {}\n  left:  {:?}\n  right: {:?}",
                file!(), line!(), format!($($fmt)+), a, b
            ));
        }
    }};
}

/// Converts any displayable error into the test's failure reason, with where it happened.
pub trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// How long tests wait to be sure a signal does not come. Every ioctl that emits an event
/// returns after its signals are queued, so a wrong signal would already be pending: this only
/// covers the timer.
pub const QUIET: Duration = Duration::from_millis(25);

#[cfg(test)]
mod tests {
    use super::*;

    /// The guards a test's process sees scale with the pace the runner stored before the fork;
    /// the hang guard comes from the reference base, lowered by the host's base (the mutants'
    /// 12 s) but never raised by it (the debug kernel's 240 s: its slowness is in the pace).
    #[test]
    fn guards_scale_with_the_stored_pace() {
        let var = pcmsig_contract::env::TEST_TIMEOUT;
        std::env::remove_var(var);
        assert_eq!(pace(), 1.0);
        assert_eq!(wait(), Duration::from_secs(10));
        assert_eq!(hang_guard(), Duration::from_secs(20));
        PACE.store(3.5f64.to_bits(), std::sync::atomic::Ordering::Relaxed);
        assert_eq!(wait(), Duration::from_secs(35));
        assert_eq!(hang_guard(), Duration::from_secs(70));
        assert_eq!(
            paced(Duration::from_millis(100)),
            Duration::from_millis(350)
        );
        std::env::set_var(var, "240");
        assert_eq!(
            hang_guard(),
            Duration::from_secs(70),
            "the debug kernel's base"
        );
        std::env::set_var(var, "12");
        assert_eq!(hang_guard(), Duration::from_secs(28), "the mutants' base");
        std::env::remove_var(var);
        PACE.store(1f64.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }
}
