//! `pcmsig-bench`: delivery benchmarks, run in the guest by `cargo xtask bench`.
//!
//! For each path (sigwaitinfo, signalfd+epoll, SA_SIGINFO handler hand-off, and `read()` of
//! event records) and each run, in a fresh forked process, it prints one line `BENCH {json}`:
//! - `latency`: a timer-driven stream of 1 ms periods, then of 10 ms periods; per period, the
//!   receipt time minus the kernel's timestamp of the event (from its `read()` record), as
//!   percentiles in ns, beside the `floor` (a `clock_nanosleep` loop's lateness); each run pinned
//!   to CPU 0;
//! - `throughput`: another thread injects bursts of events as fast as the path takes them
//!   (see [`throughput`]); events per second from the first inject to the last receipt, and how
//!   many were lost.
//!
//! Last, one `burst` line: the largest burst queued without loss under the default
//! RLIMIT_SIGPENDING. Usage: `pcmsig-bench [--runs N] [--events N] [--flood N]`.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use pcmsig::receive::BATCH;
use pcmsig::sys::{now_ns, SigInfo};
use pcmsig::{uapi, Device, EventKind, Mode, Receiver, Signal, Trigger};
use pcmsig_contract::bench::{
    signal_paths, Record, FILES, FILE_COUNTS, FLOOR, LISTENERS, LISTENER_COUNTS, OTHER_USER,
    OTHER_USER_FILE_COUNTS, OTHER_USER_PERIODS, OTHER_USER_PERIOD_US, PATHS as BENCH_PATHS,
    PERCENTILES, SCALE_PERIODS, SCALE_PERIOD_US, SIGQUEUE,
};

type R<T> = Result<T, String>;

/// One receive path, set up by the thread that registers (delivery is thread-directed): a
/// signal receiver (the signalfd one waited for with epoll, as event loops do) or `read()`.
enum Rx {
    Signal(Receiver, Option<Epoll>),
    Read,
}

impl Rx {
    fn new(path: &str, sig: Signal) -> R<Rx> {
        if path == "read" {
            return Ok(Rx::Read);
        }
        let rx = Receiver::new(path.parse::<Mode>()?, &[sig]).map_err(|e| e.to_string())?;
        let epoll = match &rx {
            Receiver::Fd(fd) => {
                let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
                ep.add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))
                    .map_err(|e| e.to_string())?;
                Some(ep)
            }
            _ => None,
        };
        Ok(Rx::Signal(rx, epoll))
    }

    /// Sets up the device file for this path: registered and non-blocking for the signal
    /// paths (its records give timestamps), blocking and unregistered for `read()`.
    fn device(&self, sig: Signal) -> R<Device> {
        if matches!(self, Rx::Read) {
            return Device::open().map_err(|e| e.to_string());
        }
        let dev = Device::open_nonblocking().map_err(|e| e.to_string())?;
        dev.register(sig).map_err(|e| e.to_string())?;
        Ok(dev)
    }

    /// Appends up to 64 events (the signal paths) to `infos`, waiting at most 2 s for the
    /// first; how many came (0: none). `read()`: how many records one call returned.
    fn take(&self, dev: &Device, infos: &mut Vec<SigInfo>) -> R<usize> {
        let e = |e: std::io::Error| e.to_string();
        let t = Duration::from_secs(2);
        infos.clear();
        match self {
            Rx::Read => Ok(dev.read_records(BATCH).map_err(e)?.len()),
            Rx::Signal(Receiver::Wait(w), _) => Ok(w.recv_timeout(t).map_err(e)?.map_or(0, |i| {
                infos.push(i);
                1
            })),
            Rx::Signal(Receiver::Fd(fd), ep) => loop {
                if fd.try_recv_many(infos, BATCH).map_err(e)? > 0 {
                    return Ok(infos.len());
                }
                let mut evs = [EpollEvent::empty()];
                let ready = match ep {
                    Some(ep) => ep
                        .wait(&mut evs, EpollTimeout::from(2000u16))
                        .map_err(|e| e.to_string())?,
                    None => 0,
                };
                if ready == 0 {
                    return Ok(0);
                }
            },
            Rx::Signal(Receiver::Handler(h), _) => h.recv_many(infos, BATCH, t).map_err(e),
        }
    }

    /// The next event as (kind, seq), and its kernel timestamp when the path carries it.
    fn next(&self, dev: &Device) -> R<Option<(EventKind, u32, Option<u64>)>> {
        let e = |e: std::io::Error| e.to_string();
        let info = match self {
            Rx::Read => {
                let recs = dev.read_records(1).map_err(e)?;
                return Ok(recs.first().and_then(|r| {
                    EventKind::from_u32(u32::from(r.kind))
                        .map(|k| (k, r.seq & uapi::SEQ_MASK, Some(r.timestamp_ns)))
                }));
            }
            Rx::Signal(rx, _) => rx.recv_timeout(Duration::from_secs(2)).map_err(e)?,
        };
        Ok(info
            .and_then(|i| uapi::decode(i.value))
            .map(|(k, s)| (k, s, None)))
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// Pins the calling thread (and the threads it starts) to CPU 0, as `cyclictest -a` does: in a
/// latency run the floor's timer and the stream's timer (armed by the trigger, so on the
/// caller's CPU) then fire on the CPU their thread sleeps on, and each path is measured without
/// a wake-up across CPUs that the scheduler's placement would add to some runs and not others.
fn pin_to_cpu0() -> R<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).map_err(|e| e.to_string())?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("sched_setaffinity: {e}"))
}

