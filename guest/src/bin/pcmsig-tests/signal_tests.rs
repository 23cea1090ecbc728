//! Guest tests of the signal semantics applications rely on, exercised through pcmsig.

use std::time::{Duration, Instant};

use pcmsig::sys::{self, SignalSet};
use pcmsig::{
    cricket, uapi, Device, EventKind as K, FdReceiver, GapDetector, HandlerReceiver, SeqCheck,
    Signal, WaitReceiver,
};

use crate::common::*;
use crate::runner::{diag, wait, Context, Test, TestResult};
use crate::{ensure, ensure_eq};

pub fn tests() -> Vec<Test> {
    crate::tests![
        rt_signal_queues_fifo_within_one_signal,
        lower_numbered_rt_signal_is_taken_first,
        standard_signal_is_taken_before_rt_signals,
        sigusr1_burst_coalesces_sigrtmin_burst_does_not,
        sigusr1_at_rlimit_sigpending_arrives_without_its_payload,
        queues_up_to_rlimit_sigpending_without_loss,
        signalfd_reports_ssi_int_and_si_queue,
        every_receive_mode_sees_the_same_events,
        sigtimedwait_times_out_with_eagain,
        blocked_read_fails_with_eintr_without_sa_restart,
        blocked_read_restarts_with_sa_restart,
        device_read_is_interruptible,
        only_the_registering_thread_receives,
        cricket_scorer_sigqueues_to_manager,
        cricket_manager_fed_by_the_kernel_stream,
    ]
}

fn rt_signal_queues_fifo_within_one_signal() -> TestResult {
    let sig = rt(0);
    let dev = listen(sig)?;
    inject_periods(&dev, 20)?;
    // 20 pending instances of one signal come out in the order they were queued.
    expect_kinds(sig, &[K::PeriodElapsed; 20])?;
    recv_none(&[sig])
}

fn lower_numbered_rt_signal_is_taken_first() -> TestResult {
    // Three files of one thread, three signals: every event is pending on all three.
    let sigs = [rt(5), rt(2), rt(9)];
    let devs: Vec<Device> = sigs.iter().map(|s| listen(*s)).collect::<Result<_, _>>()?;
    devs[0].inject(K::Started).ctx("inject")?;
    devs[0].inject(K::PeriodElapsed).ctx("inject")?;
    let mut got = Vec::new();
    for _ in 0..6 {
        let i = recv(&sigs)?;
        got.push((
            i.signo - sys::sigrtmin(),
            uapi::decode(i.value).map(|(k, _)| k),
        ));
    }
    let want = [2, 2, 5, 5, 9, 9].map(Some);
    ensure_eq!(
        got.iter().map(|g| Some(g.0)).collect::<Vec<_>>(),
        want.to_vec(),
        "signals by number"
    );
    ensure!(
        got.chunks(2)
            .all(|c| c[0].1 == Some(K::Started) && c[1].1 == Some(K::PeriodElapsed)),
        "FIFO within each: {got:?}"
    );
    Ok(())
}

fn standard_signal_is_taken_before_rt_signals() -> TestResult {
    let (usr1, rtmin) = (Signal::USR1, rt(0));
    let _a = listen(rtmin)?;
    let b = listen(usr1)?;
    b.inject(K::Started).ctx("inject")?;
    // Both pending; the lower number (the standard signal) comes first.
    let first = recv(&[usr1, rtmin])?;
    ensure_eq!(first.signo, usr1.number(), "first signal");
    ensure_eq!(
        first.code,
        uapi::SI_CODE,
        "SIGUSR1 from pcmsig still carries SI_QUEUE"
    );
    let second = recv(&[usr1, rtmin])?;
    ensure_eq!(second.signo, rtmin.number(), "second signal");
    ensure_eq!(second.value, first.value, "same event");
    Ok(())
}

