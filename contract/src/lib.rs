//! The contract across the VM boundary: what the guest programs (`pcmsig-tests`,
//! `pcmsig-bench`) write and the host harness (`xtask`) reads. Not part of the user-space ABI
//! (`pcmsig-uapi`) and not compiled into the module: where the KTAP goes, the markers, what a
//! kernel problem looks like in the log and how the suite reports one, which tests may skip,
//! the filter glob, and the benchmark's records ([`bench`]). Each text has its writer and its
//! reader here, side by side, with a round-trip test.

pub mod bench;

/// The module parameters the VM's init loads the module with (`PCMSIG_PARAMS` in `vm/init`),
/// and a test that reloads it restores: the injection test hooks on (a real system leaves them
/// off).
pub const TEST_PARAMS: &str = "test_hooks=1";

/// The kernel command-line word (init's environment) naming the part of the suite a VM runs
/// when `cargo xtask test --jobs N` splits it: `pcmsig_shard=K/N` (init passes `--shard K/N`).
pub const SHARD_ENV: &str = "pcmsig_shard";

/// One of `count` parts of the guest suite, each run in a VM of its own (`index` from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Where a test stands in the suite's order, which decides the shards that run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Needs only the module as init loaded it: the shards share these, round robin by their
    /// position among them.
    Shared(usize),
    /// Unloads or reloads the module (the lifecycle, the races with delay points, the model's
    /// reload): these stay together, in order, in shard 0.
    Reloading,
    /// Comes after everything else in its VM (the leak scan): every shard runs it.
    Last,
}

