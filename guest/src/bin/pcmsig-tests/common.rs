//! Helpers shared by the guest tests.

use pcmsig::sys::{self, SigInfo, SignalSet};
use pcmsig::{uapi, Device, EventKind, Signal, State, Stats};

use crate::runner::{wait, Context, QUIET, SKIP};
use crate::{ensure, ensure_eq};

/// `SIGRTMIN() + n`.
pub fn rt(n: i32) -> Signal {
    Signal::rtmin(n)
}

/// Opens the device and registers the calling thread for `sig` (blocked first).
pub fn listen(sig: Signal) -> Result<Device, String> {
    sig.block().ctx("blocking the signal")?;
    let dev = Device::open().ctx("opening /dev/pcmsig")?;
    dev.register(sig).ctx("registering")?;
    Ok(dev)
}

/// A short mix of event kinds, as a stream produces them, for tests that inject events.
pub const MIXED_EVENTS: [EventKind; 5] = [
    EventKind::Started,
    EventKind::PeriodElapsed,
    EventKind::PeriodElapsed,
    EventKind::Xrun,
    EventKind::Stopped,
];

/// The period of tests that expect an exact sequence of events. The timer turns a late expiry
/// that finds more than [`pcmsig::uapi::STALL_PERIODS_MAX`] periods passed into an xrun: with
/// 1 ms periods that is a 64 ms stall of the guest, which a CI VM slowed 3x reached (the xrun
/// tests then met the timer's xrun instead of the queue's); at 20 ms it takes over a second.
pub const STEADY_PERIOD_US: u32 = 20_000;
const _: () =
    assert!(STEADY_PERIOD_US as u64 * pcmsig::uapi::STALL_PERIODS_MAX as u64 >= 1_000_000);

/// [`listen`], then a stream of `periods` periods of `period_us` (0: until stopped), started.
pub fn listen_to_stream(sig: Signal, period_us: u32, periods: u32) -> Result<Device, String> {
    let dev = listen(sig)?;
    dev.configure(period_us, periods).ctx("configure")?;
    dev.trigger(pcmsig::Trigger::Start).ctx("start")?;
    Ok(dev)
}

/// Waits for the next of `sigs` (they must be blocked).
pub fn recv(sigs: &[Signal]) -> Result<SigInfo, String> {
    let set = SignalSet::from(sigs);
    sys::sigtimedwait(&set, wait())
        .ctx("sigtimedwait")?
        .ok_or_else(|| format!("no signal within {:?}", wait()))
}

/// Asserts that none of `sigs` arrives within a short while.
pub fn recv_none(sigs: &[Signal]) -> Result<(), String> {
    let set = SignalSet::from(sigs);
    match sys::sigtimedwait(&set, QUIET).ctx("sigtimedwait")? {
        None => Ok(()),
        Some(i) => Err(format!(
            "unexpected signal {} value {:#x}",
            i.signo, i.value
        )),
    }
}

/// The events of a stream configured for `periods` periods and started: Prepared, Started, the
/// periods, Stopped.
pub fn finite_run(periods: usize) -> Vec<EventKind> {
    let mut kinds = vec![EventKind::Prepared, EventKind::Started];
    kinds.extend(std::iter::repeat_n(EventKind::PeriodElapsed, periods));
    kinds.push(EventKind::Stopped);
    kinds
}

/// Every ioctl that takes a pointer argument, by name.
pub const POINTER_IOCTLS: [(&str, u32); 6] = [
    ("register", uapi::IOC_REGISTER),
    ("configure", uapi::IOC_CONFIGURE),
    ("trigger", uapi::IOC_TRIGGER),
    ("inject", uapi::IOC_INJECT),
    ("inject burst", uapi::IOC_INJECT_BURST),
    ("stats", uapi::IOC_GET_STATS),
];