fn sigusr1_at_rlimit_sigpending_arrives_without_its_payload() -> TestResult {
    // The user's signal queue is full (RLIMIT_SIGPENDING of 1, taken by a real-time signal we
    // queue to ourselves). For a real-time signal the kernel then refuses (-EAGAIN: a counted
    // drop); for a standard one it still makes it pending, but bare: `si_code` SI_USER, no
    // payload, and `send_sig_info` reports success. The module cannot tell (nothing it may call
    // shows it), so it counts a delivery; the receiver can: `si_code` is not SI_QUEUE.
    set_sigpending_limit(1)?;
    let (usr1, filler) = (Signal::USR1, rt(1));
    filler.block().ctx("block the filler")?;
    let dev = listen(usr1)?;
    sys::sigqueue(nix::unistd::getpid().as_raw(), filler.number(), 7).ctx("sigqueue the filler")?;
    dev.inject(K::Started).ctx("inject")?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(
        (s.file.fired, s.file.delivered, s.file.dropped()),
        (1, 1, 0),
        "send_sig_info said 0: counted as delivered"
    );
    let i = recv(&[usr1])?;
    ensure_eq!(
        i.code,
        0,
        "si_code SI_USER, not SI_QUEUE: the payload is gone"
    );
    ensure_eq!(i.value, 0, "no si_int");
    ensure!(
        pcmsig::uapi::decode(i.value).is_none(),
        "a bare signal decodes to no event"
    );
    // The filler is still queued, payload intact.
    let f = recv(&[filler])?;
    ensure_eq!((f.code, f.value), (-1, 7));
    Ok(())
}

fn sigusr1_burst_coalesces_sigrtmin_burst_does_not() -> TestResult {
    let (usr1, rtmin) = (Signal::USR1, rt(0));
    let a = listen(usr1)?;
    let _b = listen(rtmin)?;
    inject_periods(&a, 10)?;
    // SIGRTMIN: 10 queued instances.
    let first = expect_kinds(rtmin, &[K::PeriodElapsed; 10])?;
    // SIGUSR1: one pending instance, the first event's; the other 9 merged into it.
    let mut gaps = GapDetector::default();
    let i = recv(&[usr1])?;
    let (_, seq) = expect_event(&i, usr1)?;
    ensure_eq!(seq, first, "the surviving SIGUSR1 is the first event's");
    ensure_eq!(gaps.check(seq), SeqCheck::First);
    recv_none(&[usr1])?;
    // The kernel reports these as delivered: the loss is silent for standard signals...
    ensure_eq!(a.stats().ctx("stats")?.file.delivered, 10);
    // ...and only the sequence numbers reveal it, at the next event.
    a.inject(K::Stopped).ctx("inject")?;
    let i = recv(&[usr1])?;
    let (_, seq) = expect_event(&i, usr1)?;
    ensure_eq!(gaps.check(seq), SeqCheck::Gap { missed: 9 });
    diag("10 events: SIGRTMIN received 10, SIGUSR1 received 1 (gap of 9 detected)");
    Ok(())
}

fn queues_up_to_rlimit_sigpending_without_loss() -> TestResult {
    let (sig, dev) = listen_over_limit(64, 65)?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(
        (s.file.delivered, s.file.dropped_queue_full),
        (64, 1),
        "64 queued, the 65th counted"
    );
    let mut gaps = GapDetector::default();
    for _ in 0..64 {
        let (_, seq) = expect_event(&recv(&[sig])?, sig)?;
        gaps.check(seq);
    }
    ensure_eq!(
        (gaps.lost, gaps.reordered),
        (0, 0),
        "nothing lost or reordered among the 64"
    );
    recv_none(&[sig])
}

fn signalfd_reports_ssi_int_and_si_queue() -> TestResult {
    let sig = rt(1);
    let rx = FdReceiver::new(&[sig]).ctx("signalfd")?;
    let dev = Device::open().ctx("open")?;
    dev.register(sig).ctx("register")?;
    for k in [K::Started, K::PeriodElapsed, K::Stopped] {
        dev.inject(k).ctx("inject")?;
    }
    let mut first = None;
    for (i, k) in [K::Started, K::PeriodElapsed, K::Stopped]
        .into_iter()
        .enumerate()
    {
        let info = rx
            .recv_timeout(wait())
            .ctx("signalfd read")?
            .ok_or("no signal on the signalfd")?;
        ensure_eq!(info.signo, sig.number());
        ensure_eq!(info.code, uapi::SI_CODE, "ssi_code");
        let (kind, seq) = uapi::decode(info.value).ok_or("ssi_int is not a pcmsig value")?;
        let base = *first.get_or_insert(seq);
        ensure_eq!((kind, seq), (k, base + i as u32), "ssi_int of event {i}");
    }
    ensure!(
        rx.try_recv().ctx("read")?.is_none(),
        "extra signal on the signalfd"
    );
    Ok(())
}

