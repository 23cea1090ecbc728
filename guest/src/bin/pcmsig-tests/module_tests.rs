//! Guest tests of the module's behaviour: payloads, triggers, registration rules, errors,
//! drops, lifecycle.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use pcmsig::{uapi, Device, EventKind as K, State, Trigger};

use crate::common::*;
use crate::modload::{delete_module, load_module, load_module_with, wait_gone, with_delivery_held};
use crate::runner::{diag, paced, Context, Progress, Test, TestResult};
use crate::{ensure, ensure_eq};

pub fn tests() -> Vec<Test> {
    crate::tests![
        module_kunit_suites_pass,
        inject_delivers_exact_payloads_in_sequence,
        inject_burst_delivers_every_event_in_order,
        timer_periods_are_numbered_and_stop_after_n,
        triggers_follow_the_state_machine,
        racing_triggers_never_leave_a_running_stream_without_its_timer,
        closing_and_reopening_never_hangs_an_ioctl,
        wrong_state_triggers_fail_with_ebadfd,
        xrun_trigger_needs_configure_to_recover,
        ioctl_arguments_are_checked,
        register_again_replaces_the_listener,
        unregister_stops_delivery,
        every_listener_gets_every_event,
        queue_overflow_drops_are_counted_exactly,
        xrun_when_a_listener_falls_behind,
        exited_listener_drops_are_counted,
        listener_dying_mid_stream_is_safe,
        exited_listeners_replaced_and_closed_under_fire,
        exec_stops_signalling_the_thread,
        an_exec_by_another_thread_is_never_signalled_under_the_main_threads_id,
        credential_change_stops_signalling,
        register_needs_permission_to_signal,
        glibc_internal_signals_32_and_33_are_refused,
        control_ioctls_need_a_file_open_for_writing,
        read_records_match_the_signals,
        read_queue_overruns_are_counted_exactly,
        nonblocking_read_gives_eagain,
        a_faulting_read_loses_no_record,
        blocking_read_wakes_on_an_event,
        debugfs_stats_match_the_ioctl,
    ]
}

/// Tests that unload the module run last.
pub fn lifecycle_tests() -> Vec<Test> {
    crate::tests![
        rmmod_is_refused_while_open,
        unload_after_closing_a_running_stream_is_clean,
        inject_needs_the_test_hooks_parameter,
        a_fatal_signal_ends_an_ioctl_waiting_for_delivery,
        a_handled_signal_does_not_end_the_wait_for_delivery,
        insmod_rmmod_cycles_leave_a_working_device,
    ]
}

/// The leak scan: after every other test.
pub fn leak_tests() -> Vec<Test> {
    crate::tests![kmemleak_finds_no_leak]
}

fn inject_delivers_exact_payloads_in_sequence() -> TestResult {
    let sig = rt(0);
    let dev = listen(sig)?;
    let kinds = MIXED_EVENTS;
    for k in kinds {
        dev.inject(k).ctx("inject")?;
    }
    let first = expect_kinds(sig, &kinds)?;
    recv_none(&[sig])?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(s.file.fired, 5);
    ensure_eq!(s.file.delivered, 5);
    ensure_eq!(s.file.dropped(), 0);
    check_invariant(&s)?;
    diag(&format!("5 events, seq {first}..{}", first + 4));
    Ok(())
}

fn inject_burst_delivers_every_event_in_order() -> TestResult {
    let sig = rt(0);
    let dev = listen(sig)?;
    dev.inject_burst(K::PeriodElapsed, uapi::BURST_MAX)
        .ctx("inject burst")?;
    dev.inject_burst(K::Xrun, 1).ctx("inject burst of one")?;
    let mut kinds = vec![K::PeriodElapsed; uapi::BURST_MAX as usize];
    kinds.push(K::Xrun);
    let first = expect_kinds(sig, &kinds)?;
    recv_none(&[sig])?;
    let s = dev.stats().ctx("stats")?;
    let n = u64::from(uapi::BURST_MAX) + 1;
    ensure_eq!(s.file.fired, n);
    ensure_eq!(s.file.delivered, n);
    check_invariant(&s)?;
    let recs = dev.read_records(100).ctx("read")?;
    ensure_eq!(recs.len() as u64, n, "read() records of the bursts");
    ensure!(
        recs.windows(2).all(|w| w[1].seq == w[0].seq.wrapping_add(1)
            && w[1].timestamp_ns >= w[0].timestamp_ns),
        "records not consecutive and in time order"
    );
    diag(&format!(
        "{n} events, seq {first}..{}",
        first + n as u32 - 1
    ));
    Ok(())
}

fn timer_periods_are_numbered_and_stop_after_n() -> TestResult {
    let sig = rt(0);
    let dev = listen_to_stream(sig, STEADY_PERIOD_US, 5)?;
    expect_kinds(sig, &finite_run(5))?;
    recv_none(&[sig])?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(State::from_u32(s.state), Some(State::Stopped));
    ensure_eq!(s.periods, 5);
    ensure_eq!(s.file.delivered, 8);
    check_debugfs(0, &s)
}

fn triggers_follow_the_state_machine() -> TestResult {
    let sig = rt(0);
    let dev = listen(sig)?;
    // The longest period: no tick comes between the triggers, whatever pauses the VM.
    dev.configure(uapi::PERIOD_US_MAX, 0).ctx("configure")?;
    let state = |want: State| -> TestResult {
        let s = dev.stats().ctx("stats")?;
        ensure_eq!(State::from_u32(s.state), Some(want));
        Ok(())
    };
    state(State::Prepared)?;
    dev.trigger(Trigger::Start).ctx("start")?;
    state(State::Running)?;
    dev.trigger(Trigger::PausePush).ctx("pause")?;
    state(State::Paused)?;
    dev.trigger(Trigger::PauseRelease).ctx("resume")?;
    state(State::Running)?;
    dev.trigger(Trigger::Stop).ctx("stop")?;
    state(State::Stopped)?;
    expect_kinds(
        sig,
        &[K::Prepared, K::Started, K::Paused, K::Resumed, K::Stopped],
    )?;
    dev.trigger(Trigger::Start)
        .ctx("start again from stopped")?;
    dev.trigger(Trigger::Stop).ctx("stop")?;
    expect_kinds(sig, &[K::Started, K::Stopped])?;
    state(State::Stopped)?;
    // Draining ends after one more period: a 100 ms one, of which any number may come before
    // the drain (a paused VM) and exactly one after it.
    dev.configure(100_000, 0).ctx("configure")?;
    dev.trigger(Trigger::Start).ctx("start")?;
    dev.trigger(Trigger::Drain).ctx("drain")?;
    let (mut kinds, mut seqs) = (Vec::new(), Vec::new());
    while kinds.last() != Some(&K::Stopped) {
        ensure!(kinds.len() < 64, "no Stopped after a drain: {kinds:?}");
        let (kind, seq) = expect_event(&recv(&[sig])?, sig)?;
        kinds.push(kind);
        seqs.push(seq);
    }
    ensure!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "sequence numbers of the drained run: {seqs:?}"
    );
    let draining = kinds.iter().position(|k| *k == K::Draining);
    ensure!(
        kinds.starts_with(&[K::Prepared, K::Started])
            && draining.is_some_and(|d| {
                d >= 2
                    && kinds[2..d].iter().all(|k| *k == K::PeriodElapsed)
                    && kinds[d + 1..] == [K::PeriodElapsed, K::Stopped]
            }),
        "a drained run: Prepared, Started, periods, Draining, one period, Stopped; got {kinds:?}"
    );
    recv_none(&[sig])?;
    state(State::Stopped)
}