/// Decodes a pcmsig payload, checking the signal and `SI_QUEUE`.
pub fn expect_event(info: &SigInfo, sig: Signal) -> Result<(EventKind, u32), String> {
    ensure_eq!(info.signo, sig.number(), "signal number");
    ensure_eq!(info.code, uapi::SI_CODE, "si_code must be SI_QUEUE");
    ensure_eq!(info.pid, 0, "si_pid of a kernel-sent signal");
    uapi::decode(info.value)
        .ok_or_else(|| format!("si_int {:#x} is not a pcmsig value", info.value))
}

/// Receives `kinds.len()` events on `sig` and checks their kinds and consecutive sequence
/// numbers; returns the first sequence number.
pub fn expect_kinds(sig: Signal, kinds: &[EventKind]) -> Result<u32, String> {
    let mut first = None;
    for (i, want) in kinds.iter().enumerate() {
        let info = recv(&[sig]).map_err(|e| format!("event {i} ({want:?}): {e}"))?;
        let (kind, seq) = expect_event(&info, sig)?;
        ensure_eq!(kind, *want, "kind of event {i}");
        let base = *first.get_or_insert(seq);
        ensure_eq!(
            seq,
            (base + i as u32) & uapi::SEQ_MASK,
            "sequence number of event {i}"
        );
        ensure_eq!(
            info.value,
            uapi::encode(kind, seq),
            "si_int encoding of event {i}"
        );
    }
    first.ok_or_else(|| "no events expected".to_string())
}

/// Checks that an ioctl failed with `errno`.
pub fn expect_errno<T: std::fmt::Debug, E: HasErrno>(
    r: Result<T, E>,
    errno: i32,
    what: &str,
) -> Result<(), String> {
    match r {
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), expected errno {errno}")),
        Err(e) => {
            ensure_eq!(e.errno(), Some(errno), "{what}: {e}");
            Ok(())
        }
    }
}

/// An error that carries an errno: the library's and std's.
pub trait HasErrno: std::fmt::Display {
    fn errno(&self) -> Option<i32>;
}

impl HasErrno for pcmsig::Error {
    fn errno(&self) -> Option<i32> {
        pcmsig::Error::errno(self)
    }
}

impl HasErrno for std::io::Error {
    fn errno(&self) -> Option<i32> {
        self.raw_os_error()
    }
}

/// Checks fired = delivered + dropped for a listener's and the total counters.
pub fn check_invariant(s: &Stats) -> Result<(), String> {
    for (name, l) in [("file", &s.file), ("total", &s.total)] {
        ensure!(
            l.fired == l.delivered + l.dropped(),
            "{name}: fired {} != delivered {} + dropped {}",
            l.fired,
            l.delivered,
            l.dropped()
        );
    }
    Ok(())
}

