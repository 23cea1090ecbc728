//! `cargo xtask selftest --bugs`: the seeded-bug catalogue. Each entry is a real driver bug, kept
//! as a patch against the shipped driver (`xtask/bugs/NAME.patch`, unified diff of `module/`
//! files): `module/` itself holds no seeded code. For each, the patch is applied to a copy of the
//! module's sources, that copy is built, its VM runs the named test (with what it needs first and
//! the tests that may be blamed instead, [`SeededBug::filter`]), and the verdict must FAIL and
//! blame the named test with the named detector. A bug the harness lets through is a
//! failure of the harness. A host test applies every patch to today's `module/`, so none rots.

use anyhow::{bail, Context, Result};
use pcmsig_contract::env::{self, word};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::image::build_all;
use crate::paths::out_dir;
use crate::{report::ktap, vm};

/// Which kernels a seeded bug runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// The normal kernel: the suite's assertions and the kernel's always-on detectors see it.
    Normal,
    /// The debug kernel only (`vm/debug.config`: KASAN, lockdep, kmemleak...).
    Debug,
    /// Both: the hang detectors, which both kernels have, must name it on each.
    Both,
}

impl On {
    fn includes(self, debug: bool) -> bool {
        match self {
            On::Normal => !debug,
            On::Debug => debug,
            On::Both => true,
        }
    }
}

/// One seeded bug and what must catch it.
pub struct SeededBug {
    /// Its name, and its patch's: `xtask/bugs/NAME.patch`.
    pub name: &'static str,
    /// What the bug is.
    pub what: &'static str,
    /// The kernels it runs on: where its detector lives.
    pub on: On,
    /// Virtual CPUs of its VM: a hard lockup is seen only by another CPU (the buddy detector).
    pub cpus: u32,
    /// Whether its VM has QEMU's `edu` device (`PCMSIG_EDU=1`): the test that catches it
    /// exercises the device's removal.
    pub edu: bool,
    /// The guest test the verdict must blame.
    pub test: &'static str,
    /// Tests that may be blamed instead, when the bug's report is deferred: a report from an RCU
    /// callback can land in the window of the test that runs next (the attribution is exact, the
    /// cause is the test before).
    pub or_next: &'static [&'static str],
    /// Tests its VM runs before `test` (in the suite's order): what must have happened for the
    /// detector to see the bug (a scan needs the leak made first). A bug's VM runs only these,
    /// `test` and `or_next` ([`SeededBug::filter`]); the kernel-log scans run in every VM.
    pub needs: &'static [&'static str],
    /// Detector classes accepted for that test (`test` is the test's own assertion; the others
    /// are the classes of `pcmsig_contract::KERNEL_PROBLEMS`).
    pub detectors: &'static [&'static str],
    /// Kernel parameters of its VM: where two watchdogs are both right about a hang, the
    /// other's threshold is moved far past the expected one's, so that which reports first is
    /// decided by the thresholds, not by a race (each reason at its row).
    pub kernel_args: &'static [&'static str],
}

impl SeededBug {
    /// The guest's `--filter` for the bug's VM: what it needs, its test and the tests that may be
    /// blamed instead. Not the whole suite: a bug is proven caught by its test and detector, and
    /// the other tests' minutes (the debug kernel's most of all) prove nothing more about it.
    pub fn filter(&self) -> String {
        let mut names: Vec<&str> = self.needs.to_vec();
        names.push(self.test);
        names.extend(self.or_next);
        names.join(",")
    }
}

const fn bug(
    name: &'static str,
    what: &'static str,
    debug_kernel: bool,
    test: &'static str,
    detectors: &'static [&'static str],
) -> SeededBug {
    SeededBug {
        name,
        what,
        on: if debug_kernel { On::Debug } else { On::Normal },
        cpus: 1,
        edu: false,
        test,
        or_next: &[],
        needs: &[],
        detectors,
        kernel_args: &[],
    }
}