fn wrong_state_triggers_fail_with_ebadfd() -> TestResult {
    let dev = Device::open().ctx("open")?;
    // Fresh stream: Setup.
    for t in Trigger::ALL {
        expect_errno(dev.trigger(t), libc::EBADFD, &format!("{t:?} in setup"))?;
    }
    dev.configure(1_000_000, 0).ctx("configure")?;
    expect_errno(
        dev.trigger(Trigger::PauseRelease),
        libc::EBADFD,
        "resume when prepared",
    )?;
    dev.trigger(Trigger::Start).ctx("start")?;
    expect_errno(
        dev.trigger(Trigger::Start),
        libc::EBADFD,
        "start when running",
    )?;
    expect_errno(
        dev.configure(1000, 0),
        libc::EBUSY,
        "configure when running",
    )?;
    dev.trigger(Trigger::PausePush).ctx("pause")?;
    expect_errno(
        dev.trigger(Trigger::Drain),
        libc::EBADFD,
        "drain when paused",
    )?;
    expect_errno(dev.configure(1000, 0), libc::EBUSY, "configure when paused")?;
    dev.trigger(Trigger::Stop).ctx("stop")?;
    Ok(())
}

fn xrun_trigger_needs_configure_to_recover() -> TestResult {
    let sig = rt(0);
    // The longest period: none comes between the triggers, whatever pauses the VM.
    let dev = listen_to_stream(sig, uapi::PERIOD_US_MAX, 0)?;
    dev.trigger(Trigger::Xrun).ctx("xrun")?;
    ensure_eq!(
        State::from_u32(dev.stats().ctx("stats")?.state),
        Some(State::Xrun)
    );
    expect_errno(dev.trigger(Trigger::Start), libc::EBADFD, "start in xrun")?;
    dev.configure(uapi::PERIOD_US_MAX, 0)
        .ctx("configure again")?;
    dev.trigger(Trigger::Start).ctx("start after recovery")?;
    dev.trigger(Trigger::Stop).ctx("stop")?;
    expect_kinds(
        sig,
        &[
            K::Prepared,
            K::Started,
            K::Xrun,
            K::Prepared,
            K::Started,
            K::Stopped,
        ],
    )?;
    Ok(())
}

fn ioctl_arguments_are_checked() -> TestResult {
    let dev = Device::open().ctx("open")?;
    for signo in [0u32, 1, 9, 11, 19, 31, 32, 33, 65, 1000, u32::MAX] {
        expect_errno(
            dev.register_raw(signo, 0),
            libc::EINVAL,
            &format!("register signal {signo}"),
        )?;
    }
    expect_errno(
        dev.register_raw(rt(0).number() as u32, 1),
        libc::EINVAL,
        "register with flags",
    )?;
    expect_errno(
        dev.unregister(),
        libc::ENOENT,
        "unregister without a listener",
    )?;
    expect_errno(
        dev.configure(uapi::PERIOD_US_MIN - 1, 0),
        libc::EINVAL,
        "period too short",
    )?;
    expect_errno(
        dev.configure(uapi::PERIOD_US_MAX + 1, 0),
        libc::EINVAL,
        "period too long",
    )?;
    expect_errno(dev.configure(0, 0), libc::EINVAL, "zero period")?;
    for cmd in [0u32, 7, u32::MAX] {
        expect_errno(
            dev.trigger_raw(cmd),
            libc::EINVAL,
            &format!("trigger {cmd}"),
        )?;
    }
    for kind in [0u32, 9, u32::MAX] {
        expect_errno(
            dev.inject_raw(kind),
            libc::EINVAL,
            &format!("inject kind {kind}"),
        )?;
    }
    for (kind, count) in [
        (K::PeriodElapsed as u32, 0),
        (K::PeriodElapsed as u32, uapi::BURST_MAX + 1),
        (K::PeriodElapsed as u32, u32::MAX),
        (0, 1),
        (u32::MAX, 1),
    ] {
        expect_errno(
            dev.inject_burst_raw(kind, count),
            libc::EINVAL,
            &format!("inject burst of {count} kind {kind}"),
        )?;
    }
    bad_pointers_and_requests_are_refused(&dev)?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(
        State::from_u32(s.state),
        Some(State::Setup),
        "failed calls changed nothing"
    );
    ensure_eq!(s.listeners, 0);
    Ok(())
}

/// NULL and unmapped argument pointers are `EFAULT`; unknown requests (or a known one with
/// the wrong size) are `ENOTTY`.
fn bad_pointers_and_requests_are_refused(dev: &Device) -> TestResult {
    let raw = |req: u32, arg: usize| -> Result<i32, i32> {
        // SAFETY: the addresses passed are unmapped or null: the kernel must reject them.
        unsafe { dev.raw_ioctl(req, arg) }.map_err(|e| e.raw_os_error().unwrap_or(0))
    };
    for (name, req) in POINTER_IOCTLS {
        ensure_eq!(raw(req, 0), Err(libc::EFAULT), "{name} with a NULL pointer");
        ensure_eq!(
            raw(req, 16),
            Err(libc::EFAULT),
            "{name} with an unmapped pointer"
        );
    }
    ensure_eq!(raw(0xBB99, 0), Err(libc::ENOTTY), "unknown ioctl");
    ensure_eq!(
        raw(uapi::IOC_REGISTER ^ (1 << 16), 0),
        Err(libc::ENOTTY),
        "register with a wrong size"
    );
    Ok(())
}

fn register_again_replaces_the_listener() -> TestResult {
    let (a, b) = (rt(0), rt(1));
    let dev = listen(a)?;
    b.block().ctx("block")?;
    dev.register(b).ctx("register again")?;
    ensure_eq!(dev.stats().ctx("stats")?.listeners, 1);
    dev.inject(K::Started).ctx("inject")?;
    expect_kinds(b, &[K::Started])?;
    recv_none(&[a])?;
    Ok(())
}

fn unregister_stops_delivery() -> TestResult {
    let sig = rt(0);
    let dev = listen(sig)?;
    dev.inject(K::Started).ctx("inject")?;
    dev.unregister().ctx("unregister")?;
    dev.inject(K::Stopped).ctx("inject after unregister")?;
    expect_kinds(sig, &[K::Started])?;
    recv_none(&[sig])?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(s.listeners, 0);
    ensure_eq!(
        s.file.fired,
        1,
        "the unregistered listener's counters stay readable"
    );
    expect_errno(dev.unregister(), libc::ENOENT, "second unregister")?;
    Ok(())
}