/// The floor: what no delivery path can beat, a high-resolution timer waking a user thread.
/// Like cyclictest, an absolute `clock_nanosleep` loop measures how late it wakes (ns).
fn floor(events: u32, period_us: u32) -> R<Vec<u64>> {
    let period = u64::from(period_us) * 1000;
    let mut next = now_ns() + period;
    let mut lat = Vec::with_capacity(events as usize);
    for _ in 0..events {
        let ts = libc::timespec {
            tv_sec: (next / 1_000_000_000) as libc::time_t,
            tv_nsec: (next % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if r != 0 && r != libc::EINTR {
            return Err(format!("clock_nanosleep: errno {r}"));
        }
        lat.push(now_ns().saturating_sub(next));
        next += period;
    }
    Ok(lat)
}

/// Latencies (ns) of `events` timer periods of `period_us` through `path`.
fn latency(path: &str, events: u32, period_us: u32) -> R<Vec<u64>> {
    let sig = Signal::rtmin(1);
    let rx = Rx::new(path, sig)?;
    let dev = rx.device(sig)?;
    dev.configure(period_us, events)
        .map_err(|e| e.to_string())?;
    dev.trigger(Trigger::Start).map_err(|e| e.to_string())?;
    let mut stamps: HashMap<u32, u64> = HashMap::new();
    let mut lat = Vec::with_capacity(events as usize);
    loop {
        let Some((kind, seq, stamp)) = rx.next(&dev)? else {
            return Err(format!("{path}: silence after {} periods", lat.len()));
        };
        let got = now_ns();
        let stamp = stamp.or_else(|| {
            dev.take_stamps(&mut stamps);
            stamps.remove(&seq)
        });
        match kind {
            EventKind::PeriodElapsed => {
                lat.push(got.saturating_sub(stamp.ok_or("no record for a period")?))
            }
            EventKind::Stopped => return Ok(lat),
            _ => {}
        }
    }
}

/// Events per second through `path` for `events` injected events, and the count lost.
///
/// A producer thread injects bursts of [`uapi::BURST_MAX`] (one ioctl each) as fast as the
/// consumer takes them, never letting more than a window be outstanding: the queued-signal limit
/// (`RLIMIT_SIGPENDING`, about 1,900 in the guest) for the signal paths, and the file's record
/// ring for `read()`. So the figure is the rate a path sustains without loss; anything lost
/// anyway (a queue overflow) is counted by the module and reported.
fn throughput(path: &str, events: u32, feed: Feed) -> R<(f64, u64)> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let sig = Signal::rtmin(1);
    let rx = Rx::new(path, sig)?;
    let dev = rx.device(sig)?;
    let burst = uapi::BURST_MAX;
    let window: u64 = if matches!(rx, Rx::Read) { 192 } else { 1024 };
    let taken = Arc::new(AtomicU64::new(0));
    let waiting = Arc::new(AtomicBool::new(false));
    let start = Arc::new(std::sync::Barrier::new(2));
    let (taken2, waiting2, start2) = (taken.clone(), waiting.clone(), start.clone());
    // SAFETY: `pthread_self` has no preconditions.
    let consumer = unsafe { libc::pthread_self() };
    let producer = std::thread::spawn(move || -> R<u64> {
        let dev = Device::open().map_err(|e| e.to_string())?;
        start2.wait();
        let t0 = now_ns();
        let mut sent = 0u64;
        while sent < u64::from(events) {
            let n = burst.min(events - sent as u32);
            while sent + u64::from(n) > taken2.load(Ordering::Acquire) + window {
                waiting2.store(true, Ordering::SeqCst);
                if sent + u64::from(n) > taken2.load(Ordering::SeqCst) + window {
                    std::thread::park_timeout(Duration::from_secs(2));
                }
                waiting2.store(false, Ordering::SeqCst);
            }
            match feed {
                Feed::Module => dev
                    .inject_burst(EventKind::PeriodElapsed, n)
                    .map_err(|e| e.to_string())?,
                Feed::Sigqueue => {
                    for i in 0..n {
                        sigqueue_to(consumer, sig, sent + u64::from(i))?;
                    }
                }
            }
            sent += u64::from(n);
        }
        Ok(t0)
    });
    let wake = producer.thread().clone();
    start.wait();
    let mut got = 0u64;
    let mut last = 0;
    let mut infos = Vec::with_capacity(BATCH);
    while got < u64::from(events) {
        let n = rx.take(&dev, &mut infos)? as u64;
        if n == 0 && !matches!(rx, Rx::Read) {
            break;
        }
        got += n;
        taken.store(got, Ordering::Release);
        if waiting.load(Ordering::SeqCst) {
            wake.unpark();
        }
        last = now_ns();
    }
    let t0 = producer
        .join()
        .map_err(|_| "producer panicked".to_string())??;
    let s = dev.stats().map_err(|e| e.to_string())?;
    let secs = (last.saturating_sub(t0)) as f64 / 1e9;
    let lost = u64::from(events) - got.min(u64::from(events));
    Ok((
        if secs > 0.0 { got as f64 / secs } else { 0.0 },
        lost.max(
            s.file.dropped()
                + if matches!(rx, Rx::Read) {
                    s.read_overruns
                } else {
                    0
                },
        ),
    ))
}

/// What feeds a throughput run: the module (INJECT_BURST), or another thread's
/// `pthread_sigqueue()` (the signal path's floor: the kernel's own cost of queueing and taking a
/// real-time signal, with no module in the way).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Feed {
    Module,
    Sigqueue,
}

