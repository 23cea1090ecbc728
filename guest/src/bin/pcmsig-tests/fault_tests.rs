//! Fault injection (the fault-injection kernel, `cargo xtask test --fault-kernel`): every call
//! into the driver is made again and again with its N-th allocation or user copy failing, and
//! the delivery path's atomic allocations fail at random. Each failure must end in success or a
//! documented errno, leave the stream as the call found it (or as its success made it), leak
//! nothing and lose no event without counting it.
//!
//! The kernel's systematic fault injection: a write of N to `/proc/thread-self/fail-nth` makes
//! the N-th fault-injection point this thread passes fail (an allocation of any kind, with
//! failslab and fail_page_alloc told not to ignore sleeping allocations, or a user copy), and a
//! read says whether it was reached (0: the fault was injected). The sweep of one call ends at
//! the first N its call no longer reaches.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use pcmsig::{Device, EventKind, Signal, Trigger};

use crate::common::{
    expect_kinds, finite_run, listen, recv, recv_none, rt, DEBUGFS_STATS, STEADY_PERIOD_US,
};
use crate::runner::{diag, hang_guard, Context, Test, TestResult, SKIP};
use crate::{ensure, ensure_eq};

pub fn tests() -> Vec<Test> {
    crate::tests![
        every_ioctl_survives_each_failed_allocation_and_copy,
        failed_signal_allocations_are_counted_drops,
        opens_and_closes_make_no_allocation_that_cannot_sleep,
    ]
}

const FAILSLAB: &str = "/sys/kernel/debug/failslab";
const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc";
const FAIL_USERCOPY: &str = "/sys/kernel/debug/fail_usercopy";
/// The slab cache the delivery path allocates from in softirq context (`GFP_ATOMIC`): queued
/// signals (`sigqueue_alloc`, for each signal sent; the delivery itself allocates nothing). The
/// fault kernel boots with `slab_nomerge`, so it is a cache of its own.
const ATOMIC_CACHES: [&str; 1] = ["/sys/kernel/slab/sigqueue/failslab"];
/// More faults than any call of the driver reaches (about 10 today): a call still reaching
/// fault N at this N is a failure, not an endless sweep.
const MAX_FAULTS: u32 = 200;

const ENOMEM: i32 = libc::ENOMEM;
const EFAULT: i32 = libc::EFAULT;

/// Skips unless this kernel has fault injection; on the fault-injection kernel
/// (`PCMSIG_FAULTS`) its absence is a failure.
fn need_fault_injection() -> TestResult {
    if Path::new(FAILSLAB).exists() && Path::new("/proc/thread-self/fail-nth").exists() {
        return Ok(());
    }
    if std::env::var_os(pcmsig_contract::env::FAULTS).is_some() {
        return Err(format!(
            "{FAILSLAB} or fail-nth is missing on the fault-injection kernel"
        ));
    }
    Err(format!("{SKIP}no fault injection in this kernel"))
}

fn write_attr(dir: &str, attr: &str, value: &str) -> TestResult {
    std::fs::write(format!("{dir}/{attr}"), value).ctx(&format!("writing {value} to {dir}/{attr}"))
}

/// A thread's systematic fault: `/proc/thread-self/fail-nth`, kept open so that arming and
/// reading it allocate nothing.
struct FailNth(std::fs::File);