fn every_listener_gets_every_event() -> TestResult {
    let sigs = [rt(0), rt(1), rt(2)];
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
    let mut handles = Vec::new();
    for sig in sigs {
        let ready_tx = ready_tx.clone();
        let go_rx = go_rx.clone();
        handles.push(std::thread::spawn(move || -> Result<u32, String> {
            let dev = listen(sig)?;
            ready_tx.send(()).ctx("ready")?;
            let _ = go_rx.lock().map(|g| g.recv());
            let first = expect_kinds(
                sig,
                &[K::Started, K::PeriodElapsed, K::PeriodElapsed, K::Stopped],
            )?;
            drop(dev);
            Ok(first)
        }));
    }
    for _ in sigs {
        ready_rx.recv().ctx("waiting for listeners")?;
    }
    let dev = Device::open().ctx("open")?;
    ensure_eq!(dev.stats().ctx("stats")?.listeners, 3);
    for k in [K::Started, K::PeriodElapsed, K::PeriodElapsed, K::Stopped] {
        dev.inject(k).ctx("inject")?;
    }
    for _ in sigs {
        go_tx.send(()).ctx("go")?;
    }
    let mut firsts = Vec::new();
    for h in handles {
        firsts.push(
            h.join()
                .map_err(|_| "listener thread panicked".to_string())??,
        );
    }
    ensure!(
        firsts.windows(2).all(|w| w[0] == w[1]),
        "listeners saw different sequence numbers: {firsts:?}"
    );
    Ok(())
}

fn queue_overflow_drops_are_counted_exactly() -> TestResult {
    let (sig, dev) = listen_over_limit(8, 12)?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(s.file.fired, 12);
    ensure_eq!(s.file.delivered, 8);
    ensure_eq!(s.file.dropped_queue_full, 4);
    check_invariant(&s)?;
    // All 8 queued arrive, in order, nothing lost among them.
    expect_kinds(sig, &[K::PeriodElapsed; 8])?;
    recv_none(&[sig])?;
    // Room again: the next one is delivered.
    dev.inject(K::Stopped).ctx("inject")?;
    expect_kinds(sig, &[K::Stopped])?;
    Ok(())
}

fn xrun_when_a_listener_falls_behind() -> TestResult {
    set_sigpending_limit(4)?;
    let sig = rt(0);
    let dev = listen(sig)?;
    let before = dev.stats().ctx("stats")?.events;
    dev.configure(STEADY_PERIOD_US, 0).ctx("configure")?;
    dev.trigger(Trigger::Start).ctx("start")?;
    // Wait for the xrun and until the work item has offered this listener every event emitted
    // since it registered (the timer has stopped, so nothing moves any more): state, not time.
    // The deadline is a hang guard.
    let deadline = Instant::now() + paced(Duration::from_secs(10));
    let s = loop {
        let s = dev.stats().ctx("stats")?;
        let offered_all = s.file.fired == s.events - before;
        if (State::from_u32(s.state) == Some(State::Xrun) && offered_all)
            || Instant::now() > deadline
        {
            break s;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    ensure_eq!(
        State::from_u32(s.state),
        Some(State::Xrun),
        "a full queue during a period is an xrun"
    );
    // Prepared, Started and two periods fill the 4 slots; every later event is dropped.
    ensure_eq!(s.file.delivered, 4);
    ensure!(
        s.file.dropped_queue_full >= 2,
        "the overflowing period and the xrun are dropped: {:?}",
        s.file
    );
    check_invariant(&s)?;
    expect_kinds(
        sig,
        &[K::Prepared, K::Started, K::PeriodElapsed, K::PeriodElapsed],
    )?;
    recv_none(&[sig])?;
    // The records show the whole story: periods, one xrun, and nothing after it. (A slow
    // timer callback may have emitted several periods at once before the first overflow
    // was seen; those still count, as dropped.)
    let recs = dev.read_records(256).ctx("read")?;
    let kinds: Vec<u16> = recs.iter().map(|r| r.kind).collect();
    ensure_eq!(
        kinds.iter().filter(|k| **k == K::Xrun as u16).count(),
        1,
        "one xrun in {kinds:?}"
    );
    ensure_eq!(
        kinds.last().copied(),
        Some(K::Xrun as u16),
        "nothing after the xrun: {kinds:?}"
    );
    ensure_eq!(
        recs.len() as u64,
        s.file.fired,
        "every event was offered to the listener"
    );
    Ok(())
}

fn exited_listener_drops_are_counted() -> TestResult {
    let dev = std::sync::Arc::new(Device::open().ctx("open")?);
    let d = dev.clone();
    // A thread registers on the shared file, then exits.
    let tid = std::thread::spawn(move || -> Result<i32, String> {
        rt(0).block().ctx("block")?;
        d.register(rt(0)).ctx("register")?;
        Ok(pcmsig::sys::gettid())
    })
    .join()
    .map_err(|_| "thread panicked".to_string())??;
    // join() returns when the thread clears its tid, a moment before the kernel releases it;
    // an exiting thread that still has its address space is signalled (and never sees it).
    wait_gone(&format!("/proc/self/task/{tid}"))?;
    // Give RCU time to free the thread's task_struct and struct pid: a module that kept either
    // without a counted reference now touches freed memory (KASAN on the debug kernel).
    std::thread::sleep(Duration::from_millis(100));
    inject_periods(&dev, 3)?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(s.file.fired, 3);
    ensure_eq!(s.file.dropped_exited, 3);
    ensure_eq!(s.file.delivered, 0);
    check_invariant(&s)?;
    check_debugfs(0, &s)?;
    // The same for a process: it registers on an inherited file and exits.
    let code = in_child(|| {
        rt(0).block().ctx("block")?;
        dev.register(rt(0)).ctx("child register")
    })?;
    ensure_eq!(code, 0, "child");
    dev.inject(K::Stopped).ctx("inject")?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(
        (s.file.fired, s.file.dropped_exited),
        (1, 1),
        "after the child exited"
    );
    Ok(())
}

fn listener_dying_mid_stream_is_safe() -> TestResult {
    let dev = std::sync::Arc::new(Device::open().ctx("open")?);
    // Periods far apart enough for a slow (debug, loaded) guest to deliver them all: a stream
    // that falls behind goes to Xrun and stops, and then no drops could be counted.
    dev.configure(5_000, 0).ctx("configure")?;
    let d = dev.clone();
    let tid = std::thread::spawn(move || -> Result<i32, String> {
        let sig = rt(0);
        sig.block().ctx("block")?;
        d.register(sig).ctx("register")?;
        d.trigger(Trigger::Start).ctx("start")?;
        // Take a few periods, then exit with the stream running.
        for _ in 0..3 {
            recv(&[sig])?;
        }
        Ok(pcmsig::sys::gettid())
    })
    .join()
    .map_err(|_| "thread panicked".to_string())??;
    wait_gone(&format!("/proc/self/task/{tid}"))?;
    // Events keep coming for a dead listener: each must be a counted drop, nothing else. The
    // timer's periods may have stopped by now (on a slow guest the stream can fall behind and
    // xrun while the thread exits, seen with `--slow 2` on the debug kernel), so five periods
    // are injected too: when the ioctl returns they have been offered and counted.
    let before = dev.stats().ctx("stats")?.file.dropped_exited;
    inject_periods(&dev, 5)?;
    let s = dev.stats().ctx("stats")?;
    ensure!(
        s.file.dropped_exited >= before + 5,
        "periods after the listener exited were not counted as drops (state {:?}, {:?})",
        State::from_u32(s.state),
        s.file
    );
    // Stop it, unless an xrun has stopped it already (EBADFD then).
    if let Err(e) = dev.trigger(Trigger::Stop) {
        ensure!(
            e.errno() == Some(libc::EBADFD) && State::from_u32(s.state) == Some(State::Xrun),
            "stop: {e}"
        );
    }
    let s = dev.stats().ctx("stats")?;
    ensure!(
        s.file.delivered >= 3,
        "delivered before the exit: {:?}",
        s.file
    );
    ensure_eq!(
        s.file.dropped_queue_full + s.file.dropped_execd + s.file.dropped_perm,
        0,
        "only exit drops"
    );
    check_invariant(&s)?;
    diag(&format!(
        "delivered {} then dropped {} after exit",
        s.file.delivered, s.file.dropped_exited
    ));
    Ok(())
}

fn exited_listeners_replaced_and_closed_under_fire() -> TestResult {
    // The critical scenario of the last review, 200 times, without delay points (the
    // deterministic version is `replacing_a_listener_waits_for_the_delivery_holding_it`): forked
    // children register on the parent's file and exit, so that only the driver's references keep
    // their pid and address space; the parent then replaces the listener, or closes the file,
    // while another process injects bursts. On the debug kernel lockdep, KASAN and the
    // `might_sleep` in `ThreadRef`'s drop watch every release. The books must balance.
    const ROUNDS: usize = 200;
    let sig = rt(0);
    sig.block().ctx("block")?;
    // A process, not a thread: this one forks in every round.
    let injector = spawn_child(|| {
        let dev = Device::open().ctx("open")?;
        loop {
            match dev.inject_burst(K::PeriodElapsed, 8) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::EAGAIN) => {}
                Err(e) => return Err(format!("inject: {e}")),
            }
        }
    })?;
    let result = (|| -> TestResult {
        let mut progress = Progress::new("rounds");
        let mut dev = Device::open().ctx("open")?;
        for i in 0..ROUNDS {
            progress.step(i, ROUNDS);
            let d = &dev;
            let code = in_child(|| d.register(sig).ctx("register in the child"))?;
            ensure_eq!(code, 0, "round {i}: the child registered");
            if i % 2 == 0 {
                dev.register(sig).ctx("register again")?;
            } else {
                let s = dev.stats().ctx("stats")?;
                check_invariant(&s).map_err(|e| format!("round {i}: {e}"))?;
                dev = Device::open().ctx("open again")?;
            }
        }
        let s = dev.stats().ctx("stats")?;
        check_invariant(&s)?;
        // How many events met an exited child depends on scheduling: reported, not asserted.
        diag(&format!("{ROUNDS} rounds; totals {:?}", s.total));
        Ok(())
    })();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(injector),
        nix::sys::signal::Signal::SIGKILL,
    )
    .ctx("kill the injector")?;
    wait_child(injector)?;
    result
}