/// The run's random seed: `PCMSIG_SEED` (`cargo xtask test --seed N`), else the clock.
pub fn seed() -> u64 {
    std::env::var(pcmsig_contract::env::SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// xorshift64*: small, seeded, good enough to pick operations (the storm, the model).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The debugfs statistics file (root only).
pub const DEBUGFS_STATS: &str = "/sys/kernel/debug/pcmsig/stats";

/// The value of the module's line `name` of debugfs `stats` (`delay_point_hits`, `live_*`).
pub fn debugfs_stat(name: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(DEBUGFS_STATS).ctx("reading debugfs stats")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {name} line in:\n{text}"))
}

/// Checks that the block of user `uid`'s stream in debugfs `stats` says exactly what GET_STATS
/// said (`s`, read while the stream was quiet): every line, in order, none missing or extra.
/// The last lines, `delivery_handoffs`, `delivery_softirq_yields` and `delivery_run_max`, are not
/// in GET_STATS: the first two are counts, the last must be within `uapi::DELIVERY_RUN_MAX`.
pub fn check_debugfs(uid: u32, s: &Stats) -> Result<(), String> {
    let (text, mut block) = debugfs_block(uid)?;
    let header = format!("stream {uid}");
    let run_max = block
        .pop()
        .and_then(|l| l.strip_prefix("delivery_run_max ")?.parse::<u32>().ok())
        .ok_or_else(|| format!("no delivery_run_max line ending {header:?} in:\n{text}"))?;
    for name in ["delivery_softirq_yields", "delivery_handoffs"] {
        block
            .pop()
            .and_then(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .ok_or_else(|| format!("no {name} line in its place in:\n{text}"))?;
    }
    ensure!(
        run_max <= uapi::DELIVERY_RUN_MAX,
        "delivery_run_max {run_max} is over {}",
        uapi::DELIVERY_RUN_MAX
    );
    let state = State::from_u32(s.state).map_or("?", State::name);
    let t = &s.total;
    let want = vec![
        format!("state {state}"),
        format!("listeners {}", s.listeners),
        format!("events {}", s.events),
        format!("periods {}", s.periods),
        format!("fired {}", t.fired),
        format!("delivered {}", t.delivered),
        format!("dropped_queue_full {}", t.dropped_queue_full),
        format!("dropped_exited {}", t.dropped_exited),
        format!("dropped_execd {}", t.dropped_execd),
        format!("dropped_perm {}", t.dropped_perm),
    ];
    ensure_eq!(block, want, "debugfs block {header:?} of:\n{text}");
    Ok(())
}

/// The value of line `name` of user `uid`'s stream block in debugfs `stats`
/// (`delivery_handoffs`, `delivery_softirq_yields`, ...).
pub fn debugfs_stream_stat(uid: u32, name: &str) -> Result<u64, String> {
    let (text, block) = debugfs_block(uid)?;
    block
        .iter()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| format!("no {name} line in stream {uid}'s block of:\n{text}"))
}

/// The debugfs `stats` text and the lines of user `uid`'s stream block (empty if none).
pub fn debugfs_block(uid: u32) -> Result<(String, Vec<String>), String> {
    let text = std::fs::read_to_string(DEBUGFS_STATS).ctx("reading debugfs stats")?;
    let header = format!("stream {uid}");
    let block = text
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with("stream "))
        .map(str::to_string)
        .collect();
    Ok((text, block))
}

/// Sets RLIMIT_SIGPENDING (soft and hard) for this process.
pub fn set_sigpending_limit(n: u64) -> Result<(), String> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_SIGPENDING, n, n)
        .map_err(|e| format!("setrlimit: {e}"))
}

/// `setresuid(r, e, s)`.
pub fn setresuid(r: u32, e: u32, s: u32) -> Result<(), String> {
    // glibc applies it to every thread.
    use nix::unistd::Uid;
    nix::unistd::setresuid(Uid::from_raw(r), Uid::from_raw(e), Uid::from_raw(s))
        .map_err(|err| format!("setresuid({r},{e},{s}): {err}"))
}

/// Injects `n` period events, one ioctl (and so one signal to each listener) each.
pub fn inject_periods(dev: &Device, n: usize) -> Result<(), String> {
    for i in 0..n {
        dev.inject(EventKind::PeriodElapsed)
            .map_err(|e| format!("inject {}/{n}: {e}", i + 1))?;
    }
    Ok(())
}

/// With `RLIMIT_SIGPENDING` at `limit`, a listener on SIGRTMIN and `n` periods injected: the
/// signal and the listening device.
pub fn listen_over_limit(limit: u64, n: usize) -> Result<(Signal, Device), String> {
    set_sigpending_limit(limit)?;
    let sig = rt(0);
    let dev = listen(sig)?;
    inject_periods(&dev, n)?;
    Ok((sig, dev))
}

/// Becomes uid `uid`, then root of a new user namespace that maps its root to `uid` (a
/// container's root): for a forked child.
pub fn enter_user_namespace_as(uid: u32) -> Result<(), String> {
    setresuid(uid, uid, uid)?;
    // Changing uid made the process non-dumpable, which makes its /proc files root's: dumpable
    // again, or it cannot write its own uid_map.
    nix::sys::prctl::set_dumpable(true).ctx("PR_SET_DUMPABLE")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .ctx("unshare(CLONE_NEWUSER) (CONFIG_USER_NS)")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).ctx("uid_map")
}