/// A hang, which the kernels' own detectors must report (both kernels; the VM ends at the
/// detector's panic, the test running then is blamed).
const fn hang(
    name: &'static str,
    what: &'static str,
    cpus: u32,
    detector: &'static [&'static str],
    kernel_args: &'static [&'static str],
) -> SeededBug {
    SeededBug {
        name,
        what,
        on: On::Both,
        cpus,
        edu: false,
        test: "timer_periods_are_numbered_and_stop_after_n",
        or_next: &[],
        needs: &[],
        detectors: detector,
        kernel_args,
    }
}

/// The RCU stall limit (s) of a VM whose hard lockup must be reported first: far past the buddy
/// detector's 12 to 24 s (at `watchdog_thresh` 10).
const RCU_STALL_AFTER_HARD_LOCKUP: &str = "rcupdate.rcu_cpu_stall_timeout=60";

/// The watchdog threshold of a VM whose RCU stall (15 s, `CONFIG_RCU_CPU_STALL_TIMEOUT`) must be
/// reported before the soft lockup (2 * threshold).
const SOFT_LOCKUP_AFTER_RCU_STALL: &str = "watchdog_thresh=20";

/// The patch of a seeded bug.
pub fn patch_path(name: &str) -> PathBuf {
    crate::paths::project_root()
        .join("xtask/bugs")
        .join(format!("{name}.patch"))
}

/// Builds the module with one seeded bug (its patch applied to a copy of the sources under
/// `dir`), so that `module/` is never touched: it is the shipped driver.
fn build_seeded_module(
    tools: &crate::tools::Tools,
    kernel: &crate::kernel::Kernel,
    bug: &str,
    dir: &Path,
) -> Result<PathBuf> {
    crate::kbuild::build_variant(tools, kernel, dir, &format!("seeded bug {bug}"), |m| {
        apply(bug, m)
    })
}