impl FailNth {
    fn open() -> Result<Self, String> {
        // The kernel's fault attributes for fail-nth: every allocation counts (also those that
        // may sleep, and single pages), and an injected fault prints nothing.
        for dir in [FAILSLAB, FAIL_PAGE_ALLOC] {
            write_attr(dir, "ignore-gfp-wait", "N")?;
        }
        write_attr(FAIL_PAGE_ALLOC, "min-order", "0")?;
        for dir in [FAILSLAB, FAIL_PAGE_ALLOC, FAIL_USERCOPY] {
            write_attr(dir, "verbose", "0")?;
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/thread-self/fail-nth")
            .map(FailNth)
            .ctx("opening /proc/thread-self/fail-nth")
    }

    /// The `n`-th fault-injection point this thread passes from now on fails.
    fn arm(&self, n: u32) -> TestResult {
        self.0
            .write_at(n.to_string().as_bytes(), 0)
            .map(drop)
            .ctx("arming fail-nth")
    }

    /// Whether the armed fault was injected; disarms it.
    fn injected(&self) -> Result<bool, String> {
        let mut buf = [0u8; 16];
        let injected = match self.0.read_at(&mut buf, 0) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                text.trim().parse::<u32>().ctx("reading fail-nth")? == 0
            }
            // The read's own copy to user space took the fault: the call did not reach it.
            Err(e) if e.raw_os_error() == Some(EFAULT) => false,
            Err(e) => return Err(format!("reading fail-nth: {e}")),
        };
        // The disarming write's own copy may take a fault still armed: once at most.
        for _ in 0..3 {
            if self.0.write_at(b"0", 0).is_ok() {
                return Ok(injected);
            }
        }
        Err("cannot disarm fail-nth".into())
    }
}