fn exec_stops_signalling_the_thread() -> TestResult {
    let dev = Device::open().ctx("open")?;
    // The new program writes a byte to this pipe, which tells us the exec is complete. (The
    // pipe closing is too early a sign: since 7.3 the kernel closes close-on-exec files before
    // it installs the new address space.)
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("pipe")?;
    let no_cloexec = |fd: std::os::fd::BorrowedFd<'_>, what: &str| {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map(drop)
        .ctx(what)
    };
    let pid = spawn_child(|| {
        let sig = rt(0);
        let _ = sig.block();
        // The inherited device file must survive the exec, and the pipe's write end too.
        no_cloexec(dev.file().as_fd(), "F_SETFD device")?;
        no_cloexec(wr.as_fd(), "F_SETFD pipe")?;
        dev.register(sig).ctx("register")?;
        // A blocked signal stays blocked across exec; unblock it so that the new program would
        // die of SIGRTMIN's default action if the module still signalled it.
        let _ = pcmsig::sys::SignalSet::of(&[sig.number()]).unblock();
        Err(exec_a_sleeper_that_says_it_runs(wr.as_raw_fd()))
    })?;
    drop(wr);
    let mut buf = [0u8; 1];
    // A byte once the new program runs; EOF if the child died first.
    let _ = nix::unistd::read(&rd, &mut buf);
    inject_periods(&dev, 2)?;
    let s = dev.stats().ctx("stats")?;
    if let Err(status) = alive_then_killed(pid, Duration::from_millis(50)) {
        return Err(format!(
            "the exec'd program died (status {status:#x}; stats {s:?}): it was signalled"
        ));
    }
    ensure_eq!(s.file.dropped_execd, 2, "stats {:?}", s.file);
    ensure_eq!(s.file.delivered, 0);
    check_invariant(&s)?;
    check_debugfs(0, &dev.stats().ctx("stats")?)
}