/// Applies seeded bug `name`'s patch to the copy of `module/` in `module_dir` (hunks may sit at
/// other lines than the patch says, but their context must match exactly).
pub fn apply(name: &str, module_dir: &Path) -> Result<()> {
    let path = patch_path(name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading seeded bug {name}'s patch {}", path.display()))?;
    crate::kbuild::patch::apply(&text, "module/", module_dir)
        .with_context(|| format!("seeded bug {name} ({})", path.display()))
}

/// Every seeded bug. Adding one: make the bug in `module/`, save `git diff module/` as
/// `xtask/bugs/NAME.patch`, restore `module/`, and add a row here.
pub const CATALOGUE: &[SeededBug] = &[
    bug(
        "si_code_zero",
        "si_code = 0 (SI_USER), the blog's choice: signalfd sees no si_int",
        false,
        "signalfd_reports_ssi_int_and_si_queue",
        &["test"],
    ),
    bug(
        "seq_off_by_one",
        "the signal carries the next event's sequence number",
        false,
        "read_records_match_the_signals",
        &["test"],
    ),
    bug(
        "signal_group_leader",
        "the thread group's pid kept: events go to the process's main thread, not the registered one",
        false,
        "only_the_registering_thread_receives",
        &["test"],
    ),
    bug(
        "drop_not_counted",
        "an event dropped at RLIMIT_SIGPENDING is neither offered nor counted",
        false,
        "queue_overflow_drops_are_counted_exactly",
        &["test"],
    ),
    bug(
        "no_permission_check",
        "the F_SETOWN-style permission check removed",
        false,
        "register_needs_permission_to_signal",
        &["test"],
    ),
    bug(
        "cap_kill_bypass",
        "the opener's CAP_KILL honoured, though it holds only in the opener's user namespace",
        false,
        "user_namespace_root_opener_cannot_reach_other_users",
        &["test"],
    ),
    bug(
        "emitter_not_checked",
        "any holder of a file may configure, trigger and inject while another user listens",
        false,
        "another_users_listeners_cannot_be_reached_through_a_passed_file",
        &["test"],
    ),
    bug(
        "shared_stream",
        "the old driver's one stream, shared by every user: one user's listener blocks another's",
        false,
        "a_listener_that_never_drains_blocks_no_other_user",
        &["test"],
    ),
    bug(
        "control_on_read_only",
        "a read-only file may configure, trigger and inject",
        false,
        "control_ioctls_need_a_file_open_for_writing",
        &["test"],
    ),
    bug(
        "test_hooks_ignored",
        "the inject test hooks work without the test_hooks=1 parameter",
        false,
        "inject_needs_the_test_hooks_parameter",
        &["test"],
    ),
    bug(
        "unkillable_wait",
        "an ioctl waits for delivery uninterruptibly: SIGKILL cannot end it",
        false,
        "a_fatal_signal_ends_an_ioctl_waiting_for_delivery",
        // Both are right and which comes first is the machine's speed: the test gives the
        // killed child 20 s times the VM's pace, the hung-task detector reports a task 30 to
        // 60 s in D state (and panics the guest). Loaded (pace 10x) the detector won every
        // time, on 7.2 on 2026-12-08; idle, the test.
        &["test", "hung-task"],
    ),
    bug(
        "control_held_while_waiting",
        "the stream's control mutex held through the wait for delivery: a second caller sleeps \
         on it uninterruptibly (the hung-task report of a slow CI run)",
        false,
        "a_fatal_signal_ends_an_ioctl_waiting_for_delivery",
        // As `unkillable_wait`: the test's paced limit or the hung-task detector, by speed.
        &["test", "hung-task"],
    ),
    bug(
        "interrupted_wait_returns_zero",
        "the wait for delivery is interruptible: a handled signal ends it and the ioctl returns 0, \
         its signals not yet queued",
        false,
        "a_handled_signal_does_not_end_the_wait_for_delivery",
        &["test"],
    ),
    bug(
        "read_loses_on_fault",
        "read() takes records off the buffer before copying them: a copy that faults loses them",
        false,
        "a_faulting_read_loses_no_record",
        &["test"],
    ),
    bug(
        "overruns_clamped",
        "a timer expiry after a stall of more than 64 periods accounts for 64 and drops the rest \
         in silence (no xrun)",
        false,
        "a_timer_stall_past_64_periods_is_an_xrun",
        &["test"],
    ),
    bug(
        "register_without_flush",
        "REGISTER drops the listener it replaces while a delivery still holds it: the work \
         item drops the last reference (and an exited process's mm) in softirq",
        false,
        "replacing_a_listener_waits_for_the_delivery_holding_it",
        &["test"],
    ),
    bug(
        "close_without_flush",
        "the last close returns, when a file was opened meanwhile, with a delivery to its \
         listener in flight (and never lets go of an unregistered one)",
        false,
        "close_returns_with_no_signal_of_its_file_in_flight",
        &["test"],
    ),
    bug(
        "xrun_cancels_timer",
        "the delivery work item cancels the timer after an xrun, outside control: a restart in \
         between loses its timer",
        false,
        "an_xrun_never_cancels_the_timer_of_a_restart",
        &["test"],
    ),
    SeededBug {
        name: "detach_device_outside_control",
        what: "the device's removal stops the stream and cancels the timer outside control: a \
               START in between loses its timer",
        on: On::Normal,
        cpus: 1,
        edu: true,
        test: "device_removal_never_leaves_a_running_stream_without_its_timer",
        or_next: &[],
        needs: &[],
        detectors: &["test"],
        kernel_args: &[],
    },
    SeededBug {
        name: "owed_periods_outlive_a_stop",
        what: "a START keeps the periods the device still owed the stopped run: its late \
               interrupt emits them into the new one (review finding 7)",
        on: On::Normal,
        cpus: 1,
        edu: true,
        test: "periods_owed_before_a_stop_never_reach_the_next_run",
        or_next: &[],
        needs: &[],
        detectors: &["test"],
        kernel_args: &[],
    },
    bug(
        "open_allocates_under_setup",
        "an open holds `setup` across its memcg-charged allocations: one user's reclaim holds \
         up every other user's last close (review finding 10)",
        false,
        "one_users_open_in_its_allocations_never_holds_up_another_users",
        &["test"],
    ),
    bug(
        "files_lock_irqs_off",
        "the stream's file list under an interrupt-disabling lock: one user's walk over its files \
         delays every interrupt of the CPU, another user's period timer too (review finding 2)",
        false,
        "another_users_timer_keeps_time_while_one_users_file_list_is_held",
        &["test"],
    ),
    bug(
        "timer_not_cancelled",
        "the period timer re-arms itself and the last close does not cancel it",
        false,
        "unload_after_closing_a_running_stream_is_clean",
        &["BUG", "oops", "panic", "debugobjects"],
    ),
    bug(
        "cached_task",
        "the blog version: a cached task_struct pointer, signalled after the thread exited",
        true,
        "exited_listener_drops_are_counted",
        &["KASAN"],
    ),
    bug(
        "pid_use_after_free",
        "the struct pid reference dropped at registration, used at every send",
        true,
        "exited_listener_drops_are_counted",
        &["KASAN"],
    ),
    SeededBug {
        name: "double_put_pid",
        what: "put_pid twice when a listener goes (the pid is then freed by an RCU callback)",
        on: On::Debug,
        cpus: 1,
        edu: false,
        test: "inject_delivers_exact_payloads_in_sequence",
        // Seen in CI: the RCU callback ran 2.5 ms into the next test.
        or_next: &["inject_burst_delivers_every_event_in_order"],
        needs: &[],
        detectors: &["KASAN", "refcount"],
        kernel_args: &[],
    },
    bug(
        "sleep_in_timer",
        "a GFP_KERNEL (sleeping) allocation in the hrtimer callback (hard-IRQ context)",
        true,
        "timer_periods_are_numbered_and_stop_after_n",
        // Lockdep's reclaim-in-IRQ check ("inconsistent lock state") reports it first.
        &["atomic-sleep", "lockdep"],
    ),
    bug(
        "lock_order",
        "file lock then listener counters on delivery, the opposite order in GET_STATS",
        true,
        "inject_delivers_exact_payloads_in_sequence",
        &["lockdep"],
    ),
    SeededBug {
        name: "leak_per_open",
        what: "64 bytes allocated at every open, never freed",
        on: On::Debug,
        cpus: 1,
        edu: false,
        test: "kmemleak_finds_no_leak",
        or_next: &[],
        // The scan finds only what was leaked before it, and kmemleak is a conservative
        // collector: a stale copy of a pointer (on a stack, in a register save) keeps its object
        // "referenced". After the first test's 5 opens it reported nothing (2026-12-07); after
        // 800 opens, enough of them are unreferenced.
        needs: &["closing_and_reopening_never_hangs_an_ioctl"],
        detectors: &["kmemleak"],
        kernel_args: &[],
    },
    hang(
        "spin_irqs_off",
        "CONFIGURE busy-waits with interrupts off for a timer period (which needs an interrupt)",
        // One CPU cannot see its own hard lockup: the other's timer checks it.
        2,
        &["hard-lockup"],
        // The spinning CPU also never reports an RCU quiescent state: once any grace period
        // has begun (every call_rcu starts one), RCU's stall report is as right as the hard
        // lockup's, and at its 15 s it raced the buddy detector's 12 to 24 s (CI saw the RCU
        // report first in 3 runs of 5). With RCU's limit at 60 s the hard lockup comes first.
        &[RCU_STALL_AFTER_HARD_LOCKUP],
    ),
    hang(
        "sleep_holding_control",
        "CONFIGURE sleeps uninterruptibly, forever, holding the stream's control mutex",
        1,
        &["hung-task"],
        // The sleeper is the only task in D state and no CPU spins: no other detector fires.
        &[],
    ),
    hang(
        "rcu_never_ends",
        "CONFIGURE busy-waits for an RCU grace period inside an RCU read-side section",
        // The grace period starts in a kernel thread, which the spinning CPU never runs.
        2,
        &["rcu-stall"],
        // The spinning CPU (interrupts on, preemption off) is also a soft lockup, reported at
        // 2 * watchdog_thresh: 20 s by default, 5 s after RCU's 15 s. Doubling the threshold
        // (40 s) puts a margin past any timer jitter between the two reports.
        &[SOFT_LOCKUP_AFTER_RCU_STALL],
    ),
];

/// What one seeded-bug run showed.
struct Outcome {
    bug: &'static SeededBug,
    caught: bool,
    /// The detector seen for the expected test, if it was blamed.
    detector: Option<String>,
    /// The test blamed with it (the expected one, or one of `or_next`).
    blamed_test: Option<String>,
    seconds: f64,
    detail: String,
}

/// Runs the catalogue's bugs for one kernel (or the named ones), each `repeat` times (built
/// once); fails unless every run of every one is caught.
pub fn run(opts: &vm::Options, slow: Option<f64>, only: &[String], repeat: usize) -> Result<()> {
    let opts = &match slow {
        Some(factor) => crate::vm::slow::scaled_limits(opts, factor),
        None => opts.clone(),
    };
    if repeat == 0 {
        bail!("--repeat takes a count of 1 or more");
    }
    let debug = opts.flavour == vm::Flavour::Debug;
    let bugs = select(debug, only)?;
    let b = build_all(opts, false, true)?;
    let out = out_dir("bugs");
    let kernel = if debug { "debug" } else { "normal" };
    // As many at a time as the host has cores: the module builds (a rustc each), then the VMs
    // (each bug's row says its vCPUs, most 1).
    let parallel = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let built = crate::vm::in_pool(&bugs, parallel, |_, bug| {
        // Per kernel: a bug in both catalogues is built for each, and the two catalogues may
        // run at once (found when they did: the debug build replaced the normal one's module).
        let dir = out.join(kernel).join(bug.name);
        let t = Instant::now();
        let ko = build_seeded_module(&b.tools, &b.kernel, bug.name, &dir)?;
        crate::kbuild::check::check_vermagic(&ko, &b.kernel)?;
        let initrd =
            crate::image::initramfs::build_initramfs(&b.tools, &ko, &b.guest_dir, &[], &dir)?;
        println!(
            "xtask: built the module with seeded bug {} in {:.1} s",
            bug.name,
            t.elapsed().as_secs_f64()
        );
        Ok((*bug, dir, initrd))
    });
    let kos: Vec<(&SeededBug, PathBuf, PathBuf)> = built.into_iter().collect::<Result<_>>()?;
    // Slowed only now: the builds are not what `--slow` is about.
    let _slowed = slow.map(crate::vm::slow::enter).transpose()?;
    // Each bug `repeat` times, the runs of one bug spread out (a verdict that flips with timing
    // shows up as one MISSED run among its caught ones).
    let runs: Vec<(usize, &(&SeededBug, PathBuf, PathBuf))> = (1..=repeat)
        .flat_map(|k| kos.iter().map(move |ko| (k, ko)))
        .collect();
    let results = crate::vm::in_pool(&runs, parallel, |_, (k, (bug, dir, initrd))| {
        let dir = run_dir(dir, *k, repeat);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let o = run_one(&b, bug, &dir, initrd, opts)?;
        println!(
            "xtask: seeded bug {}: {} ({:.1} s) {}",
            o.bug.name,
            if o.caught { "caught" } else { "MISSED" },
            o.seconds,
            o.detail
        );
        Ok(o)
    });
    let outcomes: Vec<Outcome> = results.into_iter().collect::<Result<_>>()?;
    let table = table(&outcomes, debug);
    let table_path = out.join(format!("{kernel}.md"));
    std::fs::write(&table_path, &table)
        .with_context(|| format!("writing {}", table_path.display()))?;
    println!("{table}");
    println!("xtask: table in {}", table_path.display());
    if repeat > 1 {
        for (bug, _, _) in &kos {
            let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.bug.name == bug.name).collect();
            let caught = mine.iter().filter(|o| o.caught).count();
            let mut detectors: Vec<&str> =
                mine.iter().filter_map(|o| o.detector.as_deref()).collect();
            detectors.sort_unstable();
            detectors.dedup();
            println!(
                "xtask: seeded bug {}: caught in {caught} of {} runs (detectors: {})",
                bug.name,
                mine.len(),
                detectors.join(", ")
            );
        }
    }
    let mut missed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.caught)
        .map(|o| o.bug.name)
        .collect();
    missed.dedup();
    if !missed.is_empty() {
        bail!("the harness missed seeded bug(s): {}", missed.join(", "));
    }
    println!("xtask: every seeded bug was caught and blamed on its test");
    Ok(())
}