/// Queues `sig` to thread `to` with an event-shaped value (`SI_QUEUE`, as the module sends);
/// waits out a full queue (EAGAIN: the window is above the limit for a moment) rather than lose.
fn sigqueue_to(to: libc::pthread_t, sig: Signal, n: u64) -> R<()> {
    let value = libc::sigval {
        sival_ptr: uapi::encode(EventKind::PeriodElapsed, n as u32) as usize as *mut libc::c_void,
    };
    loop {
        // SAFETY: `to` is the consumer thread, alive until the producer is joined.
        match unsafe { libc::pthread_sigqueue(to, sig.number(), value) } {
            0 => return Ok(()),
            libc::EAGAIN => std::thread::yield_now(),
            e => return Err(format!("pthread_sigqueue: errno {e}")),
        }
    }
}

/// One listener's latencies (ns) of a timer run on the stream the caller starts: waits at
/// `ready` after registering, then takes every period until the stream stops.
fn listen_periods(ready: &std::sync::Barrier) -> R<Vec<u64>> {
    let sig = Signal::rtmin(1);
    let rx = Rx::new("sigwaitinfo", sig)?;
    let dev = rx.device(sig)?;
    ready.wait();
    let mut stamps: HashMap<u32, u64> = HashMap::new();
    let mut lat = Vec::new();
    let mut silent = 0;
    loop {
        let Some((kind, seq, _)) = rx.next(&dev)? else {
            // Many listeners share their user's queued-signal limit and two vCPUs: one may wait
            // seconds for a CPU while the run goes on, and one that fell behind may have lost
            // signals, its `Stopped` among them (counted by the module). A run still going is
            // waited for (a hang guard of 15 silences of 2 s); a run over with drops ends this
            // listener's sample.
            let s = dev.stats().map_err(|e| e.to_string())?;
            let over = pcmsig::State::from_u32(s.state) != Some(pcmsig::State::Running);
            silent += 1;
            if over && s.file.dropped_queue_full > 0 {
                return Ok(lat);
            }
            if !over && silent < 15 {
                continue;
            }
            return Err(format!(
                "silence after {} periods ({} dropped)",
                lat.len(),
                s.file.dropped_queue_full
            ));
        };
        let got = now_ns();
        dev.take_stamps(&mut stamps);
        match kind {
            EventKind::PeriodElapsed => {
                let stamp = stamps.remove(&seq).ok_or("no record for a period")?;
                lat.push(got.saturating_sub(stamp));
            }
            EventKind::Stopped => return Ok(lat),
            EventKind::Xrun => {
                return Err(format!(
                    "xrun after {} periods: the delivery fell behind the periods",
                    lat.len()
                ))
            }
            _ => {}
        }
    }
}

