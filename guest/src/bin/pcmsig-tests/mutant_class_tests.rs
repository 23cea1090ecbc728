//! The classes of wrong edits an independent mutation campaign found no test for (issue 34),
//! each pinned down the way a user meets it: what a signal's receiver reports about its sender,
//! where on `CLOCK_MONOTONIC` a record is stamped, whose stream a setuid-style process (real and
//! effective uid apart) drives, a finite stream started again after it stopped, a timer that
//! owes several periods at once, more records than one read takes, and the CLI's own words.

use std::collections::HashMap;
use std::os::fd::AsRawFd;

use pcmsig::sys::{self, now_ns};
use pcmsig::{uapi, Device, EventKind as K, FdReceiver, State, Trigger, WaitReceiver};

use crate::common::*;
use crate::runner::{wait, Context, Test, TestResult};
use crate::{ensure, ensure_eq};

pub fn tests() -> Vec<Test> {
    crate::tests![
        library_receivers_report_the_senders_pid_uid_and_value,
        records_are_stamped_on_clock_monotonic_when_their_event_happened,
        the_stream_and_the_send_rule_follow_the_openers_and_callers_ids,
        a_finite_stream_started_again_after_it_stopped_runs_its_periods_again,
        take_stamps_reads_past_one_read_of_records,
        a_read_writes_whole_records_and_not_a_byte_past_them,
        the_live_counts_follow_streams_files_and_listeners,
        the_cli_stream_and_stats_commands_drive_and_report_the_stream,
        the_cli_listener_says_how_many_events_it_missed,
        the_cli_listener_flags_an_event_out_of_order_and_gives_up_after_its_timeout,
        the_cli_demo_describes_each_event_in_plain_words,
        the_cli_demo_fails_when_its_events_are_lost,
    ]
}

/// Tests that reload the module (with a delay point): with the races.
pub fn reload_tests() -> Vec<Test> {
    crate::tests![a_stalled_timer_emits_every_period_it_owes]
}

/// A user-space `sigqueue` from another process: the library's `sigwaitinfo` and signalfd paths
/// report its pid, its *real* uid (what the kernel puts in `si_uid`) and its value. The senders
/// are children whose real uid is not 0 while their effective uid stays root (allowed to signal
/// us): two of them, with different uids, pids and values, so that no constant passes.
fn library_receivers_report_the_senders_pid_uid_and_value() -> TestResult {
    let (wait_sig, fd_sig) = (rt(0), rt(1));
    let waiter = WaitReceiver::new(&[wait_sig]).ctx("blocking for sigwaitinfo")?;
    let fd_rx = FdReceiver::new(&[fd_sig]).ctx("signalfd")?;
    let me = std::process::id() as i32;
    for (uid, value) in [(1234u32, 0x0123_4567i32), (4321, -7)] {
        let sender = spawn_child(move || {
            setresuid(uid, 0, 0)?;
            sys::sigqueue(me, wait_sig.number(), value).ctx("sigqueue (wait)")?;
            sys::sigqueue(me, fd_sig.number(), !value).ctx("sigqueue (signalfd)")?;
            Ok(())
        })?;
        ensure_eq!(wait_child(sender)?, 0, "sender");
        let w = waiter
            .recv_timeout(wait())
            .ctx("sigtimedwait")?
            .ok_or("no signal for sigwaitinfo")?;
        ensure_eq!(
            (w.signo, w.code, w.pid, w.uid, w.value),
            (wait_sig.number(), uapi::SI_CODE, sender, uid, value),
            "sigwaitinfo: signo, si_code, si_pid, si_uid, si_int"
        );
        let f = fd_rx
            .recv_timeout(wait())
            .ctx("signalfd read")?
            .ok_or("no signal on the signalfd")?;
        ensure_eq!(
            (f.signo, f.code, f.pid, f.uid, f.value),
            (fd_sig.number(), uapi::SI_CODE, sender, uid, !value),
            "signalfd: ssi_signo, ssi_code, ssi_pid, ssi_uid, ssi_int"
        );
    }
    ensure!(
        fd_rx.try_recv().ctx("signalfd read")?.is_none(),
        "an extra signal on the signalfd"
    );
    Ok(())
}