/// Where run `k` (of `repeat`) of a bug keeps its console and KTAP: the bug's folder for a
/// single run (where CI collects them), `run-K` in it when runs of one bug go at once.
fn run_dir(dir: &Path, k: usize, repeat: usize) -> PathBuf {
    if repeat > 1 {
        dir.join(format!("run-{k}"))
    } else {
        dir.to_path_buf()
    }
}

fn select(debug: bool, only: &[String]) -> Result<Vec<&'static SeededBug>> {
    if only.is_empty() {
        return Ok(CATALOGUE.iter().filter(|b| b.on.includes(debug)).collect());
    }
    let mut out = Vec::new();
    for name in only {
        let Some(bug) = CATALOGUE.iter().find(|b| b.name == name) else {
            let names: Vec<&str> = CATALOGUE.iter().map(|b| b.name).collect();
            bail!(
                "no seeded bug {name:?}; the catalogue: {}",
                names.join(", ")
            );
        };
        if !bug.on.includes(debug) {
            bail!(
                "seeded bug {name} needs {}",
                if bug.on == On::Debug {
                    "--debug-kernel (its detector lives there)"
                } else {
                    "the normal kernel (drop --debug-kernel)"
                }
            );
        }
        out.push(bug);
    }
    Ok(out)
}

fn run_one(
    b: &crate::image::Built,
    bug: &'static SeededBug,
    dir: &Path,
    initrd: &Path,
    opts: &vm::Options,
) -> Result<Outcome> {
    // A seeded bug may hang the guest: the kernel's detectors end it with a panic (at most
    // 35 s); the silence limits are the flavour's defaults, as for `cargo xtask test`.
    let mut env = crate::vm::test_env(opts.flavour);
    env.push(word(env::FILTER, bug.filter()));
    let mut opts = vm::Options {
        cpus: Some(bug.cpus),
        ..opts.clone()
    };
    if bug.edu {
        opts.qemu_args
            .extend(pcmsig_contract::EDU_QEMU_ARGS.map(String::from));
        env.push(word(env::EDU, 1));
    }
    env.extend(bug.kernel_args.iter().map(|a| a.to_string()));
    let boot = vm::Boot {
        env,
        ..opts.boot(vm::Mode::Test, dir, 1)
    };
    let run = vm::boot(&b.tools, &b.kernel, initrd, &boot)
        .with_context(|| format!("booting the VM with seeded bug {}", bug.name))?;
    let ktap::Judgement {
        failures, blamed, ..
    } = ktap::judge(&run, bug.edu, opts.flavour.kernel_has());
    let hit = hit(bug, &failures, &blamed);
    let detector = hit.map(|(_, c)| c.clone());
    let blamed_test = hit.map(|(t, _)| t.clone());
    let caught = hit.is_some();
    let list: Vec<String> = blamed.iter().map(|(t, c)| format!("{t} ({c})")).collect();
    let detail = if caught {
        format!("blamed: {}", list.join(", "))
    } else {
        let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
        format!(
            "expected {} ({}); blamed: [{}]; verdict: [{}]; console {}",
            bug.test,
            bug.detectors.join("|"),
            list.join(", "),
            reasons.join("; "),
            run.console_log.display()
        )
    };
    Ok(Outcome {
        bug,
        caught,
        detector,
        blamed_test,
        seconds: run.wall.as_secs_f64(),
        detail,
    })
}