/// The module-wide lines of debugfs `stats`: `streams` and the `live_*` object counts.
fn live_counts() -> Result<Vec<(String, u64)>, String> {
    let text = std::fs::read_to_string(DEBUGFS_STATS).ctx("reading debugfs stats")?;
    Ok(text
        .lines()
        .take_while(|l| !l.starts_with("stream "))
        .filter(|l| l.starts_with("streams ") || l.starts_with("live_"))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

/// Waits until the object counts are `want` again (a closed file's last references go at once;
/// the wait covers a delivery that still holds one): a leak stays and fails.
fn counts_return_to(want: &[(String, u64)]) -> TestResult {
    let start = Instant::now();
    loop {
        let now = live_counts()?;
        if now == want {
            return Ok(());
        }
        if start.elapsed() > hang_guard() / 4 {
            return Err(format!(
                "objects left behind: {now:?}, before the call {want:?}"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// One call's sweep: its name, the errnos it documents, how to set up for it, the call itself
/// (its errno on failure) and what must hold afterwards, given the call's result. The state
/// the check receives is dropped (its files closed) before the leak check.
struct Sweep<S> {
    name: &'static str,
    errnos: &'static [i32],
    setup: fn() -> Result<S, String>,
    call: fn(&mut S) -> Result<(), i32>,
    check: fn(&mut S, Result<(), i32>) -> TestResult,
}

impl<S> Sweep<S> {
    /// For N = 1, 2, ...: a fresh setup, the call with its N-th fault, the check, the leak
    /// check; until the call reaches no N-th fault (then it must have succeeded). Returns how
    /// many faults the call met.
    fn run(&self, fail: &FailNth) -> Result<u32, String> {
        let name = self.name;
        for n in 1..=MAX_FAULTS {
            let before = live_counts()?;
            let mut state =
                (self.setup)().map_err(|e| format!("{name}: setup for fault {n}: {e}"))?;
            fail.arm(n)?;
            let result = (self.call)(&mut state);
            let injected = fail.injected()?;
            let at = format!("{name} with fault {n} (result {})", describe(result));
            if let Err(errno) = result {
                ensure!(
                    self.errnos.contains(&errno),
                    "{at}: errno {errno} is not one this call documents ({})",
                    self.errnos
                        .iter()
                        .map(|&e| describe(Err(e)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            (self.check)(&mut state, result).map_err(|e| format!("{at}: {e}"))?;
            drop(state);
            counts_return_to(&before).map_err(|e| format!("{at}: {e}"))?;
            if !injected {
                ensure!(result.is_ok(), "{at}: failed with no fault injected");
                return Ok(n - 1);
            }
        }
        Err(format!("{name}: still reaching fault {MAX_FAULTS}"))
    }
}

fn describe(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "success".into(),
        Err(e) => format!("{} ({e})", std::io::Error::from_raw_os_error(e)),
    }
}

fn errno_of(e: pcmsig::Error) -> i32 {
    e.errno().unwrap_or(-1)
}

const SIG: i32 = 0;
const OTHER_SIG: i32 = 1;

/// The probe after a call: one injected event reaches the file's listener on `sig`, exactly
/// once, and the counters balance.
fn probe(dev: &Device, sig: Signal) -> TestResult {
    dev.inject(EventKind::PeriodElapsed).ctx("probe inject")?;
    expect_kinds(sig, &[EventKind::PeriodElapsed])?;
    recv_none(&[rt(SIG), rt(OTHER_SIG)])?;
    let s = dev.stats().ctx("probe stats")?;
    crate::common::check_invariant(&s)
}

/// A file nobody listens on: an injected event is counted for no listener and sends nothing.
fn probe_unheard(dev: &Device) -> TestResult {
    dev.inject(EventKind::PeriodElapsed).ctx("probe inject")?;
    recv_none(&[rt(SIG), rt(OTHER_SIG)])?;
    let s = dev.stats().ctx("probe stats")?;
    ensure_eq!(s.listeners, 0, "listeners after a failed registration");
    ensure_eq!(s.total.fired, 0, "signals fired with no listener");
    Ok(())
}

fn open_dev() -> Result<Device, String> {
    Device::open().ctx("opening /dev/pcmsig")
}

/// One of the debugfs object counts ([`live_counts`]).
fn live_count(name: &str) -> Result<u64, String> {
    live_counts()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("no {name} line in debugfs stats"))
}

/// The debugfs `streams` count.
fn streams_listed() -> Result<u64, String> {
    live_count("streams")
}

/// Closes a device, returning close(2)'s errno.
fn close_dev(dev: Device) -> Result<(), i32> {
    let fd = dev.file().as_raw_fd();
    std::mem::forget(dev);
    // SAFETY: `fd` was the device's own descriptor, forgotten above: closed exactly once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1));
    }
    Ok(())
}

/// State of a sweep: the files of the test, and what the call produced.
#[derive(Default)]
struct Files {
    kept: Vec<Device>,
    new: Option<Device>,
    records: Vec<pcmsig::EventRecord>,
    stats: Option<pcmsig::Stats>,
}

fn with(kept: Vec<Device>) -> Files {
    Files {
        kept,
        ..Files::default()
    }
}

fn first(f: &Files) -> Result<&Device, String> {
    f.kept.first().ok_or_else(|| "no file kept".to_string())
}

fn every_ioctl_survives_each_failed_allocation_and_copy() -> TestResult {
    need_fault_injection()?;
    // Reloaded by the sweep of the first open; loaded as init did afterwards.
    crate::modload::with_module_params("", sweep_every_call)
}

fn sweep_every_call() -> TestResult {
    rt(SIG).block().ctx("blocking")?;
    rt(OTHER_SIG).block().ctx("blocking")?;
    ensure_eq!(streams_listed()?, 0, "streams listed before the sweep");
    let fail = FailNth::open()?;
    let sweeps: Vec<Sweep<Files>> = vec![
        Sweep {
            name: "open (the user's first file: creates the stream)",
            errnos: &[ENOMEM, EFAULT],
            // A fresh module each time: its list of streams has never grown, so that each
            // fault meets the first open's allocations in order, the list's growth included
            // (an injected fault with a fallback would otherwise let the list grow early).
            setup: || {
                crate::modload::delete_module().ctx("rmmod")?;
                crate::modload::load_module().ctx("insmod")?;
                Ok(Files::default())
            },
            call: |f| {
                f.new = Some(Device::open().map_err(errno_of)?);
                Ok(())
            },
            check: |f, r| match (r, &f.new) {
                (Ok(()), Some(dev)) => {
                    dev.register(rt(SIG)).ctx("register")?;
                    probe(dev, rt(SIG))
                }
                _ => {
                    ensure_eq!(streams_listed()?, 0, "streams listed after a failed open");
                    Ok(())
                }
            },
        },
        Sweep {
            name: "open (another file of the user: joins its stream)",
            errnos: &[ENOMEM, EFAULT],
            setup: || Ok(with(vec![listen(rt(SIG))?])),
            call: |f| {
                f.new = Some(Device::open().map_err(errno_of)?);
                Ok(())
            },
            check: |f, _| {
                // The stream's first file works either way, and the new one if it opened.
                probe(first(f)?, rt(SIG))?;
                if let Some(dev) = &f.new {
                    dev.register(rt(OTHER_SIG)).ctx("register the new file")?;
                    dev.inject(EventKind::Xrun).ctx("inject")?;
                    expect_kinds(rt(SIG), &[EventKind::Xrun])?;
                    expect_kinds(rt(OTHER_SIG), &[EventKind::Xrun])?;
                }
                ensure_eq!(streams_listed()?, 1, "streams listed");
                Ok(())
            },
        },
        Sweep {
            name: "REGISTER",
            errnos: &[ENOMEM, EFAULT],
            setup: || Ok(with(vec![open_dev()?])),
            call: |f| {
                first(f)
                    .map_err(|_| -1)?
                    .register(rt(SIG))
                    .map_err(errno_of)
            },
            check: |f, r| match r {
                Ok(()) => probe(first(f)?, rt(SIG)),
                Err(_) => probe_unheard(first(f)?),
            },
        },
        Sweep {
            name: "REGISTER replacing a listener",
            errnos: &[ENOMEM, EFAULT],
            setup: || Ok(with(vec![listen(rt(SIG))?])),
            call: |f| {
                first(f)
                    .map_err(|_| -1)?
                    .register(rt(OTHER_SIG))
                    .map_err(errno_of)
            },
            // Replaced on success, kept on failure.
            check: |f, r| probe(first(f)?, rt(if r.is_ok() { OTHER_SIG } else { SIG })),
        },
        Sweep {
            name: "UNREGISTER",
            errnos: &[],
            setup: || Ok(with(vec![listen(rt(SIG))?])),
            call: |f| first(f).map_err(|_| -1)?.unregister().map_err(errno_of),
            check: |f, _| {
                let dev = first(f)?;
                dev.inject(EventKind::PeriodElapsed).ctx("inject")?;
                recv_none(&[rt(SIG)])
            },
        },
        Sweep {
            name: "CONFIGURE",
            errnos: &[EFAULT],
            setup: || Ok(with(vec![listen(rt(SIG))?])),
            call: |f| {
                first(f)
                    .map_err(|_| -1)?
                    .configure(STEADY_PERIOD_US, 2)
                    .map_err(errno_of)
            },
            check: |f, r| {
                let dev = first(f)?;
                match r {
                    Ok(()) => {
                        dev.trigger(Trigger::Start).ctx("start")?;
                        expect_kinds(rt(SIG), &finite_run(2)).map(drop)
                    }
                    Err(_) => {
                        // Not configured: nothing emitted, the state unchanged.
                        recv_none(&[rt(SIG)])?;
                        let s = dev.stats().ctx("stats")?;
                        ensure_eq!(s.state, pcmsig::State::Setup as u32, "state");
                        ensure_eq!(s.events, 0, "events");
                        Ok(())
                    }
                }
            },
        },
        Sweep {
            name: "TRIGGER (start)",
            errnos: &[EFAULT],
            setup: || {
                let dev = listen(rt(SIG))?;
                dev.configure(STEADY_PERIOD_US, 2).ctx("configure")?;
                expect_kinds(rt(SIG), &[EventKind::Prepared])?;
                Ok(with(vec![dev]))
            },
            call: |f| {
                first(f)
                    .map_err(|_| -1)?
                    .trigger(Trigger::Start)
                    .map_err(errno_of)
            },
            check: |f, r| {
                let mut want = finite_run(2);
                want.remove(0);
                if r.is_err() {
                    // Not started: a start now runs the stream as configured.
                    recv_none(&[rt(SIG)])?;
                    first(f)?.trigger(Trigger::Start).ctx("start")?;
                }
                expect_kinds(rt(SIG), &want).map(drop)
            },
        },
        Sweep {
            name: "INJECT",
            errnos: &[EFAULT],
            setup: || Ok(with(vec![listen(rt(SIG))?])),
            call: |f| {
                first(f)
                    .map_err(|_| -1)?
                    .inject(EventKind::Xrun)
                    .map_err(errno_of)
            },
            check: |f, r| {
                if r.is_ok() {
                    expect_kinds(rt(SIG), &[EventKind::Xrun])?;
                }
                recv_none(&[rt(SIG)])?;
                let s = first(f)?.stats().ctx("stats")?;
                ensure_eq!(s.total.fired, u64::from(r.is_ok()), "signals fired");
                probe(first(f)?, rt(SIG))
            },
        },
        Sweep {
            name: "INJECT_BURST",
            errnos: &[EFAULT],
            setup: || Ok(with(vec![listen(rt(SIG))?])),
            call: |f| {
                first(f)
                    .map_err(|_| -1)?
                    .inject_burst(EventKind::PeriodElapsed, 5)
                    .map_err(errno_of)
            },
            check: |f, r| {
                if r.is_ok() {
                    expect_kinds(rt(SIG), &[EventKind::PeriodElapsed; 5])?;
                }
                recv_none(&[rt(SIG)])?;
                let s = first(f)?.stats().ctx("stats")?;
                ensure_eq!(
                    s.total.fired,
                    if r.is_ok() { 5 } else { 0 },
                    "signals fired"
                );
                probe(first(f)?, rt(SIG))
            },
        },
        Sweep {
            name: "GET_STATS",
            errnos: &[EFAULT],
            setup: || {
                let dev = listen(rt(SIG))?;
                dev.inject_burst(EventKind::PeriodElapsed, 2)
                    .ctx("inject")?;
                expect_kinds(rt(SIG), &[EventKind::PeriodElapsed; 2])?;
                Ok(with(vec![dev]))
            },
            call: |f| {
                f.stats = Some(first(f).map_err(|_| -1)?.stats().map_err(errno_of)?);
                Ok(())
            },
            check: |f, _| {
                let clean = first(f)?.stats().ctx("stats")?;
                ensure_eq!(clean.total.fired, 2, "fired");
                ensure_eq!(clean.total.delivered, 2, "delivered");
                if let Some(s) = f.stats {
                    ensure_eq!(s, clean, "the stats the call returned");
                }
                Ok(())
            },
        },
        Sweep {
            name: "read",
            errnos: &[EFAULT],
            setup: || {
                let dev = Device::open_nonblocking().ctx("open")?;
                dev.inject_burst(EventKind::PeriodElapsed, 5)
                    .ctx("inject")?;
                Ok(with(vec![dev]))
            },
            call: |f| {
                let got = first(f)
                    .map_err(|_| -1)?
                    .read_records(8)
                    .map_err(|e| e.raw_os_error().unwrap_or(-1))?;
                f.records = got;
                Ok(())
            },
            check: |f, _| {
                // What the call read and what a clean read finds: the 5 records, in order, once.
                let rest = match first(f)?.read_records(8) {
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Vec::new(),
                    r => r.ctx("read")?,
                };
                let all: Vec<u32> = f.records.iter().chain(&rest).map(|r| r.seq).collect();
                let start = all.first().copied().unwrap_or(0);
                ensure_eq!(
                    all,
                    (start..start + 5).collect::<Vec<_>>(),
                    "sequence numbers read"
                );
                Ok(())
            },
        },
        Sweep {
            name: "close (one of two files)",
            errnos: &[],
            // The closed file listens too, so that a delivery to it would be heard.
            setup: || {
                let other = listen(rt(OTHER_SIG))?;
                Ok(with(vec![listen(rt(SIG))?, other]))
            },
            call: |f| match f.kept.pop() {
                Some(dev) => close_dev(dev),
                None => Err(-1),
            },
            check: |f, _| {
                // The other file still hears the stream, the closed one never. If the close
                // could not allocate the stream's next file list, the closed file stays in the
                // old one, skipped, until the next open or close rebuilds it without it.
                probe(first(f)?, rt(SIG))?;
                let again = open_dev()?;
                ensure_eq!(
                    live_count("live_files")?,
                    2,
                    "files alive after the next open (the closed one must have left the list)"
                );
                f.kept.push(again);
                Ok(())
            },
        },
        Sweep {
            name: "close (the last file of a registered listener)",
            errnos: &[],
            setup: || Ok(with(vec![listen(rt(SIG))?])),
            call: |f| match f.kept.pop() {
                Some(dev) => close_dev(dev),
                None => Err(-1),
            },
            check: |_, _| {
                ensure_eq!(streams_listed()?, 0, "streams listed after the last close");
                Ok(())
            },
        },
    ];
    let mut met = Vec::new();
    for s in &sweeps {
        let n = s.run(&fail)?;
        met.push(format!("{}: {n}", s.name));
    }
    diag(&format!("faults met by each call: {}", met.join("; ")));
    // The whole sweep must have met faults in the driver's own code, not only in the VFS.
    ensure!(
        met.iter().filter(|m| !m.ends_with(": 0")).count() >= 6,
        "too few calls met a fault: {met:?}"
    );
    Ok(())
}

/// Opens, REGISTER and closes allocate in process context, where an allocation may sleep
/// (`GFP_KERNEL`): none may make one that cannot (no reclaim, no memory-cgroup charge: it fails
/// under memory pressure where a sleeping one would have reclaimed, or is never charged to the
/// opener). failslab here fails every allocation of this thread that cannot sleep
/// (`ignore-gfp-wait`, `task-filter` and `make-it-fail`); every call must still succeed, the
/// stream's file list growing and shrinking on the way. From a fresh load, so that the list of
/// streams starts empty: the first user's open grows it from nothing and the third user's
/// grows it again (the growth is made outside the list's lock; a push past the capacity under
/// the lock would be an allocation that cannot sleep).
fn opens_and_closes_make_no_allocation_that_cannot_sleep() -> TestResult {
    need_fault_injection()?;
    crate::modload::with_module_params("", || {
        crate::common::chmod_device_666()?;
        let guard = RandomFailslab::non_sleeping(true, &[], 100)?;
        let result = {
            let _armed = MakeItFail::arm()?;
            (|| -> TestResult {
                let files: Vec<Device> = (0..3)
                    .map(|i| Device::open().ctx(&format!("open {}", i + 1)))
                    .collect::<Result<_, _>>()?;
                files[1].register(rt(SIG)).ctx("register")?;
                // Two more users' streams, each a new entry in the list.
                let mut others = Vec::new();
                for uid in [3001, 3002] {
                    let uid = nix::unistd::Uid::from_raw(uid);
                    nix::unistd::seteuid(uid).ctx("seteuid")?;
                    let opened = Device::open();
                    nix::unistd::seteuid(nix::unistd::Uid::from_raw(0)).ctx("seteuid 0")?;
                    others.push(opened.ctx(&format!("open as uid {uid}"))?);
                }
                drop(others);
                drop(files);
                let again = Device::open().ctx("open after the closes")?;
                drop(again);
                Ok(())
            })()
        };
        drop(guard);
        result?;
        ensure_eq!(streams_listed()?, 0, "streams listed after the last close");
        Ok(())
    })
}

/// This thread's `make-it-fail` (failslab's task filter), set while it lives.
struct MakeItFail;

impl MakeItFail {
    const PATH: &'static str = "/proc/thread-self/make-it-fail";

    fn arm() -> Result<Self, String> {
        std::fs::write(Self::PATH, "1").ctx("setting make-it-fail")?;
        Ok(MakeItFail)
    }
}

impl Drop for MakeItFail {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, "0");
    }
}

/// Restores the random failslab settings, whatever the test did.
struct RandomFailslab;

impl RandomFailslab {
    /// failslab failing `probability` % of the allocations that cannot sleep, silently: of this
    /// thread only (`task_filter`, with [`MakeItFail`]) or of every context, and of `caches`
    /// only, or of every cache when there are none. Undone when the value drops.
    fn non_sleeping(task_filter: bool, caches: &[&str], probability: u32) -> Result<Self, String> {
        let guard = RandomFailslab;
        let yes = |b: bool| if b { "Y" } else { "N" };
        write_attr(FAILSLAB, "ignore-gfp-wait", "Y")?;
        write_attr(FAILSLAB, "verbose", "0")?;
        write_attr(FAILSLAB, "task-filter", yes(task_filter))?;
        write_attr(FAILSLAB, "interval", "1")?;
        write_attr(FAILSLAB, "times", "-1")?;
        write_attr(FAILSLAB, "cache-filter", yes(!caches.is_empty()))?;
        for cache in caches {
            std::fs::write(cache, "1").ctx(&format!("writing 1 to {cache}"))?;
        }
        write_attr(FAILSLAB, "probability", &probability.to_string())?;
        Ok(guard)
    }
}

impl Drop for RandomFailslab {
    fn drop(&mut self) {
        let _ = write_attr(FAILSLAB, "probability", "0");
        for cache in ATOMIC_CACHES {
            let _ = std::fs::write(cache, "0");
        }
        let _ = write_attr(FAILSLAB, "cache-filter", "N");
    }
}

fn failed_signal_allocations_are_counted_drops() -> TestResult {
    need_fault_injection()?;
    const EVENTS: u32 = 200;
    let sig = rt(SIG);
    let dev = listen(sig)?;
    // failslab in every context (no task filter), for the delivery path's cache only, and only
    // for allocations that cannot sleep: the `GFP_ATOMIC` queue entry the delivery work
    // allocates in softirq context for each signal. Half of them fail.
    let guard = RandomFailslab::non_sleeping(false, &ATOMIC_CACHES, 50)?;
    for _ in 0..EVENTS / 50 {
        dev.inject_burst(EventKind::PeriodElapsed, 50)
            .ctx("inject burst")?;
    }
    drop(guard);
    // Every event was offered before the last burst returned: what was queued is pending now.
    let mut got = Vec::new();
    while let Ok(info) = recv(&[sig]) {
        got.push(crate::common::expect_event(&info, sig)?);
        if got.len() as u32 == EVENTS {
            break;
        }
        if sigpending_empty(sig)? {
            break;
        }
    }
    let s = dev.stats().ctx("stats")?;
    crate::common::check_invariant(&s)?;
    ensure_eq!(
        s.file.fired,
        u64::from(EVENTS),
        "events offered to the listener"
    );
    ensure_eq!(
        s.file.delivered,
        got.len() as u64,
        "delivered count against signals received"
    );
    ensure_eq!(
        s.file.dropped_queue_full,
        u64::from(EVENTS) - got.len() as u64,
        "failed queue entries counted as queue-full drops"
    );
    ensure!(
        s.file.dropped_queue_full > 0,
        "failslab failed no signal allocation (received {} of {EVENTS}): the test proved nothing",
        got.len()
    );
    // The signals that came are in order, and the dropped ones are the gaps.
    let seqs: Vec<u32> = got.iter().map(|(_, seq)| *seq).collect();
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "signals out of order: {seqs:?}"
    );
    diag(&format!(
        "{} of {EVENTS} signals queued, {} failed allocations counted as drops",
        got.len(),
        s.file.dropped_queue_full
    ));
    // The stream still delivers with the fault gone.
    probe(&dev, sig)
}

fn sigpending_empty(sig: Signal) -> Result<bool, String> {
    Ok(!pcmsig::sys::SignalSet::pending()
        .ctx("sigpending")?
        .contains(sig.number()))
}