/// Receives the events `kinds` on `sig` (checked as `expect_kinds` does) and returns the
/// `CLOCK_MONOTONIC` time each was taken.
fn receipt_times(sig: pcmsig::Signal, kinds: &[K]) -> Result<Vec<u64>, String> {
    let mut at = Vec::new();
    let mut first = None;
    for (i, want) in kinds.iter().enumerate() {
        let info = recv(&[sig]).map_err(|e| format!("event {i} ({want:?}): {e}"))?;
        at.push(now_ns());
        let (kind, seq) = expect_event(&info, sig)?;
        let base = *first.get_or_insert(seq);
        ensure_eq!(
            (kind, seq),
            (*want, (base + i as u32) & uapi::SEQ_MASK),
            "event {i}"
        );
    }
    Ok(at)
}

/// The UAPI says a record's `timestamp_ns` is the `CLOCK_MONOTONIC` time its event happened:
/// an ioctl's event between the clock read before the call and the one after it; a period at
/// its boundary, k periods after the start (no earlier than the clock before START plus k
/// periods), and no later than its signal's receipt; the stop that ends a finite run between
/// its last period and its signal. (CLOCK_BOOTTIME equals CLOCK_MONOTONIC in a VM that never
/// suspends; any other clock, or a stamp counted from the stream's own origin, fails.)
fn records_are_stamped_on_clock_monotonic_when_their_event_happened() -> TestResult {
    let sig = rt(0);
    let dev = listen(sig)?;
    let period = u64::from(STEADY_PERIOD_US) * 1000;
    let t0 = now_ns();
    dev.configure(STEADY_PERIOD_US, 3).ctx("configure")?;
    let t1 = now_ns();
    dev.trigger(Trigger::Start).ctx("start")?;
    let t2 = now_ns();
    let got = receipt_times(sig, &finite_run(3))?;
    let recs = dev.read_records(16).ctx("read")?;
    let kinds: Vec<u16> = recs.iter().map(|r| r.kind).collect();
    let want: Vec<u16> = finite_run(3).iter().map(|k| *k as u16).collect();
    ensure_eq!(kinds, want, "the records");
    let ts: Vec<u64> = recs.iter().map(|r| r.timestamp_ns).collect();
    let within = |i: usize, from: u64, to: u64| -> TestResult {
        ensure!(
            (from..=to).contains(&ts[i]),
            "record {i} ({:?}) stamped {} ns, outside {from}..={to} (all: {ts:?})",
            K::from_u32(u32::from(recs[i].kind)),
            ts[i]
        );
        Ok(())
    };
    within(0, t0, t1)?;
    within(1, t1, t2)?;
    for k in 1..=3u64 {
        let i = 1 + k as usize;
        within(i, t1 + k * period, got[i])?;
    }
    within(5, ts[4], got[5])
}

/// Switches the calling process's ids to real `r`, effective `e`, saved 0 (from root: the saved
/// uid 0 lets it switch again, and its capabilities come back with an effective uid of 0).
fn as_ids(r: u32, e: u32) -> TestResult {
    setresuid(0, 0, 0)?;
    setresuid(r, e, 0)
}

/// Runs `f` in a child whose ids all become `uid`; its result as `Ok(())` or `Err(errno)`,
/// carried by the exit code (a failure that is no errno exits with 255).
fn as_user(uid: u32, f: impl FnOnce() -> Result<(), i32>) -> Result<Result<(), i32>, String> {
    let code = in_child(|| {
        if setresuid(uid, uid, uid).is_err() {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(255) };
        }
        if let Err(errno) = f() {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(errno) };
        }
        Ok(())
    })?;
    ensure!(code != 255, "the child as uid {uid} failed (see above)");
    Ok(if code == 0 { Ok(()) } else { Err(code) })
}

fn errno_of(r: pcmsig::Result<()>) -> Result<(), i32> {
    r.map_err(|e| e.errno().unwrap_or(255))
}