/// Polls `done` every millisecond until it says so; fails with `stuck()` once the hang guard's
/// time has passed (a hang guard, not a measure).
pub fn wait_until(
    mut done: impl FnMut() -> Result<bool, String>,
    stuck: impl Fn() -> String,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + crate::runner::hang_guard();
    while !done()? {
        ensure!(std::time::Instant::now() < deadline, "{}", stuck());
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// Makes the device node readable and writable by every user.
pub fn chmod_device_666() -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(uapi::DEVICE_PATH, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod {}: {e}", uapi::DEVICE_PATH))
}

/// Runs `f` in a forked child and returns its exit code (the child's failure reason is printed
/// by the child as a diagnostic).
pub fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<i32, String> {
    wait_child(spawn_child(f)?)
}

/// Runs `f` in a forked child and returns its pid at once (collect it with [`wait_child`]).
pub fn spawn_child(f: impl FnOnce() -> Result<(), String>) -> Result<i32, String> {
    // SAFETY: the test process is single-threaded when this is called.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                crate::runner::diag(&format!("child: {e}"));
                1
            }
        };
        // SAFETY: end the child without the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Waits for a child; its exit code, or 128 + signal. (libc, not nix's `waitpid`: nix's
/// `WaitStatus` cannot hold a death by a real-time signal, which these tests must report.)
pub fn wait_child(pid: i32) -> Result<i32, String> {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(r == pid, "waitpid: {}", std::io::Error::last_os_error());
    Ok(exit_code(status))
}

/// A wait status as an exit code, or 128 + the signal that ended the process.
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Waits for a child as [`wait_child`] does, but for at most `limit` (a hang guard, not a
/// measure: `None` when the child is still alive then).
pub fn wait_child_for(pid: i32, limit: std::time::Duration) -> Result<Option<i32>, String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: polling our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        ensure!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if r == pid {
            return Ok(Some(exit_code(status)));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Waits until thread `tid` of this process sits in system call `nr` (e.g. `libc::SYS_read`),
/// so that a signal sent next interrupts that call rather than arriving before it.
pub fn wait_blocked_in(tid: i32, nr: i64) -> Result<(), String> {
    wait_in_syscall(&format!("/proc/self/task/{tid}/syscall"), nr)
}

/// Waits until process `pid` (single-threaded) sits in system call `nr`.
pub fn wait_process_blocked_in(pid: i32, nr: i64) -> Result<(), String> {
    wait_in_syscall(&format!("/proc/{pid}/syscall"), nr)
}

/// Waits until thread `tid` of this process no longer has `signo` pending in its own queue: the
/// kernel dequeued it on the way back to user space, so a system call the signal interrupted
/// has already returned (or is restarting) and the handler is running or has run.
pub fn wait_signal_taken(tid: i32, signo: i32) -> Result<(), String> {
    let path = format!("/proc/self/task/{tid}/status");
    let bit = 1u64 << (signo - 1);
    wait_for_proc(
        &path,
        |text| {
            let pending = thread_pending(&path, text)?;
            Ok(pending & bit == 0)
        },
        |_| format!("{path}: signal {signo} still pending after 10 s"),
    )
}

/// Waits until thread `tid` of process `pid` has SIGKILL pending in its own queue (as
/// `zap_other_threads` leaves it, when another thread's exec or exit kills the thread group).
pub fn wait_sigkill_pending(pid: i32, tid: i32) -> Result<(), String> {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let bit = 1u64 << (libc::SIGKILL - 1);
    wait_for_proc(
        &path,
        |text| {
            let pending = thread_pending(&path, text)?;
            Ok(pending & bit != 0)
        },
        |_| format!("{path}: no SIGKILL pending after 10 s"),
    )
}

/// The signals pending in a thread's own queue, from its `/proc` `status` text.
fn thread_pending(path: &str, status: &str) -> Result<u64, String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| format!("{path}: no SigPnd line"))
}

/// Waits until the `syscall` file at `path` names system call `nr`.
fn wait_in_syscall(path: &str, nr: i64) -> Result<(), String> {
    wait_for_proc(
        path,
        |text| {
            Ok(text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<i64>().ok())
                == Some(nr))
        },
        |text| format!("{path}: never blocked in syscall {nr}: {text}"),
    )
}