fn every_receive_mode_sees_the_same_events() -> TestResult {
    let kinds = MIXED_EVENTS;
    let normalize = |v: Vec<sys::SigInfo>| -> Result<Vec<(K, u32, i32)>, String> {
        let mut base = None;
        v.iter()
            .map(|i| {
                let (k, s) = uapi::decode(i.value).ok_or("not a pcmsig value")?;
                let b = *base.get_or_insert(s);
                Ok((k, s - b, i.code))
            })
            .collect()
    };
    // Registers the calling thread for `sig` on a fresh file, injects `kinds`, and takes as
    // many signals through `next`.
    let run = |sig: Signal, next: &dyn Fn() -> Result<Option<sys::SigInfo>, String>| {
        let dev = Device::open().ctx("open")?;
        dev.register(sig).ctx("register")?;
        kinds
            .iter()
            .try_for_each(|k| dev.inject(*k))
            .ctx("inject")?;
        (0..kinds.len())
            .map(|_| next()?.ok_or_else(|| format!("{sig}: no signal")))
            .collect::<Result<Vec<_>, String>>()
    };
    // 1. sigwaitinfo (the signal blocked, taken synchronously)
    let waiter = WaitReceiver::new(&[rt(0)]).ctx("block")?;
    let waited = run(rt(0), &|| waiter.recv_timeout(wait()).ctx("sigtimedwait"))?;
    // 2. signalfd
    let fd_rx = FdReceiver::new(&[rt(1)]).ctx("signalfd")?;
    let fd = run(rt(1), &|| fd_rx.recv_timeout(wait()).ctx("signalfd"))?;
    // 3. SA_SIGINFO handler handing off through a pipe
    let h = HandlerReceiver::install(&[rt(2)], true).ctx("handler")?;
    let handled = run(rt(2), &|| h.recv_timeout(wait()).ctx("handler pipe"))?;
    let (a, b, c) = (normalize(waited)?, normalize(fd)?, normalize(handled)?);
    let want: Vec<(K, u32, i32)> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i as u32, uapi::SI_CODE))
        .collect();
    ensure_eq!(a, want, "sigwaitinfo");
    ensure_eq!(b, want, "signalfd");
    ensure_eq!(c, want, "SA_SIGINFO handler");
    ensure_eq!(HandlerReceiver::overflows(), 0);
    Ok(())
}

fn sigtimedwait_times_out_with_eagain() -> TestResult {
    let sig = rt(0);
    let _dev = listen(sig)?;
    let set = SignalSet::of(&[sig.number()]);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 30_000_000,
    };
    let start = Instant::now();
    // SAFETY: zeroed siginfo out-parameter, valid set and timespec.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::sigtimedwait(set.as_raw(), &mut info, &ts) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    ensure_eq!(r, -1);
    ensure_eq!(errno, Some(libc::EAGAIN));
    ensure!(
        start.elapsed() >= Duration::from_millis(29),
        "returned after {:?}, before its timeout",
        start.elapsed()
    );
    // The library maps it to Ok(None).
    ensure!(
        sys::sigtimedwait(&set, Duration::from_millis(10))
            .ctx("sigtimedwait")?
            .is_none(),
        "library timeout"
    );
    Ok(())
}

/// Blocks the main thread in `read()` on a pipe while a helper injects a pcmsig event whose
/// signal the main thread handles. Returns the read's result.
fn read_pipe_during_event(restart: bool) -> Result<std::io::Result<usize>, String> {
    let sig = rt(3);
    let h = HandlerReceiver::install(&[sig], restart).ctx("handler")?;
    let dev = std::sync::Arc::new(Device::open().ctx("open")?);
    dev.register(sig).ctx("register")?;
    let (rd, wr) = nix::unistd::pipe().ctx("pipe")?;
    let d = dev.clone();
    let tid = sys::gettid();
    let helper = std::thread::spawn(move || -> Result<(), String> {
        wait_blocked_in(tid, libc::SYS_read)?;
        d.inject(K::PeriodElapsed).ctx("inject")?;
        // The read must have been interrupted before the pipe has data (a read that finds data
        // returns it, pending signal or not); under SA_RESTART it resumes and returns the byte.
        wait_signal_taken(tid, sig.number())?;
        nix::unistd::write(&wr, b"x").ctx("write")?;
        Ok(())
    });
    let mut buf = [0u8; 1];
    // Borrow the read end: it must stay open until the helper has written.
    let r = nix::unistd::read(&rd, &mut buf).map_err(std::io::Error::from);
    helper.join().map_err(|_| "helper panicked".to_string())??;
    let got = h
        .recv_timeout(wait())
        .ctx("handler pipe")?
        .ok_or("the handler never ran")?;
    ensure_eq!(
        uapi::decode(got.value).map(|(k, _)| k),
        Some(K::PeriodElapsed),
        "handled event"
    );
    Ok(r)
}