/// A thread other than the main one calls `execve`: when its exec completes (`de_thread`) it
/// takes the main thread's id, and the id it had names no thread. The main thread's
/// registration must not reach the new program, which now answers to the id it registered with
/// (counted exec'd: the address space changed); the exec'ing thread's own registration counts
/// its events exited (its id is gone, as `tgkill(2)` on it would say). README, "Semantics".
fn an_exec_by_another_thread_is_never_signalled_under_the_main_threads_id() -> TestResult {
    let dev = Device::open().ctx("open")?;
    let dev2 = Device::open().ctx("open")?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("pipe")?;
    let (tid_rd, tid_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("pipe")?;
    let pid = spawn_child(|| {
        let sig = rt(0);
        let _ = sig.block();
        // The main thread's registration: its id is the process's.
        dev.register(sig).ctx("register the main thread")?;
        let (dev2, wr, tid_wr) = (&dev2, &wr, &tid_wr);
        std::thread::scope(|scope| {
            let exec = scope.spawn(move || -> TestResult {
                dev2.register(sig).ctx("register the exec'ing thread")?;
                let tid = pcmsig::sys::gettid();
                nix::unistd::write(tid_wr, &tid.to_ne_bytes()).ctx("write the tid")?;
                nix::fcntl::fcntl(
                    wr.as_fd(),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )
                .ctx("F_SETFD pipe")?;
                // Unblocked in the thread that execs (its mask is the new program's): a
                // signal sent into the new program would kill it.
                let _ = pcmsig::sys::SignalSet::of(&[sig.number()]).unblock();
                Err(exec_a_sleeper_that_says_it_runs(wr.as_raw_fd()))
            });
            // The exec ends this thread; if it failed, the thread says why.
            exec.join()
                .map_err(|_| "the exec'ing thread panicked".to_string())?
        })
    })?;
    drop((wr, tid_wr));
    let mut b = [0u8; 4];
    nix::unistd::read(&tid_rd, &mut b).ctx("the exec'ing thread's tid")?;
    let tid = i32::from_ne_bytes(b);
    ensure!(tid != pid, "the exec'ing thread is the main thread ({tid})");
    let mut buf = [0u8; 1];
    // A byte once the new program runs; EOF if the child died first.
    let n = nix::unistd::read(&rd, &mut buf).ctx("read the exec's word")?;
    ensure_eq!(n, 1, "the new program never said it runs");
    ensure!(
        !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists(),
        "the exec'ing thread's id {tid} still names a thread"
    );
    inject_periods(&dev, 2)?;
    let (s, s2) = (
        dev.stats().ctx("stats")?,
        dev2.stats().ctx("stats of the exec'ing thread's file")?,
    );
    if let Err(status) = alive_then_killed(pid, crate::runner::QUIET) {
        return Err(format!(
            "the new program died (status {status:#x}; stats {s:?}): it was signalled"
        ));
    }
    ensure_eq!(
        (s.file.fired, s.file.delivered, s.file.dropped_execd),
        (2, 0, 2),
        "the main thread's file: fired, delivered, dropped as exec'd"
    );
    ensure_eq!(
        (s2.file.fired, s2.file.delivered, s2.file.dropped_exited),
        (2, 0, 2),
        "the exec'ing thread's file: fired, delivered, dropped as exited"
    );
    check_invariant(&s)?;
    check_invariant(&s2)
}

/// In a forked child: runs `/bin/sh`, which writes a byte to `fd` (inherited: not close-on-exec)
/// once it runs and then becomes `sleep 10`. Returns only if the exec failed: why.
fn exec_a_sleeper_that_says_it_runs(fd: i32) -> String {
    let mut cmd = std::process::Command::new("/bin/sh");
    let script = format!("echo >&{fd}; exec sleep 10");
    cmd.args(["-c", &script]);
    format!(
        "exec /bin/sh: {}",
        std::os::unix::process::CommandExt::exec(&mut cmd)
    )
}

/// Whether our child `pid` is still alive after `wait` (a signal it must not get would kill
/// it); kills and reaps it either way. `Err` holds its wait status if it had died.
fn alive_then_killed(pid: i32, wait: Duration) -> Result<(), i32> {
    std::thread::sleep(wait);
    let mut status = 0;
    // SAFETY: our child. (libc: nix's WaitStatus cannot hold a death by a real-time signal.)
    let alive = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = wait_child(pid);
    if alive {
        Ok(())
    } else {
        Err(status)
    }
}

fn make_device_world_accessible() -> TestResult {
    chmod_device_666()
}

fn credential_change_stops_signalling() -> TestResult {
    make_device_world_accessible()?;
    let code = in_child(|| {
        setresuid(1000, 1000, 0)?;
        let sig = rt(0);
        let dev = listen(sig)?; // opened and registered as uid 1000
        dev.inject(K::Started).ctx("inject as 1000")?;
        expect_kinds(sig, &[K::Started])?;
        setresuid(0, 0, 0)?; // the thread becomes root; the opener (1000) may not signal root
        dev.inject(K::Stopped).ctx("inject after setuid")?;
        recv_none(&[sig])?;
        let s = dev.stats().ctx("stats")?;
        ensure_eq!(s.file.dropped_perm, 1);
        ensure_eq!(s.file.delivered, 1);
        check_invariant(&s)?;
        // Root again, so debugfs is readable; the stream is the opener's, user 1000's.
        check_debugfs(1000, &s)
    })?;
    ensure_eq!(code, 0, "child");
    Ok(())
}

fn register_needs_permission_to_signal() -> TestResult {
    make_device_world_accessible()?;
    let code = in_child(|| {
        setresuid(1000, 1000, 0)?;
        let dev = Device::open().ctx("open as 1000")?;
        setresuid(0, 0, 0)?;
        rt(0).block().ctx("block")?;
        expect_errno(
            dev.register(rt(0)),
            libc::EPERM,
            "registering a root thread on a uid-1000 file",
        )
    })?;
    ensure_eq!(code, 0, "child");
    Ok(())
}

fn read_records_match_the_signals() -> TestResult {
    let sig = rt(0);
    let dev = listen(sig)?;
    let before = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ctx("clock")?;
    for k in [K::Started, K::PeriodElapsed, K::Stopped] {
        dev.inject(k).ctx("inject")?;
    }
    let recs = dev.read_records(16).ctx("read")?;
    ensure_eq!(recs.len(), 3);
    let first = expect_kinds(sig, &[K::Started, K::PeriodElapsed, K::Stopped])?;
    let before_ns = before.tv_sec() as u64 * 1_000_000_000 + before.tv_nsec() as u64;
    for (i, r) in recs.iter().enumerate() {
        ensure_eq!(r.seq & uapi::SEQ_MASK, first + i as u32, "record {i} seq");
        ensure_eq!(r.source, uapi::EventSource::Ioctl as u16);
        ensure!(
            r.timestamp_ns >= before_ns,
            "record {i} timestamp {} before the inject ({before_ns})",
            r.timestamp_ns
        );
    }
    ensure!(
        recs.windows(2)
            .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns),
        "timestamps go backwards"
    );
    ensure_eq!(
        recs.iter().map(|r| r.kind).collect::<Vec<_>>(),
        vec![
            K::Started as u16,
            K::PeriodElapsed as u16,
            K::Stopped as u16
        ]
    );
    // Timer-produced records say so, and are a period apart on average.
    dev.configure(STEADY_PERIOD_US, 3).ctx("configure")?;
    dev.trigger(Trigger::Start).ctx("start")?;
    expect_kinds(sig, &finite_run(3))?;
    let recs = dev.read_records(16).ctx("read")?;
    ensure_eq!(recs.len(), 6);
    let periods: Vec<_> = recs
        .iter()
        .filter(|r| r.kind == K::PeriodElapsed as u16)
        .collect();
    ensure!(
        periods
            .iter()
            .all(|r| r.source == crate::common::period_source()),
        "period records come from the period source (timer, or the edu device)"
    );
    // A period's timestamp is its boundary, so they are exactly one period apart however late
    // the timer callback ran.
    for w in periods.windows(2) {
        ensure_eq!(
            w[1].timestamp_ns - w[0].timestamp_ns,
            u64::from(STEADY_PERIOD_US) * 1000,
            "period timestamps apart"
        );
    }
    Ok(())
}