impl Shard {
    /// Whether this shard runs a test of `stage`.
    pub fn runs(self, stage: Stage) -> bool {
        match stage {
            Stage::Shared(i) => i % self.count.max(1) as usize == self.index as usize,
            Stage::Reloading => self.index == 0,
            Stage::Last => true,
        }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard {s:?}: K/N with 0 <= K < N");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The guest device the suite writes its KTAP to: the VM's second serial port, which QEMU
/// writes to `ktap.txt` on the host. The kernel console (`ttyS0`) stays a log.
pub const KTAP_DEVICE: &str = "/dev/ttyS1";

/// Record the suite writes to `/dev/kmsg` before each test: `pcmsig-tests: begin NAME`. The host
/// uses the last one on the console to name the test that was running when the guest died.
pub const TEST_MARKER: &str = "pcmsig-tests: begin ";

/// Value of init's `PCMSIG_SELFTEST` that makes the suite `cargo xtask selftest`'s cascade check:
/// a test that hangs and one that fails (both named `selftest_...`), each leaving a running
/// stream and an escaped process, each followed by [`CASCADE_VICTIMS`], which must pass.
pub const SELFTEST_CASCADE: &str = "cascade";

/// Tests a stray event from an earlier test fails (seen failing after a timed-out test).
pub const CASCADE_VICTIMS: [&str; 4] = [
    "read_records_match_the_signals",
    "sigtimedwait_times_out_with_eagain",
    "only_the_registering_thread_receives",
    "fd_passed_with_scm_rights_registers_the_receiver",
];

/// The guest device init writes the kernel log (`dmesg`) to at the end of a test run: the VM's
/// third serial port, which QEMU writes to `dmesg.txt` on the host. (On the console, 108 KB of
/// log took 0.8 s to pass; on a file port 0.17 s.)
pub const DMESG_DEVICE: &str = "/dev/ttyS2";

/// The guest device the suite sends the coverage build's tables to (`cargo xtask coverage`): the
/// VM's fourth serial port, which QEMU writes to `coverage.txt` on the host.
pub const COVERAGE_DEVICE: &str = "/dev/ttyS3";

/// The coverage port's text: a line naming each test of the run (`test N NAME`; 0 is the module's
/// load and the time between tests), and the tables, each framed by these two lines (written by
/// the suite and, at unload, by the coverage build's `xtask/coverage/sancov.c`, which spells
/// them out in C).
pub const COVERAGE_TEST: &str = "test ";
pub const COVERAGE_TABLE_BEGIN: &str = "begin table";
pub const COVERAGE_TABLE_END: &str = "end table";

/// One class of kernel problem: the text that identifies it in a log line, and its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    /// A substring of the log line that starts (or belongs to) such a report.
    pub pattern: &'static str,
    /// The detector's name, as the seeded-bug catalogue and the verdict name it.
    pub class: &'static str,
}

const fn p(pattern: &'static str, class: &'static str) -> Problem {
    Problem { pattern, class }
}

/// Kernel log lines that mean the kernel went wrong, whatever the tests said. More specific
/// patterns come first: the first match names the class.
pub const KERNEL_PROBLEMS: &[Problem] = &[
    p("KASAN:", "KASAN"),
    p("possible circular locking dependency", "lockdep"),
    p("inconsistent lock state", "lockdep"),
    p("possible recursive locking", "lockdep"),
    p(
        "sleeping function called from invalid context",
        "atomic-sleep",
    ),
    p("scheduling while atomic", "atomic-sleep"),
    p("ODEBUG:", "debugobjects"),
    p("refcount_t:", "refcount"),
    p("unreferenced object", "kmemleak"),
    p("list_add corruption", "list-debug"),
    p("list_del corruption", "list-debug"),
    // The hang detectors (vm/kernel.config). Each report is followed by its panic ("Kernel
    // panic - not syncing: softlockup: hung tasks", "Hard LOCKUP", "RCU Stall", "hung_task:
    // blocked tasks"), so they come before "BUG:" and "Kernel panic".
    p("soft lockup - CPU#", "soft-lockup"),
    p("Watchdog detected hard LOCKUP", "hard-lockup"),
    p("stalls on CPUs/tasks", "rcu-stall"),
    p("self-detected stall on CPU", "rcu-stall"),
    p("INFO: task ", "hung-task"),
    p("UBSAN:", "UBSAN"),
    p("Kernel panic", "panic"),
    p("kernel BUG at", "BUG"),
    p("BUG:", "BUG"),
    p("Oops:", "oops"),
    p("general protection fault", "oops"),
    p("WARNING:", "warning"),
    p("------------[ cut here ]------------", "warning"),
    p("Call Trace:", "warning"),
];

/// How a test's KTAP diagnostic names the kernel problem that failed it: `kernel problem
/// (CLASS)`, then what the suite says of it (written by the suite, read by the host's blame).
pub fn problem_diag(class: &str, what: &str) -> String {
    format!("kernel problem ({class}){what}")
}

/// The class a [`problem_diag`] line names, if it is one.
pub fn problem_diag_class(line: &str) -> Option<&str> {
    line.strip_prefix("kernel problem (")?
        .split_once(')')
        .map(|(class, _)| class)
}

/// How a test's KTAP diagnostic gives its wall time, printed by the suite after the test and
/// before its result line: `# duration_ms: N`. The host puts it in the JUnit report (`time=`)
/// and names the slowest tests of each VM.
pub fn duration_diag(ms: u64) -> String {
    format!("{DURATION} {ms}")
}

const DURATION: &str = "duration_ms:";

/// The milliseconds a [`duration_diag`] line gives, if it is one.
pub fn duration_diag_ms(line: &str) -> Option<u64> {
    line.strip_prefix(DURATION)?.trim().parse().ok()
}

/// The first problem whose pattern occurs in `line`.
pub fn problem_in(line: &str) -> Option<&'static Problem> {
    KERNEL_PROBLEMS.iter().find(|p| line.contains(p.pattern))
}

/// Whether `--filter`'s value selects the test `name`: one glob or several, comma-separated
/// (test names have no commas), any of which matches; a glob written `!GLOB` leaves out what it
/// matches, and a filter of such globs alone selects every other test (`test --edit-first`
/// runs the rest of the suite so).
pub fn filter_matches(filter: &str, name: &str) -> bool {
    let (mut wanted, mut any_wanted) = (false, false);
    for g in filter.split(',') {
        match g.strip_prefix('!') {
            Some(out) if glob(out, name) => return false,
            Some(_) => {}
            None => {
                any_wanted = true;
                wanted |= glob(g, name);
            }
        }
    }
    wanted || !any_wanted
}

/// QEMU's arguments for the VM with the `edu` device: two of them ([`EDU_DEVICES`]), so that
/// every run with the device also shows the second one refused (the driver drives one).
pub const EDU_QEMU_ARGS: [&str; 4] = ["-device", "edu", "-device", "edu"];
/// How many `edu` devices that VM has.
pub const EDU_DEVICES: usize = 2;