/// A setuid-style process (real and effective uid apart), as the README says: a file drives
/// the stream of its opener's *effective* uid; REGISTER needs the opener's ids (real or
/// effective) to match the registering thread's real or saved uid; an emitting ioctl needs the
/// caller's ids (real or effective) to match every listener's. Two opens that share the
/// effective uid and differ in the real one share a stream; two that share the real uid and
/// differ in the effective one do not. Keying on the real uid, or reading one id for the other
/// at open or at an ioctl, fails here.
fn the_stream_and_the_send_rule_follow_the_openers_and_callers_ids() -> TestResult {
    chmod_device_666()?;
    let code = in_child(|| {
        as_ids(1000, 2000)?;
        let a = Device::open().ctx("open as ruid 1000, euid 2000")?;
        a.configure(1_000_000, 0).ctx("configure")?;
        as_ids(3000, 2000)?;
        let s = Device::open()
            .ctx("open as 3000/2000")?
            .stats()
            .ctx("stats")?;
        ensure_eq!(
            (State::from_u32(s.state), s.events),
            (Some(State::Prepared), 1),
            "euid 2000 with another real uid: the same stream as the first open"
        );
        as_ids(1000, 4000)?;
        let c = Device::open().ctx("open as 1000/4000")?;
        let s = c.stats().ctx("stats")?;
        ensure_eq!(
            (State::from_u32(s.state), s.events),
            (Some(State::Setup), 0),
            "real uid 1000 with euid 4000: not the euid-2000 stream"
        );
        setresuid(0, 0, 0)?;
        let text = std::fs::read_to_string(DEBUGFS_STATS).ctx("debugfs")?;
        let mut owners: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("stream "))
            .collect();
        owners.sort_unstable();
        ensure_eq!(owners, vec!["2000", "4000"], "the streams' owners (euids)");
        // REGISTER on `a` (opened by real 1000, effective 2000).
        let sig = rt(0);
        for (uid, want) in [(1000, Ok(())), (2000, Ok(())), (5000, Err(libc::EPERM))] {
            let got = as_user(uid, || errno_of(a.register(sig)))?;
            ensure_eq!(got, want, "REGISTER on the 1000/2000 file by user {uid}");
        }
        // A live listener of user 1000 on `a`; then emitters with their ids apart.
        let (ready_rd, ready_wr) = nix::unistd::pipe().ctx("pipe")?;
        let (go_rd, go_wr) = nix::unistd::pipe().ctx("pipe")?;
        let a = &a;
        let listener = spawn_child(move || {
            setresuid(1000, 1000, 1000)?;
            sig.block().ctx("block")?;
            a.register(sig).ctx("register as 1000")?;
            nix::unistd::write(&ready_wr, b"r").ctx("ready")?;
            let mut b = [0u8; 1];
            nix::unistd::read(&go_rd, &mut b).ctx("go")?;
            Ok(())
        })?;
        let mut b = [0u8; 1];
        nix::unistd::read(&ready_rd, &mut b).ctx("waiting for the listener")?;
        for (r, e, want) in [
            (1000, 7000, Ok(())),
            (7000, 1000, Ok(())),
            (7000, 7000, Err(libc::EPERM)),
        ] {
            as_ids(r, e)?;
            let got = errno_of(a.inject(K::Started));
            ensure_eq!(got, want, "inject by real {r}, effective {e} to user 1000");
        }
        setresuid(0, 0, 0)?;
        let s = a.stats().ctx("stats")?;
        ensure_eq!(
            s.total.delivered,
            2,
            "the two permitted injects reached the listener"
        );
        nix::unistd::write(&go_wr, b"g").ctx("go")?;
        ensure_eq!(wait_child(listener)?, 0, "listener");
        Ok(())
    })?;
    ensure_eq!(code, 0, "child");
    Ok(())
}