/// A file's `read()` queue keeps the oldest `READ_QUEUE_LEN` records; each newer one is dropped
/// and counted in `read_overruns`, and once read, the queue takes records again.
fn read_queue_overruns_are_counted_exactly() -> TestResult {
    let dev = Device::open_nonblocking().ctx("open")?;
    let cap = uapi::READ_QUEUE_LEN;
    let over = 2 * uapi::BURST_MAX + 3;
    let mut left = cap + over;
    while left > 0 {
        let n = left.min(uapi::BURST_MAX);
        dev.inject_burst(K::PeriodElapsed, n).ctx("inject burst")?;
        left -= n;
    }
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(s.read_overruns, u64::from(over));
    let recs = dev.read_records(2 * cap as usize).ctx("read")?;
    ensure_eq!(recs.len(), cap as usize, "the queue's records");
    ensure!(
        recs.windows(2)
            .all(|w| w[1].seq == w[0].seq.wrapping_add(1)),
        "the oldest records, in order"
    );
    dev.inject(K::Stopped).ctx("inject after reading")?;
    let recs = dev.read_records(4).ctx("read again")?;
    ensure_eq!(recs.len(), 1);
    ensure_eq!(recs[0].kind, K::Stopped as u16);
    ensure_eq!(dev.stats().ctx("stats")?.read_overruns, u64::from(over));
    Ok(())
}

fn nonblocking_read_gives_eagain() -> TestResult {
    let dev = Device::open_nonblocking().ctx("open")?;
    match dev.read_records(4) {
        Err(e) => ensure_eq!(e.raw_os_error(), Some(libc::EAGAIN)),
        Ok(r) => return Err(format!("read returned {r:?} with nothing buffered")),
    }
    dev.inject(K::Started).ctx("inject")?;
    ensure_eq!(dev.read_records(4).ctx("read")?.len(), 1);
    // A buffer smaller than one record is an error, not a partial record.
    let mut small = [0u8; 8];
    let r = std::io::Read::read(&mut dev.file(), &mut small);
    expect_errno(r, libc::EINVAL, "8-byte read")?;
    Ok(())
}

fn a_faulting_read_loses_no_record() -> TestResult {
    // Seeded bug `read_loses_on_fault`: read() took records off the buffer before copying them,
    // so a copy that faulted lost them. Two records, and a buffer whose second record lies on
    // an unmapped page: read returns the first (16 bytes), and the second is read next.
    const REC: usize = std::mem::size_of::<uapi::EventRecord>();
    let dev = Device::open_nonblocking().ctx("open")?;
    dev.inject_burst(K::Started, 2).ctx("inject")?;
    // SAFETY: `sysconf` has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ctx("page size")?;
    // SAFETY: a fresh anonymous mapping of two pages; the second is unmapped at once.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(
        base != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    let base = base.cast::<u8>();
    // SAFETY: the second page of our own mapping.
    ensure_eq!(unsafe { libc::munmap(base.add(page).cast(), page) }, 0);
    // SAFETY: within the first page: one record fits before the unmapped page.
    let buf = unsafe { base.add(page - REC) };
    // SAFETY: `buf` has REC writable bytes, then a hole: the read faults on the second record.
    let n = unsafe { libc::read(dev.file().as_raw_fd(), buf.cast(), 2 * REC) };
    // SAFETY: the first record was written there (or the check below fails first).
    let first: uapi::EventRecord = unsafe { std::ptr::read_unaligned(buf.cast()) };
    // SAFETY: the first page of our own mapping.
    unsafe { libc::munmap(base.cast(), page) };
    ensure_eq!(n, REC as isize, "one whole record before the fault");
    let rest = dev
        .read_records(16)
        .ctx("reading the record that met the fault")?;
    ensure_eq!(rest.len(), 1, "the record that met the fault was kept");
    ensure_eq!(
        rest[0].seq,
        first.seq.wrapping_add(1),
        "and it is the next one"
    );
    Ok(())
}

fn blocking_read_wakes_on_an_event() -> TestResult {
    let dev = std::sync::Arc::new(Device::open().ctx("open")?);
    let d = dev.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let _ = tx.send(pcmsig::sys::gettid());
        d.read_records(4)
    });
    let tid = rx.recv().map_err(|_| "reader died".to_string())?;
    wait_blocked_in(tid, libc::SYS_read)?;
    ensure!(!reader.is_finished(), "read returned with nothing to read");
    dev.inject(K::Xrun).ctx("inject")?;
    // The event itself must wake the reader: a blocked read() that only a signal's restart
    // ends (it finds the record when the call is made again) would pass a bare join after a
    // minute or two. The bound is the hang guard's, not a speed's.
    wait_until(
        || Ok(reader.is_finished()),
        || {
            "read() still blocked after the event it waits for was delivered: nothing woke it"
                .into()
        },
    )?;
    let recs = reader
        .join()
        .map_err(|_| "reader panicked".to_string())?
        .ctx("read")?;
    ensure_eq!(recs.len(), 1);
    ensure_eq!(recs[0].kind, K::Xrun as u16);
    Ok(())
}

fn debugfs_stats_match_the_ioctl() -> TestResult {
    let (_, dev) = listen_over_limit(2, 3)?;
    let text = std::fs::read_to_string(DEBUGFS_STATS).ctx("reading debugfs")?;
    // One stream (root's: a stream is listed while its user has files open), then its block.
    ensure!(
        text.starts_with("streams 1\ndelay_point_hits "),
        "the module's lines: {text}"
    );
    let s = dev.stats().ctx("stats")?;
    ensure!(
        s.total.dropped_queue_full >= 1,
        "the third event overflowed a limit of 2"
    );
    check_debugfs(0, &s)
}

fn rmmod_is_refused_while_open() -> TestResult {
    let dev = Device::open().ctx("open")?;
    // The module refcount (the open file) refuses the unload: -EWOULDBLOCK.
    match delete_module() {
        Err(e) => ensure_eq!(
            e.raw_os_error(),
            Some(libc::EWOULDBLOCK),
            "rmmod while open: {e}"
        ),
        Ok(()) => {
            let _ = load_module();
            return Err("rmmod succeeded with the device open".into());
        }
    }
    dev.inject(K::Started)
        .ctx("the device still works after the refused unload")?;
    drop(dev);
    Ok(())
}

/// KUnit's suite filter (writable at run time; module suites are filtered by it at load).
const KUNIT_FILTER_GLOB: &str = "/sys/module/kunit/parameters/filter_glob";

fn insmod_rmmod_cycles_leave_a_working_device() -> TestResult {
    // Each load would run the module's KUnit suites again (7 cases and ~40 log lines each time,
    // half of this test's time): they ran, and were relayed, at boot. Filter them out meanwhile.
    std::fs::write(KUNIT_FILTER_GLOB, "pcmsig_none").ctx(KUNIT_FILTER_GLOB)?;
    let cycles = load_unload_cycles();
    // "*.*" is what an unset filter means (a written empty glob would match nothing).
    std::fs::write(KUNIT_FILTER_GLOB, "*.*").ctx(KUNIT_FILTER_GLOB)?;
    cycles
}

fn load_unload_cycles() -> TestResult {
    use pcmsig_contract::{LOAD_CYCLES_DEFAULT, LOAD_CYCLES_ENV};
    let cycles: u32 = match std::env::var(LOAD_CYCLES_ENV) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{LOAD_CYCLES_ENV}={v:?}: not a count of cycles"))?,
        Err(_) => LOAD_CYCLES_DEFAULT,
    };
    let mut progress = Progress::new("load/unload cycles");
    for i in 0..cycles {
        progress.step(i as usize, cycles as usize);
        delete_module().ctx(&format!("rmmod #{i}"))?;
        ensure!(
            Device::open().is_err(),
            "device still opens after rmmod #{i}"
        );
        load_module().ctx(&format!("insmod #{i}"))?;
        // Use it a little each time: register, one event, close.
        let sig = rt(0);
        let dev = listen(sig)?;
        dev.inject(K::Started).ctx("inject")?;
        expect_kinds(sig, &[K::Started])?;
    }
    diag(&format!("{cycles} unload/load cycles, one event each"));
    Ok(())
}