/// Starts a timer run of `periods` periods of [`SCALE_PERIOD_US`] on the caller's stream once
/// `ready` lets it (every listener registered).
fn run_periods(ready: &std::sync::Barrier, periods: u32) -> R<()> {
    run_periods_of(ready, SCALE_PERIOD_US, periods)
}

/// Starts a timer run of `periods` periods of `period_us` once `ready` lets it.
fn run_periods_of(ready: &std::sync::Barrier, period_us: u32, periods: u32) -> R<()> {
    let control = Device::open().map_err(|e| e.to_string())?;
    ready.wait();
    control
        .configure(period_us, periods)
        .map_err(|e| e.to_string())?;
    control.trigger(Trigger::Start).map_err(|e| e.to_string())
}

/// The cost of `n` listeners: every listener's latencies (ns) over a timer run of `periods`
/// periods, each listener a thread registered on a file of its own; then the deliveries per
/// second to all of them together for about `flood` deliveries injected as fast as the slowest
/// listener takes them (within the queued-signal limit, shared by the user's listeners).
fn scale_listeners(n: u32, periods: u32, flood: u32) -> R<(Vec<u64>, f64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};
    let ready = Arc::new(Barrier::new(n as usize + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let ready = ready.clone();
            std::thread::spawn(move || listen_periods(&ready))
        })
        .collect();
    run_periods(&ready, periods)?;
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| "a listener panicked")??);
    }
    // Throughput: each listener takes what the producer injects; at most `window` deliveries
    // outstanding per listener, all of them under ~1,000 queued signals.
    let window = u64::from((1024 / n).max(1));
    let burst = (window as u32).min(uapi::BURST_MAX);
    let events = (flood / n).max(burst);
    let taken: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(Barrier::new(n as usize + 1));
    let last = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..n as usize)
        .map(|i| {
            let (ready, taken, last) = (ready.clone(), taken.clone(), last.clone());
            std::thread::spawn(move || -> R<()> {
                let sig = Signal::rtmin(1);
                let rx = Rx::new("sigwaitinfo", sig)?;
                let dev = rx.device(sig)?;
                ready.wait();
                let mut infos = Vec::with_capacity(1);
                let mut got = 0u64;
                while got < u64::from(events) {
                    let k = rx.take(&dev, &mut infos)? as u64;
                    if k == 0 {
                        return Err(format!("silence after {got} events"));
                    }
                    got += k;
                    taken[i].store(got, Ordering::Release);
                }
                last.fetch_max(now_ns(), Ordering::AcqRel);
                Ok(())
            })
        })
        .collect();
    let dev = Device::open().map_err(|e| e.to_string())?;
    ready.wait();
    let t0 = now_ns();
    let mut sent = 0u64;
    while sent < u64::from(events) {
        let k = burst.min(events - sent as u32);
        loop {
            let slowest = taken.iter().map(|t| t.load(Ordering::Acquire)).min();
            if sent + u64::from(k) <= slowest.unwrap_or(0) + window {
                break;
            }
            std::thread::yield_now();
        }
        dev.inject_burst(EventKind::PeriodElapsed, k)
            .map_err(|e| e.to_string())?;
        sent += u64::from(k);
    }
    for t in threads {
        t.join().map_err(|_| "a listener panicked")??;
    }
    let secs = last.load(Ordering::Acquire).saturating_sub(t0) as f64 / 1e9;
    let deliveries = f64::from(n) * f64::from(events);
    Ok((lat, if secs > 0.0 { deliveries / secs } else { 0.0 }))
}