/// A finite stream (3 periods) that stopped by itself, started again without CONFIGURE: each
/// start runs the configured periods again (the count restarts), no more and no fewer, and
/// stops by itself; the records say which came from the ioctl and which from the period source.
fn a_finite_stream_started_again_after_it_stopped_runs_its_periods_again() -> TestResult {
    let sig = rt(0);
    let dev = listen_to_stream(sig, STEADY_PERIOD_US, 3)?;
    expect_kinds(sig, &finite_run(3))?;
    let source = crate::common::period_source();
    dev.read_records(16)
        .ctx("reading the first run's records")?;
    let mut events = 6;
    for run in 1..=2 {
        let s = dev.stats().ctx("stats")?;
        ensure_eq!(
            (State::from_u32(s.state), s.periods, s.events),
            (Some(State::Stopped), 3, events),
            "after run {run}"
        );
        dev.trigger(Trigger::Start)
            .ctx(&format!("start {} without configure", run + 1))?;
        let again = &finite_run(3)[1..];
        expect_kinds(sig, again)?;
        recv_none(&[sig])?;
        events += again.len() as u64;
        let recs = dev.read_records(16).ctx("read")?;
        let got: Vec<(u16, u16)> = recs.iter().map(|r| (r.kind, r.source)).collect();
        let ioctl = uapi::EventSource::Ioctl as u16;
        let mut want = vec![(K::Started as u16, ioctl)];
        want.extend([(K::PeriodElapsed as u16, source); 3]);
        want.push((K::Stopped as u16, source));
        ensure_eq!(got, want, "records of restart {run}: (kind, source)");
    }
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(
        (
            State::from_u32(s.state),
            s.periods,
            s.events,
            s.file.delivered
        ),
        (Some(State::Stopped), 3, events, events)
    );
    check_debugfs(0, &s)
}

/// A timer expiry that owes several periods (its CPU stalled: the `timer_stall` point holds
/// every expiry 20 ms, 4 periods of 5 ms, far from the 64 that make an xrun, which a pause of
/// the VM's CPU would have to reach: 320 ms) emits each of
/// them, numbered in order and stamped exactly a period apart; with the edu device the
/// interrupt then owes them all and emits them. 25 periods, then the stop, as configured, from
/// fewer expiries than periods.
fn a_stalled_timer_emits_every_period_it_owes() -> TestResult {
    crate::modload::with_module_params(
        &format!(
            "test_delay_points={} test_delay_ms=20",
            uapi::DelayPoint::TimerStall.bit()
        ),
        || {
            const PERIOD_US: u32 = 5_000;
            const PERIODS: usize = 25;
            let sig = rt(0);
            let dev = listen_to_stream(sig, PERIOD_US, PERIODS as u32)?;
            expect_kinds(sig, &finite_run(PERIODS))?;
            let expiries = crate::race_tests::hits()?;
            let recs = dev.read_records(64).ctx("read")?;
            let kinds: Vec<u16> = recs.iter().map(|r| r.kind).collect();
            let want: Vec<u16> = finite_run(PERIODS).iter().map(|k| *k as u16).collect();
            ensure_eq!(kinds, want, "the records");
            let source = crate::common::period_source();
            let periods = &recs[2..2 + PERIODS];
            for (i, w) in periods.windows(2).enumerate() {
                ensure_eq!(
                    (w[1].seq.wrapping_sub(w[0].seq), w[1].source),
                    (1, source),
                    "period {}",
                    i + 1
                );
                ensure_eq!(
                    w[1].timestamp_ns - w[0].timestamp_ns,
                    u64::from(PERIOD_US) * 1000,
                    "periods {i} and {} stamped a period apart",
                    i + 1
                );
            }
            let s = dev.stats().ctx("stats")?;
            ensure_eq!(
                (State::from_u32(s.state), s.periods),
                (Some(State::Stopped), PERIODS as u64)
            );
            ensure!(
                expiries < PERIODS as u64,
                "{expiries} timer expiries for {PERIODS} periods: none owed more than one"
            );
            crate::runner::diag(&format!("{PERIODS} periods from {expiries} expiries"));
            Ok(())
        },
    )
}

/// More records than one `read()` of the library takes (64): `take_stamps` reads until none is
/// left and keeps every record's stamp under its sequence number; and one `read()` of the
/// device fills its buffer past the driver's 16-record steps.
fn take_stamps_reads_past_one_read_of_records() -> TestResult {
    let dev = Device::open_nonblocking().ctx("open")?;
    let t0 = now_ns();
    for n in [17, 64, 64, 5] {
        dev.inject_burst(K::PeriodElapsed, n).ctx("burst")?;
    }
    let t1 = now_ns();
    let first = dev.read_records(17).ctx("read 17")?;
    ensure_eq!(first.len(), 17, "one read of 17 records");
    let base = first[0].seq;
    ensure!(
        first
            .iter()
            .enumerate()
            .all(|(i, r)| r.seq == base.wrapping_add(i as u32)),
        "the 17 in order: {first:?}"
    );
    let mut stamps = HashMap::new();
    dev.take_stamps(&mut stamps);
    let mut seqs: Vec<u32> = stamps.keys().copied().collect();
    seqs.sort_unstable();
    let want: Vec<u32> = (17..17 + 133)
        .map(|i| (base + i) & uapi::SEQ_MASK)
        .collect();
    ensure_eq!(
        seqs,
        want,
        "every record after the first 17, by sequence number"
    );
    ensure!(
        stamps.values().all(|t| (t0..=t1).contains(t)),
        "stamps outside {t0}..={t1}"
    );
    Ok(())
}