/// The words of init's environment (from the kernel command line) that the host sets and the
/// guest suite reads: one definition for both sides. `vm/init` itself reads the lower-case ones
/// (a host test pins it to the words of a test boot); the upper-case ones pass through it to
/// the suite. ([`SHARD_ENV`], [`FAIL_FAST_ENV`] and [`LOAD_CYCLES_ENV`] are three more.)
pub mod env {
    /// The port the suite writes its KTAP to ([`super::KTAP_DEVICE`]), passed as `--ktap`.
    pub const KTAP: &str = "pcmsig_ktap";
    /// The port init writes the kernel log to at the end ([`super::DMESG_DEVICE`]).
    pub const DMESG: &str = "pcmsig_dmesg";
    /// The suite's `--filter` (comma-separated globs).
    pub const FILTER: &str = "pcmsig_filter";
    /// The per-test base time limit in seconds (the suite scales it by the VM's pace).
    pub const TEST_TIMEOUT: &str = "PCMSIG_TEST_TIMEOUT";
    /// `1`: the VM has QEMU's `edu` devices ([`super::EDU_QEMU_ARGS`]), so the device tests
    /// must run.
    pub const EDU: &str = "PCMSIG_EDU";
    /// Set: the kernel has kmemleak, so its scan must run.
    pub const KMEMLEAK: &str = "PCMSIG_KMEMLEAK";
    /// Set: the kernel has fault injection, so the fault sweep must run.
    pub const FAULTS: &str = "PCMSIG_FAULTS";
    /// The seed of the random storm and the model's sequences.
    pub const SEED: &str = "PCMSIG_SEED";
    /// The reference model's steps.
    pub const MODEL_STEPS: &str = "PCMSIG_MODEL_STEPS";
    /// The port the coverage build's tables go to ([`super::COVERAGE_DEVICE`]).
    pub const COVERAGE: &str = "PCMSIG_COVERAGE";
    /// `cargo xtask selftest`'s suite ([`super::SELFTEST_CASCADE`]).
    pub const SELFTEST: &str = "PCMSIG_SELFTEST";

    /// `NAME=value`, as a kernel command-line word.
    pub fn word(name: &str, value: impl std::fmt::Display) -> String {
        format!("{name}={value}")
    }
}

/// The guest environment word that stops the suite at its first failure (the rest reported as
/// not run, in a bail-out), set by `cargo xtask test --fail-fast` and for every mutant's run.
pub const FAIL_FAST_ENV: &str = "PCMSIG_FAIL_FAST";

/// The guest environment word that sets how many unload/load cycles
/// `insmod_rmmod_cycles_leave_a_working_device` runs ([`LOAD_CYCLES_DEFAULT`] without it): the
/// debug kernel's VMs run [`LOAD_CYCLES_DEBUG`].
pub const LOAD_CYCLES_ENV: &str = "PCMSIG_LOAD_CYCLES";
/// The unload/load cycles of a normal or fault-injection kernel's VM: about a second.
pub const LOAD_CYCLES_DEFAULT: u32 = 50;
/// The debug kernel's: each cycle there costs 0.8 s in the plain VM and 4.3 s in the edu VM,
/// whose device is probed and removed each time (50 cycles were 217 s, the edu VM's longest
/// test and the debug suite's critical path, 2026-12-07). Its checkers (KASAN, kmemleak,
/// lockdep, debugobjects) judge every cycle, the first as well as the fiftieth: ten cycles run
/// the same lines, and repeat each path enough for a leak to add up.
pub const LOAD_CYCLES_DEBUG: u32 = 10;

/// The guest file that holds a filter too long for the kernel command line (`cargo xtask
/// mutants` writes the tests that reach a mutant's lines there; `vm/init` reads it).
pub const FILTER_FILE: &str = "/etc/pcmsig-filter";