fn unload_after_closing_a_running_stream_is_clean() -> TestResult {
    // The last close must stop the period timer: a timer left armed would fire into the module's
    // freed text after the unload below.
    {
        let dev = Device::open().ctx("open")?;
        // Not 1 ms periods: a slowed VM stalled past 64 of them, the timer's xrun stopped the
        // stream, and the periods below never came.
        dev.configure(STEADY_PERIOD_US, 0)
            .ctx("configure, no end")?;
        dev.trigger(Trigger::Start).ctx("start")?;
        // A few periods, so that the timer is surely armed and re-arming when the file closes.
        let deadline = Instant::now() + paced(Duration::from_secs(10));
        while dev.stats().ctx("stats")?.periods < 3 {
            ensure!(
                Instant::now() < deadline,
                "no periods in {:?}",
                paced(Duration::from_secs(10))
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    delete_module().ctx("rmmod after the last close")?;
    // Several periods with the module gone.
    std::thread::sleep(Duration::from_millis(20));
    load_module().ctx("insmod")?;
    let dev = Device::open().ctx("open after reload")?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(State::from_u32(s.state), Some(State::Setup));
    Ok(())
}

/// Where the debug kernel's kmemleak lives (debugfs, mounted by init).
const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";

fn kmemleak_finds_no_leak() -> TestResult {
    if !std::path::Path::new(KMEMLEAK).exists() {
        // The debug kernel has kmemleak; it can disable itself at run time (it says why in the
        // kernel log), and then a leak would pass unseen: that is a failure, not a skip.
        if std::env::var_os(pcmsig_contract::env::KMEMLEAK).is_some() {
            return Err(format!(
                "{KMEMLEAK} is missing on a kernel built with kmemleak: it disabled itself (see the console)"
            ));
        }
        return Err(format!("{}no kmemleak in this kernel", crate::runner::SKIP));
    }
    // Why earlier tries missed leaks: kmemleak reports an object only once it is older than
    // 5 s (`jiffies_min_age`) *and* its contents were unchanged since the previous scan (the
    // checksum rule makes the first scan that sees an object keep it grey). So: wait out the age,
    // then scan twice. Init cleared the boot-time reports before the suite started.
    std::thread::sleep(Duration::from_secs(6));
    for _ in 0..2 {
        std::fs::write(KMEMLEAK, "scan").ctx("writing scan to kmemleak")?;
    }
    let report = std::fs::read_to_string(KMEMLEAK).ctx("reading kmemleak")?;
    let objects = report.matches("unreferenced object").count();
    if objects > 0 {
        let head: Vec<&str> = report.lines().take(30).collect();
        return Err(pcmsig_contract::problem_diag(
            "kmemleak",
            &format!(": {objects} unreferenced object(s):\n{}", head.join("\n")),
        ));
    }
    Ok(())
}

fn glibc_internal_signals_32_and_33_are_refused() -> TestResult {
    // glibc keeps 32 (SIGCANCEL) and 33 (SIGSETXID) for itself: a listener could never take them.
    let dev = Device::open().ctx("open")?;
    for signo in [32u32, 33] {
        expect_errno(
            dev.register_raw(signo, 0),
            libc::EINVAL,
            &format!("register signal {signo}"),
        )?;
    }
    ensure_eq!(dev.stats().ctx("stats")?.listeners, 0, "nothing registered");
    // The first allowed one is glibc's SIGRTMIN().
    ensure_eq!(rt(0).number(), 34);
    dev.register_raw(34, 0).ctx("register 34")?;
    Ok(())
}

fn racing_triggers_never_leave_a_running_stream_without_its_timer() -> TestResult {
    // Start, PausePush and PauseRelease from three threads at once, many rounds: whatever the
    // interleaving, a stream that says Running must have its period timer (its periods advance).
    let dev = std::sync::Arc::new(Device::open().ctx("open")?);
    dev.configure(1_000, 0).ctx("configure 1 ms periods")?;
    let rounds = 150;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = [Trigger::Start, Trigger::PausePush, Trigger::PauseRelease]
        .into_iter()
        .map(|t| {
            let (dev, barrier) = (dev.clone(), barrier.clone());
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    barrier.wait();
                    // EBADFD is the state machine refusing: expected half the time.
                    let _ = dev.trigger(t);
                    barrier.wait();
                }
            })
        })
        .collect();
    let mut running_rounds = 0;
    let mut result = Ok(());
    let mut progress = Progress::new("rounds");
    for round in 0..rounds {
        progress.step(round, rounds);
        barrier.wait();
        barrier.wait();
        let s = dev.stats().ctx("stats")?;
        if result.is_err() || State::from_u32(s.state) != Some(State::Running) {
            continue;
        }
        running_rounds += 1;
        // A liveness check: only a timeout can say "never". 10 s of a Running stream with 1 ms
        // periods and no period is far beyond any slowness: the timer is gone.
        let deadline = Instant::now() + paced(Duration::from_secs(10));
        loop {
            let now = dev.stats().ctx("stats")?;
            if now.periods > s.periods || State::from_u32(now.state) != Some(State::Running) {
                break;
            }
            if Instant::now() > deadline {
                result = Err(format!(
                    "round {round}: Running for 10 s with no period: the timer is gone"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for w in workers {
        w.join()
            .map_err(|_| "trigger thread panicked".to_string())?;
    }
    let _ = dev.trigger(Trigger::Stop);
    diag(&format!("{rounds} rounds, {running_rounds} ended Running"));
    result
}

fn inject_needs_the_test_hooks_parameter() -> TestResult {
    delete_module().ctx("rmmod")?;
    load_module_with("").ctx("insmod without parameters")?;
    let result = (|| -> TestResult {
        let sig = rt(0);
        let dev = listen(sig)?;
        expect_errno(
            dev.inject(K::Started),
            libc::EOPNOTSUPP,
            "inject, hooks off",
        )?;
        expect_errno(
            dev.inject_burst(K::PeriodElapsed, 2),
            libc::EOPNOTSUPP,
            "inject burst, hooks off",
        )?;
        recv_none(&[sig])?;
        // The stream itself still works.
        dev.configure(STEADY_PERIOD_US, 1).ctx("configure")?;
        dev.trigger(Trigger::Start).ctx("start")?;
        expect_kinds(sig, &finite_run(1))?;
        Ok(())
    })();
    delete_module().ctx("rmmod")?;
    load_module().ctx("insmod with the test hooks")?;
    result
}

fn control_ioctls_need_a_file_open_for_writing() -> TestResult {
    let sig = rt(0);
    sig.block().ctx("block")?;
    let ro = Device::open_read_only().ctx("open read-only")?;
    // A read-only file may listen and read ...
    ro.register(sig).ctx("register on a read-only file")?;
    // ... but not drive the stream.
    expect_errno(ro.configure(1_000, 1), libc::EBADF, "configure")?;
    expect_errno(ro.trigger(Trigger::Start), libc::EBADF, "trigger")?;
    expect_errno(ro.inject(K::Started), libc::EBADF, "inject")?;
    expect_errno(ro.inject_burst(K::Started, 2), libc::EBADF, "inject burst")?;
    recv_none(&[sig])?;
    let rw = Device::open().ctx("open read-write")?;
    rw.inject(K::Started).ctx("inject from a writable file")?;
    expect_kinds(sig, &[K::Started])?;
    Ok(())
}

fn closing_and_reopening_never_hangs_an_ioctl() -> TestResult {
    // One thread opens and closes (each close the last: the stream resets), another opens,
    // injects and closes, many times. An inject whose event the reset swallowed must still
    // return: the per-test alarm turns a hang into a failure.
    let iterations = 400;
    let closer = std::thread::spawn(move || -> TestResult {
        for _ in 0..iterations {
            drop(Device::open().ctx("open")?);
        }
        Ok(())
    });
    let mut injected = 0;
    for _ in 0..iterations {
        let dev = Device::open().ctx("open")?;
        dev.inject(K::Started).ctx("inject")?;
        injected += 1;
    }
    closer
        .join()
        .map_err(|_| "closer thread panicked".to_string())??;
    diag(&format!(
        "{iterations} open/close and {injected} open/inject/close cycles"
    ));
    Ok(())
}

fn module_kunit_suites_pass() -> TestResult {
    // The module's own KUnit suites (pure logic, and the kernel crate's task layout against C)
    // run when init loads it; their KTAP is relayed here as this test's subtests.
    let failed = crate::runner::relay_kunit_suites("pcmsig_")?;
    ensure!(
        failed.is_empty(),
        "KUnit suites failed: {}",
        failed.join(", ")
    );
    Ok(())
}

fn a_fatal_signal_ends_an_ioctl_waiting_for_delivery() -> TestResult {
    // An emitting ioctl waits until its events are delivered. With delivery held back (a
    // load-time test hook: 60 s, released early through debugfs), SIGKILL must end the waiting
    // processes while their events are still undelivered: the first to emit, and a second one
    // that came while the first waited (seeded bug `control_held_while_waiting`: the first held
    // the stream's control mutex through its wait, so the second slept on it, uninterruptibly,
    // until the delivery came; under a slow debug kernel the hung-task detector fired on it).
    // Decided from state: the children died of the kill, and the stream's counters say no event
    // had been delivered when they did; the hold is so long that no machine's slowness can make
    // delivery come first, and the test releases it at once afterwards, so it costs nothing.
    // A hang guard far above any honest exit (0.4 s on the slowest machine seen), below the hold
    // (both paced alike).
    let death_limit = paced(Duration::from_secs(20));
    with_delivery_held(|release| {
        let sig = rt(0);
        let dev = listen(sig)?;
        let mut children = Vec::new();
        for kind in [K::Started, K::Stopped] {
            let child = spawn_child(move || {
                // Blocks in the delivery wait (the work item is held).
                Device::open().ctx("open")?.inject(kind).ctx("inject")
            })?;
            wait_process_blocked_in(child, libc::SYS_ioctl)?;
            children.push(child);
        }
        // The second first, alone: the first still waits, as whatever it might hold.
        for (i, &child) in children.iter().enumerate().rev() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGKILL,
            )
            .ctx("kill")?;
            let code = wait_child_for(child, death_limit)?;
            let s = dev.stats().ctx("stats")?;
            let Some(code) = code else {
                release()?;
                for &c in &children {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(c),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                for &c in &children[..=i] {
                    wait_child(c)?;
                }
                return Err(format!(
                    "SIGKILL did not end the ioctl of child {} waiting for delivery (still alive \
                     after {death_limit:?}; {} events emitted, {} delivered)",
                    i + 1,
                    s.events,
                    s.total.delivered
                ));
            };
            ensure_eq!(
                code,
                128 + libc::SIGKILL,
                "child {} died of the SIGKILL",
                i + 1
            );
        }
        let s = dev.stats().ctx("stats")?;
        // The kill ended the waits, not the delivery: the events were emitted and not delivered.
        ensure_eq!(s.events, 2, "both children's events were emitted");
        ensure_eq!(
            s.total.delivered,
            0,
            "not delivered when the children were already gone"
        );
        ensure_eq!(s.file.delivered, 0);
        release()?;
        // The events are still delivered, to the listener, once released. (The work item counts
        // a batch after sending it: the signal can arrive before the counter moves. Found by the
        // slowed run.)
        expect_kinds(sig, &[K::Started, K::Stopped])?;
        let deadline = Instant::now() + paced(Duration::from_secs(10));
        while dev.stats().ctx("stats")?.file.delivered != 2 {
            ensure!(Instant::now() < deadline, "the delivery was never counted");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(dev);
        Ok(())
    })
}

fn a_handled_signal_does_not_end_the_wait_for_delivery() -> TestResult {
    // Seeded bug `interrupted_wait_returns_zero`: the wait for delivery was interruptible, so a
    // handled signal ended it and the ioctl returned 0 with its signals not queued yet (the
    // contract: 0 means queued). With delivery held back, SIGUSR2 (handled, no SA_RESTART) is
    // sent to a thread waiting in an inject: it must go on sleeping, the signal pending, until
    // the delivery is released; then inject returns 0, its signal queued, and the handler runs.
    with_delivery_held(|release| {
        let sig = rt(0);
        let dev = std::sync::Arc::new(listen(sig)?);
        let h = pcmsig::HandlerReceiver::install(&[pcmsig::Signal::USR2], false).ctx("handler")?;
        let d = dev.clone();
        let inject = call(move || d.inject(K::Started))?;
        ensure!(
            !inject.returned_or_asleep_in(libc::SYS_ioctl)?,
            "inject returned with its delivery held"
        );
        let pid = std::process::id() as i32;
        // SAFETY: plain system call.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, inject.tid, libc::SIGUSR2) };
        // The signal woke an interruptible wait at once (the thread runs, then returns); a
        // killable one sleeps on.
        let returned = inject.returned_or_asleep_in(libc::SYS_ioctl)?;
        let delivered_then = dev.stats().ctx("stats")?.total.delivered;
        release()?;
        let r = inject.join()?;
        ensure!(
            !returned,
            "a handled signal ended the wait: inject returned ({r:?}) with {delivered_then} \
             signals delivered"
        );
        r.ctx("inject")?;
        ensure_eq!(
            dev.stats().ctx("stats")?.total.delivered,
            1,
            "inject returned once its signal was queued"
        );
        ensure!(
            h.recv_timeout(crate::runner::wait())
                .ctx("handler")?
                .is_some(),
            "the handler ran after the ioctl returned"
        );
        expect_kinds(sig, &[K::Started])?;
        Ok(())
    })
}