/// Reads the `/proc` file at `path` every millisecond until `done` finds in it what we wait
/// for; after 10 s fails with `stuck`'s description of the last text read.
fn wait_for_proc(
    path: &str,
    done: impl Fn(&str) -> Result<bool, String>,
    stuck: impl Fn(&str) -> String,
) -> Result<(), String> {
    let deadline =
        std::time::Instant::now() + crate::runner::paced(std::time::Duration::from_secs(10));
    loop {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        if done(&text)? {
            return Ok(());
        }
        ensure!(std::time::Instant::now() < deadline, "{}", stuck(&text));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A call running on its own thread, watched from outside.
pub struct Call<T> {
    /// Its thread id.
    pub tid: i32,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<T>,
}

/// Starts `f` on a new thread.
pub fn call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<Call<T>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(nix::unistd::gettid().as_raw());
        let r = f();
        d.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    });
    let tid = rx.recv().map_err(|_| "the thread died before it started")?;
    Ok(Call { tid, done, handle })
}

impl<T> Call<T> {
    /// Waits until the call has returned (`true`) or sleeps in system call `nr` (`false`).
    pub fn returned_or_asleep_in(&self, nr: i64) -> Result<bool, String> {
        let dir = format!("/proc/self/task/{}", self.tid);
        let deadline = std::time::Instant::now() + crate::runner::hang_guard();
        loop {
            if self.done.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(true);
            }
            // The state is read first: a sleeping thread stays in its call while we read both.
            let asleep = std::fs::read_to_string(format!("{dir}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
                })
                .is_some_and(|state| state == "D" || state == "S");
            let in_call = std::fs::read_to_string(format!("{dir}/syscall"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
                == Some(nr);
            if asleep && in_call && !self.done.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(false);
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "thread {} neither returned nor slept in syscall {nr}",
                self.tid
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    pub fn join(self) -> Result<T, String> {
        self.handle
            .join()
            .map_err(|_| "the thread panicked".to_string())
    }
}

const DRIVER: &str = "/sys/bus/pci/drivers/pcmsig-edu";

/// Whether this VM is the one with the device.
pub fn edu_expected() -> bool {
    std::env::var(pcmsig_contract::env::EDU).as_deref() == Ok("1")
}

/// The PCI address of the bound edu device, or the reason to skip.
pub fn edu_address() -> Result<String, String> {
    let bound = std::fs::read_dir(DRIVER).ok().and_then(|d| {
        d.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.contains(':'))
    });
    match (bound, edu_expected()) {
        (Some(a), _) => Ok(a),
        (None, true) => Err(format!(
            "{}=1 but no device is bound to {DRIVER}",
            pcmsig_contract::env::EDU
        )),
        (None, false) => Err(format!("{SKIP}no edu device in this VM")),
    }
}

/// The source a period record is expected to carry in this VM.
pub fn period_source() -> u16 {
    if edu_address().is_ok() {
        uapi::EventSource::Device as u16
    } else {
        uapi::EventSource::Timer as u16
    }
}

/// The environment word with which the exec test runs this program again, as the probe that
/// reports whether the signal (its number the value) is pending (exit 3) or not (exit 0).
pub const EXEC_PROBE: &str = "PCMSIG_TEST_EXEC_PROBE";

/// The probe [`EXEC_PROBE`] asks for, if it does: the exit code.
pub fn exec_probe() -> Option<i32> {
    let signo: i32 = std::env::var(EXEC_PROBE).ok()?.parse().ok()?;
    let mut set = *nix::sys::signal::SigSet::empty().as_ref();
    // SAFETY: `sigpending` writes the pending set into a valid sigset.
    let r = unsafe { libc::sigpending(&mut set) };
    // SAFETY: `set` is a valid sigset; `signo` is a signal number.
    let is = r == 0 && unsafe { libc::sigismember(&set, signo) } == 1;
    Some(if r != 0 {
        2
    } else if is {
        3
    } else {
        0
    })
}