/// `*` (any run) and `?` (any one character) glob match, as `--filter` uses it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_shared_tests_and_keep_the_reloading_ones_together() {
        let shards: Vec<Shard> = (0..3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for i in 0..10 {
            let runners = shards.iter().filter(|s| s.runs(Stage::Shared(i))).count();
            assert_eq!(runners, 1, "shared test {i}");
        }
        let reloading: Vec<u32> = shards
            .iter()
            .filter(|s| s.runs(Stage::Reloading))
            .map(|s| s.index)
            .collect();
        assert_eq!(reloading, [0]);
        assert!(shards.iter().all(|s| s.runs(Stage::Last)));
        for s in &shards {
            assert_eq!(s.to_string().parse::<Shard>(), Ok(*s));
        }
        for bad in ["3/3", "1", "a/2", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_listed_tests_may_skip_and_only_where_their_need_is_missing() {
        let none = KernelHas::default();
        let all = KernelHas {
            kmemleak: true,
            fault_injection: true,
        };
        assert_eq!(
            must_skip("read_records_match_the_signals", false, none),
            None
        );
        for (name, when) in SKIPS {
            let (lacking, having) = match when {
                SkipWhen::NoEduDevice => (must_skip(name, false, all), must_skip(name, true, none)),
                SkipWhen::NoKmemleak => (
                    must_skip(name, true, none),
                    must_skip(
                        name,
                        false,
                        KernelHas {
                            kmemleak: true,
                            ..none
                        },
                    ),
                ),
                SkipWhen::NoFaultInjection => (
                    must_skip(
                        name,
                        true,
                        KernelHas {
                            kmemleak: true,
                            ..none
                        },
                    ),
                    must_skip(
                        name,
                        false,
                        KernelHas {
                            fault_injection: true,
                            ..none
                        },
                    ),
                ),
            };
            assert_eq!((lacking, having), (Some(true), Some(false)), "{name}");
        }
    }

    #[test]
    fn a_star_matches_any_run_and_nothing_more() {
        assert!(glob("*", ""));
        assert!(glob("a*", "a"));
        assert!(glob("*b", "aab"));
        assert!(!glob("*a", ""));
        assert!(!glob("*a", "b"));
        assert!(!glob("a*c", "abd"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
    }

    #[test]
    fn a_filter_is_one_glob_or_several() {
        assert!(filter_matches("read_*", "read_records"));
        assert!(filter_matches("a_test,read_*", "read_records"));
        assert!(filter_matches("read_*,a_test", "a_test"));
        assert!(!filter_matches("read_*,a_test", "a_test_too"));
        assert!(!filter_matches("", "a_test"));
        // The words of the kernel command line that init's environment takes.
        assert_eq!(env::word(env::FILTER, "a_*,!b"), "pcmsig_filter=a_*,!b");
        assert_eq!(env::word(env::TEST_TIMEOUT, 30), "PCMSIG_TEST_TIMEOUT=30");
        // `!GLOB` leaves out; alone, the rest is selected.
        assert!(!filter_matches("!a_test", "a_test"));
        assert!(filter_matches("!a_test", "read_records"));
        assert!(filter_matches("!a_*,!b", "read_records"));
        assert!(!filter_matches("!a_*,!b", "b"));
        assert!(!filter_matches("read_*,!read_records", "read_records"));
        assert!(filter_matches("read_*,!read_records", "read_stamps"));
        assert!(!filter_matches("read_*,!x", "a_test"));
    }

    #[test]
    fn a_problem_diagnostic_names_its_class() {
        for p in KERNEL_PROBLEMS {
            let d = problem_diag(p.class, " while this test ran:");
            assert_eq!(problem_diag_class(&d), Some(p.class));
        }
        assert_eq!(problem_diag_class("expected 3, got 4"), None);
    }

    #[test]
    fn a_duration_diagnostic_round_trips() {
        for ms in [0, 7, 120_000] {
            assert_eq!(duration_diag_ms(&duration_diag(ms)), Some(ms));
        }
        assert_eq!(duration_diag_ms("duration_ms: soon"), None);
        assert_eq!(duration_diag_ms("expected 3, got 4"), None);
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("*", "anything"));
        assert!(glob("signal*", "signalfd_sees_payload"));
        assert!(glob("*_fifo_*", "rt_fifo_order"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("signal*", "module_cycles"));
        assert!(!glob("typo*", "inject_delivers_exact_payloads_in_sequence"));
    }

    #[test]
    fn problems_are_classified_by_their_most_specific_pattern() {
        let class = |l: &str| problem_in(l).map(|p| p.class);
        assert_eq!(
            class("BUG: KASAN: slab-use-after-free in send_sig_info+0x1/0x2"),
            Some("KASAN")
        );
        assert_eq!(
            class(
                "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580"
            ),
            Some("atomic-sleep")
        );
        assert_eq!(
            class("WARNING: possible circular locking dependency detected"),
            Some("lockdep")
        );
        assert_eq!(
            class("refcount_t: underflow; use-after-free."),
            Some("refcount")
        );
        assert_eq!(
            class("unreferenced object 0xffff888003a1b2c0 (size 64):"),
            Some("kmemleak")
        );
        assert_eq!(
            class("BUG: kernel NULL pointer dereference, address: 0000000000000000"),
            Some("BUG")
        );
        assert_eq!(
            class("Kernel panic - not syncing: Fatal exception"),
            Some("panic")
        );
        assert_eq!(
            class("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [pcmsig-tests:80]"),
            Some("soft-lockup")
        );
        assert_eq!(
            class("watchdog: CPU1: Watchdog detected hard LOCKUP on cpu 0"),
            Some("hard-lockup")
        );
        assert_eq!(
            class("rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P80 } 7502 jiffies s: 9 root: 0x0/T"),
            Some("rcu-stall")
        );
        assert_eq!(
            class("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"),
            Some("rcu-stall")
        );
        assert_eq!(
            class("INFO: task pcmsig-tests:80 blocked for more than 30 seconds."),
            Some("hung-task")
        );
        assert_eq!(
            class("pcmsig: loading out-of-tree module taints kernel."),
            None
        );
    }
}

/// What a VM lacks that lets a test skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipWhen {
    /// No QEMU `edu` device (the plain VM).
    NoEduDevice,
    /// No kmemleak (the normal kernel; the debug and fault-injection kernels have it).
    NoKmemleak,
    /// No fault injection (every kernel but the fault-injection one).
    NoFaultInjection,
}

/// The only tests that may skip, each with the one condition under which it must: the host
/// fails a run in which any other test skips (a failure whose reason happened to read `SKIP`
/// would otherwise pass as a skip), or in which one of these runs where it must skip (its
/// condition was misread) or skips where it must run.
pub const SKIPS: &[(&str, SkipWhen)] = &[
    (
        "edu_periods_come_from_device_interrupts",
        SkipWhen::NoEduDevice,
    ),
    (
        "edu_unbind_while_running_stops_and_rebind_restores",
        SkipWhen::NoEduDevice,
    ),
    (
        "edu_unbind_disables_the_device_and_bind_enables_it_once",
        SkipWhen::NoEduDevice,
    ),
    (
        "edu_coalesced_interrupts_are_never_counted_spurious",
        SkipWhen::NoEduDevice,
    ),
    (
        "edu_a_second_device_is_refused_until_the_first_unbinds",
        SkipWhen::NoEduDevice,
    ),
    (
        "device_removal_never_leaves_a_running_stream_without_its_timer",
        SkipWhen::NoEduDevice,
    ),
    (
        "periods_owed_before_a_stop_never_reach_the_next_run",
        SkipWhen::NoEduDevice,
    ),
    ("kmemleak_finds_no_leak", SkipWhen::NoKmemleak),
    (
        "every_ioctl_survives_each_failed_allocation_and_copy",
        SkipWhen::NoFaultInjection,
    ),
    (
        "failed_signal_allocations_are_counted_drops",
        SkipWhen::NoFaultInjection,
    ),
    (
        "opens_and_closes_make_no_allocation_that_cannot_sleep",
        SkipWhen::NoFaultInjection,
    ),
];

/// What the guest's kernel offers the tests that [`SKIPS`] names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelHas {
    /// `CONFIG_DEBUG_KMEMLEAK` (the debug and the fault-injection kernels).
    pub kmemleak: bool,
    /// `CONFIG_FAULT_INJECTION` with fail-nth, failslab and usercopy faults (the
    /// fault-injection kernel).
    pub fault_injection: bool,
}

/// Whether test `name` must skip in a VM with (`edu`) or without the device, on a kernel that
/// has what `kernel` says: `None` if it may never skip.
pub fn must_skip(name: &str, edu: bool, kernel: KernelHas) -> Option<bool> {
    SKIPS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, when)| match when {
            SkipWhen::NoEduDevice => !edu,
            SkipWhen::NoKmemleak => !kernel.kmemleak,
            SkipWhen::NoFaultInjection => !kernel.fault_injection,
        })
}
