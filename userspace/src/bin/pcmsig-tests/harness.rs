//! A tiny KTAP v1 test runner: each test runs in a forked child, so that signal masks,
//! handlers, rlimits and threads of one test cannot leak into the next, and a crash or hang
//! becomes a `not ok` line instead of ending the suite.

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
/// (the host raises it for the debug kernel, several times slower), else 30.
fn test_timeout_s() -> u32 {
    std::env::var("PCMSIG_TEST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(30)
}

/// `*` and `?` glob match.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

/// Prints a diagnostic line.
pub fn diag(msg: &str) {
    let mut out = std::io::stdout().lock();
    for line in msg.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let _ = out.flush();
}

/// Runs the tests matching `filter`, printing KTAP; returns the number that failed.
pub fn run(tests: &[Test], filter: Option<&str>) -> usize {
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| filter.is_none_or(|f| glob(f, t.name)))
        .collect();
    println!("KTAP version 1");
    println!("1..{}", selected.len());
    let mut failed = 0;
    for (i, t) in selected.iter().enumerate() {
        let _ = std::io::stdout().flush();
        match run_one(t) {
            Outcome::Pass => println!("ok {} {}", i + 1, t.name),
            Outcome::Skip(why) => println!("ok {} {} # SKIP {why}", i + 1, t.name),
            Outcome::Fail => {
                println!("not ok {} {}", i + 1, t.name);
                failed += 1;
            }
        }
        let _ = std::io::stdout().flush();
    }
    failed
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

/// Writes the marker that lets the host attribute a kernel splat to the test that caused it.
fn mark(name: &str) {
    // The serial console prints kernel messages at once but sends tty output later: let the
    // last KTAP line leave the UART first, or the marker lands inside it. (Not a tty: no-op.)
    let _ = std::io::stdout().flush();
    // SAFETY: tcdrain on our own stdout descriptor; it fails harmlessly when not a tty.
    unsafe { libc::tcdrain(1) };
    if let Ok(mut k) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        // One write(2): each write to /dev/kmsg is one log record.
        let _ = k.write_all(format!("pcmsig-tests: begin {name}\n").as_bytes());
    }
}

fn run_one(t: &Test) -> Outcome {
    let timeout_s = test_timeout_s();
    mark(t.name);
    let Ok((skip_rd, skip_wr)) = nix::unistd::pipe() else {
        diag("pipe failed");
        return Outcome::Fail;
    };
    // SAFETY: the runner is single-threaded when it forks; the child only runs the test and
    // exits with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        diag(&format!("fork failed: {}", std::io::Error::last_os_error()));
        return Outcome::Fail;
    }
    if pid == 0 {
        // SAFETY: alarm is async-signal-safe; SIGALRM's default action ends a hung test.
        unsafe { libc::alarm(timeout_s) };
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
    drop(skip_wr);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            diag("waitpid failed");
            return Outcome::Fail;
        }
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
        if sig == libc::SIGALRM {
            diag(&format!("timed out after {timeout_s} s"));
        } else {
            diag(&format!("the test process was killed by signal {sig}"));
        }
        Outcome::Fail
    }
}

/// A `Vec<Test>` of test functions, each named after its function.
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        vec![$($crate::harness::Test { name: stringify!($f), run: $f }),*]
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

/// How long tests wait for a signal that should come.
pub const WAIT: Duration = Duration::from_secs(3);
/// How long tests wait to be sure a signal does not come. Every ioctl that emits an event
/// returns after its signals are queued, so a wrong signal would already be pending: this only
/// covers the timer.
pub const QUIET: Duration = Duration::from_millis(25);

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("*", "anything"));
        assert!(glob("signal*", "signalfd_sees_payload"));
        assert!(glob("*_fifo_*", "rt_fifo_order"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("signal*", "module_cycles"));
    }
}