/// The cost of `n` open files of the stream's user, one of them a listener: its latencies (ns)
/// over a timer run of `periods` periods (every event also goes to every file's records), and
/// the time of one GET_STATS (ns, the median of 200).
fn scale_files(n: u32, periods: u32) -> R<(Vec<u64>, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::sync::{Arc, Barrier};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    let want = u64::from(n) + 64;
    setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want))
        .map_err(|e| format!("raising RLIMIT_NOFILE to {want}: {e}"))?;
    let others: Vec<Device> = (1..n)
        .map(|_| Device::open().map_err(|e| e.to_string()))
        .collect::<R<_>>()?;
    let ready = Arc::new(Barrier::new(2));
    let listener = {
        let ready = ready.clone();
        std::thread::spawn(move || listen_periods(&ready))
    };
    run_periods(&ready, periods)?;
    let lat = listener.join().map_err(|_| "the listener panicked")??;
    let probe = Device::open().map_err(|e| e.to_string())?;
    let mut times: Vec<u64> = (0..200)
        .map(|_| {
            let t = now_ns();
            probe.stats().map(|_| now_ns() - t)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    times.sort_unstable();
    drop(others);
    Ok((lat, pct(&times, 0.5)))
}

/// Another user's cost to this one (review finding 2): uid 1000, in a child, holds `n` open
/// files of its own stream and injects bursts back to back (each walks its files: the emitter
/// check, then the delivery of every event to every file's records); root's listener
/// latencies (ns) meanwhile, over [`OTHER_USER_PERIODS`] periods of [`OTHER_USER_PERIOD_US`].
/// Everything on CPU 0: the timers, both users' delivery work items (the BH workqueue runs on
/// the CPU that queued them) and both processes.
fn scale_other_user(n: u32) -> R<Vec<u64>> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};
    pin_to_cpu0()?;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    let want = u64::from(n) + 64;
    setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want))
        .map_err(|e| format!("raising RLIMIT_NOFILE to {want}: {e}"))?;
    std::fs::set_permissions("/dev/pcmsig", std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod /dev/pcmsig: {e}"))?;
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    // SAFETY: single-threaded here (each figure runs in a fresh forked process); the child
    // ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ready_r);
        let code = match other_user_load(n, ready_w) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pcmsig-bench: uid 1000's {n} files: {e}");
                1
            }
        };
        // SAFETY: end of the forked child.
        unsafe { libc::_exit(code) };
    }
    drop(ready_w);
    let result = (|| {
        let mut byte = [0u8; 1];
        let got = nix::unistd::read(&ready_r, &mut byte).map_err(|e| e.to_string())?;
        if got != 1 {
            return Err(format!("uid 1000's {n} files did not open"));
        }
        let ready = Arc::new(Barrier::new(2));
        let listener = {
            let ready = ready.clone();
            std::thread::spawn(move || listen_periods(&ready))
        };
        run_periods_of(&ready, OTHER_USER_PERIOD_US, OTHER_USER_PERIODS)?;
        listener.join().map_err(|_| "the listener panicked")?
    })();
    // SAFETY: `pid` is our child, reaped once here.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    result
}