/// The words `pcmsig demo` prints (`cargo xtask run`), line by line: each event described in
/// plain words with its latency, then the statistics. Latencies and the thread id vary and are
/// checked as numbers; everything else is exact.
fn the_cli_demo_describes_each_event_in_plain_words() -> TestResult {
    let out = std::process::Command::new("/bin/pcmsig")
        .args(["demo", "--period-us", "20000", "--periods", "2"])
        .output()
        .ctx("running /bin/pcmsig demo")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "pcmsig demo: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // A fresh stream (no file of ours is open): its events are numbered from 1.
    let lines: Vec<&str> = text.lines().collect();
    let latency = |line: &str, words: &str| -> TestResult {
        let us = line
            .strip_prefix(words)
            .and_then(|l| l.strip_prefix(" (latency "))
            .and_then(|l| l.strip_suffix(" us)"))
            .ok_or_else(|| format!("{line:?} is not {words:?} with its latency"))?;
        us.parse::<u64>()
            .map_err(|_| format!("{line:?}: latency {us:?} is no number"))?;
        Ok(())
    };
    ensure_eq!(lines.len(), 11, "lines of:\n{text}");
    let tid = lines[0]
        .strip_prefix("listening on SIGRTMIN+2 (wait mode), thread ")
        .ok_or_else(|| format!("first line {:?}", lines[0]))?;
    tid.parse::<u32>()
        .map_err(|_| format!("thread id {tid:?} is no number"))?;
    ensure_eq!(lines[1], "starting the stream: 2 periods of 20000 us");
    latency(lines[2], "stream prepared")?;
    latency(lines[3], "stream started")?;
    latency(lines[4], "period elapsed (seq 3)")?;
    latency(lines[5], "period elapsed (seq 4)")?;
    latency(lines[6], "stream stopped")?;
    ensure_eq!(
        lines[7..].to_vec(),
        vec![
            "state stopped, 0 listener(s), 5 events, 2 periods this run",
            "this file: fired 0 = delivered 0 + dropped 0 (queue full 0, exited 0, exec'd 0, \
             no permission 0)",
            "all listeners: fired 5 = delivered 5 + dropped 0 (queue full 0, exited 0, exec'd 0, \
             no permission 0)",
            "lost 0 / reordered 0 (from sequence numbers)",
        ],
        "the statistics"
    );
    Ok(())
}