fn blocked_read_fails_with_eintr_without_sa_restart() -> TestResult {
    let r = read_pipe_during_event(false)?;
    expect_errno(r, libc::EINTR, "read without SA_RESTART")?;
    Ok(())
}

fn blocked_read_restarts_with_sa_restart() -> TestResult {
    let r = read_pipe_during_event(true)?;
    ensure_eq!(
        r.map_err(|e| e.raw_os_error()),
        Ok(1),
        "read with SA_RESTART resumes and gets the byte"
    );
    Ok(())
}

fn device_read_is_interruptible() -> TestResult {
    // A signal (here SIGUSR2 sent with tgkill) interrupts a blocking read() of the device.
    let h = HandlerReceiver::install(&[Signal::USR2], false).ctx("handler")?;
    let dev = Device::open().ctx("open")?;
    let tid = sys::gettid();
    let pid = std::process::id() as i32;
    let helper = std::thread::spawn(move || -> Result<(), String> {
        wait_blocked_in(tid, libc::SYS_read)?;
        // SAFETY: plain system call.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR2) };
        Ok(())
    });
    let r = dev.read_records(4);
    helper.join().map_err(|_| "helper panicked".to_string())??;
    expect_errno(r, libc::EINTR, "device read interrupted")?;
    ensure!(
        h.recv_timeout(wait()).ctx("handler")?.is_some(),
        "handler ran"
    );
    Ok(())
}

fn only_the_registering_thread_receives() -> TestResult {
    let sig = rt(0);
    // Every thread blocks it, so a process-directed signal could go to any of them.
    sig.block().ctx("block")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let listener = std::thread::spawn(move || -> Result<(), String> {
        let dev = listen(sig)?;
        tx.send(()).ctx("ready")?;
        go_rx.recv().ctx("go")?;
        ensure!(
            SignalSet::pending()
                .ctx("sigpending")?
                .contains(sig.number()),
            "pending for the registered thread"
        );
        expect_kinds(sig, &[K::Started])?;
        drop(dev);
        Ok(())
    });
    rx.recv().ctx("listener ready")?;
    let dev = Device::open().ctx("open")?;
    dev.inject(K::Started).ctx("inject")?;
    // This thread does not see it: not pending here, nothing to wait for.
    ensure!(
        !SignalSet::pending()
            .ctx("sigpending")?
            .contains(sig.number()),
        "pending for a thread that did not register"
    );
    recv_none(&[sig])?;
    go_tx.send(()).ctx("go")?;
    listener
        .join()
        .map_err(|_| "listener panicked".to_string())??;
    Ok(())
}

fn cricket_scorer_sigqueues_to_manager() -> TestResult {
    let sig = rt(0);
    sig.block().ctx("block")?;
    let manager = std::process::id() as i32;
    let scorer = spawn_child(|| cricket::scorer(manager, sig, "46W4").ctx("scorer"))?;
    let set = SignalSet::of(&[sig.number()]);
    let mut said = Vec::new();
    for _ in 0..4 {
        let info = sys::sigtimedwait(&set, wait())
            .ctx("sigtimedwait")?
            .ok_or("the scorer's signal never came")?;
        ensure_eq!(info.code, uapi::SI_CODE, "sigqueue sends SI_QUEUE");
        ensure_eq!(info.pid, scorer, "si_pid is the scorer");
        said.push(cricket::announce(&info));
    }
    ensure_eq!(wait_child(scorer)?, 0, "scorer");
    ensure_eq!(
        said,
        vec![
            "Four runs scored.",
            "Six runs scored.",
            "Wicket!",
            "Four runs scored."
        ]
    );
    Ok(())
}

fn cricket_manager_fed_by_the_kernel_stream() -> TestResult {
    let sig = rt(0);
    let _dev = listen_to_stream(sig, STEADY_PERIOD_US, 2)?;
    let said = cricket::manager(sig, 5).ctx("manager")?;
    ensure_eq!(said[0], "From the stream: stream prepared.");
    ensure_eq!(said[1], "From the stream: stream started.");
    ensure!(
        said[2].starts_with("From the stream: period elapsed (seq "),
        "{}",
        said[2]
    );
    ensure_eq!(said[4], "From the stream: stream stopped.");
    Ok(())
}