/// The other user of [`scale_other_user`]: becomes uid 1000, opens `n` files, says so on
/// `ready`, then injects bursts until it is killed.
fn other_user_load(n: u32, ready: std::os::fd::OwnedFd) -> R<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::setresuid(1000, 1000, 1000) } != 0 {
        return Err(format!("setresuid: {}", std::io::Error::last_os_error()));
    }
    let files: Vec<Device> = (0..n)
        .map(|_| Device::open().map_err(|e| e.to_string()))
        .collect::<R<_>>()?;
    nix::unistd::write(&ready, &[1]).map_err(|e| e.to_string())?;
    drop(ready);
    let dev = files.first().ok_or("no file")?;
    loop {
        dev.inject_burst(EventKind::PeriodElapsed, uapi::BURST_MAX)
            .map_err(|e| e.to_string())?;
    }
}

/// Largest burst one thread can have queued without loss under the default rlimit.
fn burst() -> R<(u64, u64)> {
    let sig = Signal::rtmin(1);
    sig.block().map_err(|e| e.to_string())?;
    let dev = Device::open().map_err(|e| e.to_string())?;
    dev.register(sig).map_err(|e| e.to_string())?;
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        dev.inject(EventKind::PeriodElapsed)
            .map_err(|e| e.to_string())?;
        sent += 1;
        if sent % 64 == 0 || Instant::now() > deadline {
            let s = dev.stats().map_err(|e| e.to_string())?;
            if s.file.dropped_queue_full > 0 || Instant::now() > deadline {
                let (soft, _) =
                    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_SIGPENDING)
                        .map_err(|e| e.to_string())?;
                return Ok((s.file.delivered, soft));
            }
        }
    }
}