/// A reader's buffer that is not a whole number of records (a struct array with a trailer, a
/// byte count from another computation): read() fills whole records only, leaves the bytes
/// after the last one untouched, and the records it did not take are read next, in order. The
/// buffer takes 17 records (more than one 16-record batch) with 40 buffered.
fn a_read_writes_whole_records_and_not_a_byte_past_them() -> TestResult {
    const REC: usize = std::mem::size_of::<uapi::EventRecord>();
    const TAIL: usize = REC / 2;
    let dev = Device::open_nonblocking().ctx("open")?;
    dev.inject_burst(K::Started, 40).ctx("inject")?;
    let mut buf = vec![0xA5u8; 17 * REC + TAIL];
    // SAFETY: `buf` is ours and has `buf.len()` writable bytes.
    let n = unsafe { libc::read(dev.file().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    ensure_eq!(n, (17 * REC) as isize, "17 whole records");
    ensure!(
        buf[17 * REC..].iter().all(|&b| b == 0xA5),
        "read() wrote past its last whole record: {:x?}",
        &buf[17 * REC..]
    );
    let seqs: Vec<u32> = buf[..17 * REC]
        .chunks_exact(REC)
        // SAFETY: each chunk is REC bytes the module wrote as an EventRecord.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<uapi::EventRecord>()) }.seq)
        .collect();
    let rest: Vec<u32> = dev
        .read_records(64)
        .ctx("reading the rest")?
        .iter()
        .map(|r| r.seq)
        .collect();
    let all: Vec<u32> = seqs.iter().chain(&rest).copied().collect();
    let want: Vec<u32> = (1..=40).collect();
    ensure_eq!(all, want, "every record once, in order");
    ensure_eq!(dev.stats().ctx("stats")?.read_overruns, 0);
    Ok(())
}

/// debugfs `live_*` lines (what the fault sweep compares after each failed call, to name a
/// leak by its call): (streams, files, listeners) alive now.
fn live_counts() -> Result<(u64, u64, u64), String> {
    Ok((
        debugfs_stat("live_streams")?,
        debugfs_stat("live_files")?,
        debugfs_stat("live_listeners")?,
    ))
}

/// The counts of live objects rise with each open and registration and fall back when they
/// are gone: a user's stream lives while a file of it is open, a file until its close, a
/// listener until its file's close. (The fault sweep relies on them to name a leak.)
fn the_live_counts_follow_streams_files_and_listeners() -> TestResult {
    let (streams, files, listeners) = live_counts()?;
    let sig = rt(4);
    let a = listen(sig)?;
    let b = Device::open().ctx("open")?;
    ensure_eq!(
        live_counts()?,
        (streams + 1, files + 2, listeners + 1),
        "one stream, two files, one listener more"
    );
    drop(a);
    drop(b);
    // The last close's work (the stream's reset and release) is done when close returns.
    ensure_eq!(
        live_counts()?,
        (streams, files, listeners),
        "all gone again"
    );
    Ok(())
}

/// `/bin/pcmsig ARGS`: its standard output, or why it failed.
fn cli(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("/bin/pcmsig")
        .args(args)
        .output()
        .ctx("running /bin/pcmsig")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "pcmsig {}: {}\n{text}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

/// `/bin/pcmsig listen ARGS`, started and ready (its first line said so): the child, and a
/// reader of its next output line.
fn cli_listen(
    args: &[&str],
) -> Result<(std::process::Child, impl FnMut() -> Result<String, String>), String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new("/bin/pcmsig")
        .arg("listen")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ctx("spawning pcmsig listen")?;
    let mut lines = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut next = move || -> Result<String, String> {
        lines
            .next()
            .ok_or("pcmsig listen ended early")?
            .ctx("reading pcmsig listen")
    };
    let ready = next()?;
    ensure!(
        ready.starts_with("listening on SIGRTMIN (wait mode)"),
        "{ready:?}"
    );
    Ok((child, next))
}

/// The CLI drives the caller's stream and reports it in words: `pcmsig stream start` configures
/// and starts it, `stream stop` stops it, `stats` shows the counters again; a file of the test's
/// own keeps the stream between the commands (and sees their events). A 10 s period: no period
/// is due while the commands run.
fn the_cli_stream_and_stats_commands_drive_and_report_the_stream() -> TestResult {
    let dev = Device::open_nonblocking().ctx("open")?;
    let first = |text: String| text.lines().next().unwrap_or_default().to_string();
    let out = first(cli(&[
        "stream",
        "start",
        "--period-us",
        "10000000",
        "--periods",
        "5",
    ])?);
    ensure_eq!(
        out,
        "state running, 0 listener(s), 2 events, 0 periods this run"
    );
    ensure_eq!(
        State::from_u32(dev.stats().ctx("stats")?.state),
        Some(State::Running)
    );
    let out = first(cli(&["stream", "stop"])?);
    ensure_eq!(
        out,
        "state stopped, 0 listener(s), 3 events, 0 periods this run"
    );
    let out = first(cli(&["stats"])?);
    ensure_eq!(
        out,
        "state stopped, 0 listener(s), 3 events, 0 periods this run"
    );
    let kinds: Vec<u16> = dev
        .read_records(8)
        .ctx("read")?
        .iter()
        .map(|r| r.kind)
        .collect();
    ensure_eq!(
        kinds,
        vec![K::Prepared as u16, K::Started as u16, K::Stopped as u16],
        "the commands' events"
    );
    Ok(())
}

/// `pcmsig listen` tells its user when events were lost: its signal queue holds one signal
/// (RLIMIT_SIGPENDING 1), the listener is stopped while a burst of five arrives (one queued,
/// four dropped), then resumed; the next event is marked with the four it missed.
fn the_cli_listener_says_how_many_events_it_missed() -> TestResult {
    set_sigpending_limit(1)?;
    let dev = Device::open_nonblocking().ctx("open")?;
    let (mut child, mut next) = cli_listen(&["--count", "2", "--timeout-ms", "20000"])?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).ctx("SIGSTOP")?;
    // Stopped: its SIGSTOP was taken off its queue, which has room for one signal again.
    let stopped = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WUNTRACED))
        .ctx("waiting for the stop")?;
    ensure!(
        matches!(stopped, nix::sys::wait::WaitStatus::Stopped(..)),
        "{stopped:?}"
    );
    dev.inject_burst(K::Started, 5).ctx("burst")?;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).ctx("SIGCONT")?;
    let one = next()?;
    dev.inject(K::Stopped).ctx("inject")?;
    let two = next()?;
    let status = child.wait().ctx("waiting for pcmsig listen")?;
    ensure!(status.success(), "pcmsig listen: {status}");
    ensure!(
        one.starts_with("stream started (latency ") && !one.contains("missed"),
        "the first: {one:?}"
    );
    ensure!(
        two.starts_with("stream stopped (latency ") && two.ends_with(" [4 missed]"),
        "the event after the four dropped: {two:?}"
    );
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(s.total.dropped_queue_full, 4, "the four counted as dropped");
    Ok(())
}