/// The seeded-bug rule: `bug` is caught by a failing run that blames its test (or one of
/// `or_next`) with one of its detectors, both at once; the `(test, detector)` that caught it.
fn hit<'a>(
    bug: &SeededBug,
    failures: &[ktap::Failure],
    blamed: &'a [(String, String)],
) -> Option<&'a (String, String)> {
    if failures.is_empty() {
        return None;
    }
    blamed.iter().find(|(t, c)| {
        (t == bug.test || bug.or_next.contains(&t.as_str())) && bug.detectors.contains(&c.as_str())
    })
}

fn table(outcomes: &[Outcome], debug: bool) -> String {
    let kernel = if debug { "debug" } else { "normal" };
    let mut t = String::from(
        "| seeded bug | what | kernel | detector | test blamed | seconds to verdict | caught |\n|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        t.push_str(&format!(
            "| `{}` | {} | {kernel} | {} | `{}` | {:.1} | {} |\n",
            o.bug.name,
            o.bug.what,
            o.detector.as_deref().unwrap_or("-"),
            o.blamed_test.as_deref().unwrap_or(o.bug.test),
            o.seconds,
            if o.caught { "yes" } else { "**no**" }
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of today's `module/` sources in a scratch directory.
    fn module_copy(name: &str) -> PathBuf {
        let dir = crate::kernel::testing::scratch(name);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(crate::paths::project_root().join("module")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        dir
    }

    #[test]
    fn every_patch_applies_to_todays_driver_and_changes_it() {
        let clean = module_copy("bugs-clean");
        for b in CATALOGUE {
            let dir = module_copy(&format!("bug-{}", b.name));
            apply(b.name, &dir).unwrap_or_else(|e| panic!("{e:#}"));
            let changed = std::fs::read_dir(&dir).unwrap().any(|e| {
                let p = e.unwrap().path();
                std::fs::read(&p).ok() != std::fs::read(clean.join(p.file_name().unwrap())).ok()
            });
            assert!(changed, "{}: the patch changes nothing", b.name);
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_dir_all(&clean);
    }

    #[test]
    fn every_patch_is_in_the_catalogue_and_the_driver_holds_no_seeded_code() {
        for e in std::fs::read_dir(crate::paths::project_root().join("xtask/bugs")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            let bug = name
                .strip_suffix(".patch")
                .unwrap_or_else(|| panic!("{name}: not a .patch"));
            assert!(
                CATALOGUE.iter().any(|b| b.name == bug),
                "xtask/bugs/{name} has no catalogue entry"
            );
        }
        for e in std::fs::read_dir(crate::paths::project_root().join("module")).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(
                !text.contains("pcmsig_bug"),
                "{} holds seeded code",
                p.display()
            );
        }
    }

    #[test]
    fn a_patch_that_no_longer_fits_is_refused_by_name() {
        let dir = module_copy("bug-rotten");
        let stream = dir.join("stream.rs");
        // Today's driver, with a line of the patch's context edited.
        let text = std::fs::read_to_string(&stream).unwrap();
        let edited = text.replace(
            "fn check_emitter(&self) -> Result {",
            "fn check_emitter(&self) -> Result { // edited",
        );
        assert_ne!(edited, text);
        std::fs::write(&stream, edited).unwrap();
        let err = apply("emitter_not_checked", &dir).unwrap_err();
        assert!(
            format!("{err:#}").contains("no longer applies to module/stream.rs"),
            "{err:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bugs_vm_runs_what_it_needs_its_test_and_the_tests_blamed_instead() {
        let find = |n: &str| CATALOGUE.iter().find(|b| b.name == n).unwrap();
        assert_eq!(
            find("seq_off_by_one").filter(),
            "read_records_match_the_signals"
        );
        assert_eq!(
            find("double_put_pid").filter(),
            "inject_delivers_exact_payloads_in_sequence,inject_burst_delivers_every_event_in_order"
        );
        assert_eq!(
            find("leak_per_open").filter(),
            "closing_and_reopening_never_hangs_an_ioctl,kmemleak_finds_no_leak"
        );
    }

    #[test]
    fn a_single_run_keeps_the_bugs_folder_and_repeats_get_their_own() {
        let d = Path::new("/b/normal/x");
        assert_eq!(run_dir(d, 1, 1), d);
        assert_eq!(run_dir(d, 2, 3), d.join("run-2"));
    }

    #[test]
    fn each_kernel_runs_the_bugs_its_detectors_see() {
        assert!(On::Normal.includes(false) && !On::Normal.includes(true));
        assert!(On::Debug.includes(true) && !On::Debug.includes(false));
        assert!(On::Both.includes(true) && On::Both.includes(false));
        let normal = select(false, &[]).unwrap();
        let debug = select(true, &[]).unwrap();
        assert!(normal.iter().all(|b| b.on != On::Debug));
        assert!(debug.iter().all(|b| b.on != On::Normal));
        assert_eq!(
            normal.len() + debug.len(),
            CATALOGUE.len() + CATALOGUE.iter().filter(|b| b.on == On::Both).count()
        );
        let debug_only = CATALOGUE.iter().find(|b| b.on == On::Debug).unwrap();
        assert!(select(false, &[debug_only.name.to_string()]).is_err());
        assert!(select(false, &["no_such_bug".to_string()]).is_err());
    }

    #[test]
    fn every_seeded_bug_names_a_real_test_and_detector() {
        let tests = crate::paths::guest_test_sources();
        let classes: Vec<&str> = pcmsig_contract::KERNEL_PROBLEMS
            .iter()
            .map(|p| p.class)
            .collect();
        for b in CATALOGUE {
            assert!(patch_path(b.name).is_file(), "{}: no patch", b.name);
            for t in std::iter::once(&b.test).chain(b.or_next).chain(b.needs) {
                assert!(
                    tests.contains(&format!("fn {t}()")),
                    "{}: no test {t}",
                    b.name
                );
            }
            for d in b.detectors {
                assert!(
                    *d == "test" || classes.contains(d),
                    "{}: unknown detector {d}",
                    b.name
                );
            }
        }
        let mut names: Vec<&str> = CATALOGUE.iter().map(|b| b.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len(), "names are unique");
    }

    #[test]
    fn a_bug_is_caught_only_by_its_test_and_its_detector_together_in_a_failing_run() {
        let bug = CATALOGUE
            .iter()
            .find(|b| b.name == "double_put_pid")
            .unwrap();
        let failed = [ktap::Failure::Failed(vec!["x".into()])];
        let b = |t: &str, c: &str| (t.to_string(), c.to_string());
        let test = "inject_delivers_exact_payloads_in_sequence";
        let next = "inject_burst_delivers_every_event_in_order";
        // Either alternative detector, on the test or the one after it.
        for (t, c) in [
            (test, "KASAN"),
            (test, "refcount"),
            (next, "KASAN"),
            (next, "refcount"),
        ] {
            let blamed = [b("other", "KASAN"), b(t, c)];
            assert_eq!(hit(bug, &failed, &blamed), Some(&blamed[1]), "{t} {c}");
        }
        // The right test with another detector, a detector on another test, or a passing run.
        assert_eq!(
            hit(bug, &failed, &[b(test, "lockdep"), b(test, "test")]),
            None
        );
        assert_eq!(
            hit(bug, &failed, &[b("other", "KASAN"), b(test, "lockdep")]),
            None
        );
        assert_eq!(hit(bug, &[], &[b(test, "KASAN")]), None);
        assert_eq!(hit(bug, &failed, &[]), None);
    }
}