/// Runs `f` in a forked child, which prints its result line; isolation of signal state.
fn forked(f: impl FnOnce() -> R<Record>) {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: single-threaded when forking; the child ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let (record, code) = match f() {
            Ok(r) => (r, 0),
            Err(e) => (Record::Error(e), 1),
        };
        println!("{}", record.to_line());
        let _ = std::io::stdout().flush();
        // SAFETY: end of the forked child.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

mod flags {
    xflags::xflags! {
        /// The delivery benchmarks, run in the guest by `cargo xtask bench`: one `BENCH {json}`
        /// line per figure.
        cmd pcmsig-bench {
            /// Runs per figure (default: pcmsig_contract::bench::RUNS).
            optional --runs n: u32
            /// Timer periods per latency run (default: BENCH_EVENTS).
            optional --events n: u32
            /// Events per throughput run (default: BENCH_FLOOD).
            optional --flood n: u32
            /// Only the isolation curve (one user's latency against another user's files).
            optional --isolation
        }
    }
}

fn main() {
    use pcmsig_contract::bench::{
        EVENTS as BENCH_EVENTS, FLOOD as BENCH_FLOOD, RUNS as BENCH_RUNS,
    };
    let flags = flags::PcmsigBench::from_env_or_exit();
    let runs = flags.runs.unwrap_or(BENCH_RUNS);
    let events = flags.events.unwrap_or(BENCH_EVENTS);
    let flood = flags.flood.unwrap_or(BENCH_FLOOD);
    // Latency at two period lengths (a short run at 10 ms: the same wall time matters less
    // than the idle path between periods), each beside its floor.
    let periods = [(1_000u32, events), (10_000, (events / 10).max(20))];
    for run in (1..=runs).filter(|_| !flags.isolation) {
        for (period_us, n) in periods {
            let suffix = if period_us == 1_000 {
                String::new()
            } else {
                format!("@{}ms", period_us / 1000)
            };
            for path in std::iter::once(FLOOR).chain(BENCH_PATHS) {
                let name = format!("{path}{suffix}");
                forked(|| {
                    pin_to_cpu0()?;
                    let mut l = if path == FLOOR {
                        floor(n, period_us)?
                    } else {
                        latency(path, n, period_us)?
                    };
                    l.sort_unstable();
                    Ok(Record::Latency {
                        path: name.clone(),
                        run,
                        n: l.len(),
                        pcts_ns: PERCENTILES.map(|(_, p)| pct(&l, p)),
                    })
                });
            }
        }
        let floors = signal_paths().map(|p| (p, Feed::Sigqueue));
        for (path, feed) in BENCH_PATHS
            .map(|p| (p, Feed::Module))
            .into_iter()
            .chain(floors)
        {
            forked(|| {
                let (per_s, lost) = throughput(path, flood, feed)?;
                let suffix = if feed == Feed::Sigqueue { SIGQUEUE } else { "" };
                Ok(Record::Throughput {
                    path: format!("{path}{suffix}"),
                    run,
                    n: flood,
                    per_s,
                    lost,
                })
            });
        }
    }
    // The cost curves: the listeners' latency and throughput, one open file's latency and
    // GET_STATS, as the counts grow.
    for run in (1..=runs).filter(|_| !flags.isolation) {
        for n in LISTENER_COUNTS {
            forked(|| {
                let (mut lat, per_s) = scale_listeners(n, SCALE_PERIODS, flood / 5)
                    .map_err(|e| format!("{n} listeners: {e}"))?;
                lat.sort_unstable();
                Ok(Record::Scale {
                    what: LISTENERS.into(),
                    n,
                    run,
                    pcts_ns: PERCENTILES.map(|(_, p)| pct(&lat, p)),
                    per_s: Some(per_s),
                    get_stats_ns: None,
                })
            });
        }
        for n in FILE_COUNTS {
            forked(|| {
                let (mut lat, get_stats_ns) =
                    scale_files(n, SCALE_PERIODS).map_err(|e| format!("{n} open files: {e}"))?;
                lat.sort_unstable();
                Ok(Record::Scale {
                    what: FILES.into(),
                    n,
                    run,
                    pcts_ns: PERCENTILES.map(|(_, p)| pct(&lat, p)),
                    per_s: None,
                    get_stats_ns: Some(get_stats_ns),
                })
            });
        }
    }
    // The isolation curve: one user's latency while another user's files grow.
    for run in 1..=runs {
        for n in OTHER_USER_FILE_COUNTS {
            forked(|| {
                let mut lat = scale_other_user(n)
                    .map_err(|e| format!("another user's {n} open files: {e}"))?;
                lat.sort_unstable();
                Ok(Record::Scale {
                    what: OTHER_USER.into(),
                    n,
                    run,
                    pcts_ns: PERCENTILES.map(|(_, p)| pct(&lat, p)),
                    per_s: None,
                    get_stats_ns: None,
                })
            });
        }
    }
    if flags.isolation {
        return;
    }
    forked(|| {
        let (queued, rlimit_sigpending) = burst()?;
        Ok(Record::Burst {
            queued,
            rlimit_sigpending,
        })
    });
}