/// `pcmsig listen` flags an event that comes after a later one (here a foreign sender queues
/// an old sequence number, as a confused or replayed sender would) and ends, saying so, once no
/// event came for its `--timeout-ms`.
fn the_cli_listener_flags_an_event_out_of_order_and_gives_up_after_its_timeout() -> TestResult {
    let dev = Device::open_nonblocking().ctx("open")?;
    let (mut child, mut next) = cli_listen(&["--timeout-ms", "3000"])?;
    let pid = child.id() as i32;
    dev.inject_burst(K::Started, 2).ctx("burst")?;
    // Sequence 1 again, after 2: queued at once, so that no pause of the VM between the burst
    // and this can outlast the listener's timeout. The burst's two are queued already (the
    // inject returned), to the listener's thread, whose own queue it takes before the process's.
    sys::sigqueue(pid, rt(0).number(), uapi::encode(K::Paused, 1)).ctx("sigqueue")?;
    let (one, two) = (next()?, next()?);
    let three = next()?;
    let last = next()?;
    let status = child.wait().ctx("waiting for pcmsig listen")?;
    ensure!(status.success(), "pcmsig listen: {status}");
    ensure!(
        one.starts_with("stream started (latency ") && two.starts_with("stream started (latency "),
        "the stream's two: {one:?}, {two:?}"
    );
    ensure_eq!(three, "stream paused [out of order]");
    ensure_eq!(last, "no event for 3000 ms");
    Ok(())
}

/// `pcmsig demo` fails, and says how many of its events came, when the kernel drops them: here
/// every one, its process's `RLIMIT_SIGPENDING` being 0 (the driver counts each as dropped for a
/// full queue, so the counters alone balance: only the count received shows the loss).
fn the_cli_demo_fails_when_its_events_are_lost() -> TestResult {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/bin/pcmsig");
    cmd.args([
        "demo",
        "--period-us",
        "20000",
        "--periods",
        "1",
        // Long enough that a pause of the VM cannot end the wait before the stream's
        // four events were counted.
        "--timeout-ms",
        "2000",
    ]);
    // SAFETY: only `setrlimit`, async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_SIGPENDING, &none) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let out = cmd.output().ctx("running /bin/pcmsig demo")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!out.status.success(), "pcmsig demo succeeded:\n{text}");
    for want in [
        "all listeners: fired 4 = delivered 0 + dropped 4 (queue full 4,",
        "events were lost: 0 of 4 received",
    ] {
        ensure!(text.contains(want), "no {want:?} in:\n{text}");
    }
    Ok(())
}
