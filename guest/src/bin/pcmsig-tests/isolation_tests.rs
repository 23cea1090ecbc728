//! Users isolated from each other (`module/users.rs`): each user's opens drive a stream of
//! their own, so that no user's listener can block, stop, slow or change another user's stream
//! or what another user's listeners receive; a file passed to another user still drives its
//! opener's stream, under the send rule. Each test fails on the one shared stream of the old
//! driver (seeded bug `shared_stream`).

use nix::unistd::{pipe, read, write};
use pcmsig::{uapi, EventKind as K, State, Trigger};
use std::os::fd::OwnedFd;

use crate::common::*;
use crate::runner::{Context, Test, TestResult};
use crate::{ensure, ensure_eq};

pub fn tests() -> Vec<Test> {
    crate::tests![
        a_listener_that_never_drains_blocks_no_other_user,
        three_users_streams_run_side_by_side,
        another_users_listeners_cannot_be_reached_through_a_passed_file,
    ]
}

/// Waits for one byte on `fd` (a pipe another process writes when it is ready).
fn wait_for(fd: &OwnedFd, what: &str) -> TestResult {
    let n = read(fd, &mut [0u8]).ctx(what)?;
    ensure_eq!(n, 1, "{what}: the other side ended first");
    Ok(())
}

/// The issue's scenario: user 1000 registers and never drains its full signal queue; user 2000
/// opens, registers and drives a stream all the same (on the shared stream its CONFIGURE failed
/// with EPERM), gets exactly its own events, and neither user sees the other's.
fn a_listener_that_never_drains_blocks_no_other_user() -> TestResult {
    chmod_device_666()?;
    let (ready_rd, ready_wr) = pipe().ctx("pipe")?;
    let (done_rd, done_wr) = pipe().ctx("pipe")?;
    let stuck = spawn_child(|| {
        setresuid(1000, 1000, 1000)?;
        set_sigpending_limit(2)?;
        let sig = rt(0);
        let dev = listen(sig)?;
        for _ in 0..3 {
            dev.inject(K::Started).ctx("inject as 1000")?;
        }
        write(&ready_wr, b"r").ctx("ready")?;
        wait_for(&done_rd, "waiting for user 2000")?;
        let s = dev.stats().ctx("stats as 1000")?;
        ensure_eq!(s.listeners, 1, "user 1000's stream has only its listener");
        ensure_eq!(s.events, 3, "user 1000's stream has only its events");
        ensure_eq!(s.file.delivered, 2);
        ensure_eq!(s.file.dropped_queue_full, 1);
        ensure_eq!(State::from_u32(s.state), Some(State::Setup));
        Ok(())
    })?;
    wait_for(&ready_rd, "waiting for user 1000")?;
    let code = in_child(|| {
        setresuid(2000, 2000, 2000)?;
        let sig = rt(0);
        let dev = listen(sig)?;
        dev.configure(STEADY_PERIOD_US, 3)
            .ctx("configure as 2000 while user 1000 listens")?;
        dev.trigger(Trigger::Start).ctx("start as 2000")?;
        expect_kinds(sig, &finite_run(3))?;
        recv_none(&[sig])?;
        let s = dev.stats().ctx("stats as 2000")?;
        ensure_eq!(s.listeners, 1);
        ensure_eq!(s.events, 6);
        ensure_eq!(s.total.delivered, 6);
        ensure_eq!(s.total.dropped_queue_full, 0);
        Ok(())
    })?;
    write(&done_wr, b"d").ctx("done")?;
    ensure_eq!(code, 0, "user 2000");
    ensure_eq!(wait_child(stuck)?, 0, "user 1000");
    Ok(())
}

/// Three users at once: one falls behind and xruns its own running stream, one runs a finite
/// stream to its end, one pauses, resumes and stops its own; each gets exactly its own events,
/// and its periods from the period source (the edu device in the edu VM: one device serves
/// every user's stream).
fn three_users_streams_run_side_by_side() -> TestResult {
    chmod_device_666()?;
    let (go_rd, go_wr) = pipe().ctx("pipe")?;
    let behind = spawn_child(|| {
        setresuid(1000, 1000, 1000)?;
        set_sigpending_limit(4)?;
        let dev = listen(rt(0))?;
        wait_for(&go_rd, "go")?;
        dev.configure(STEADY_PERIOD_US, 0).ctx("configure")?;
        dev.trigger(Trigger::Start).ctx("start")?;
        // Prepared, Started and two periods fill the queue: the next period is an xrun.
        let deadline = std::time::Instant::now() + crate::runner::hang_guard();
        loop {
            let s = dev.stats().ctx("stats")?;
            if State::from_u32(s.state) == Some(State::Xrun) {
                ensure_eq!(s.listeners, 1);
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "user 1000 never fell behind: {s:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    })?;
    let finite = spawn_child(|| {
        setresuid(2000, 2000, 2000)?;
        let sig = rt(0);
        let dev = listen(sig)?;
        wait_for(&go_rd, "go")?;
        dev.configure(STEADY_PERIOD_US, 5).ctx("configure")?;
        dev.trigger(Trigger::Start).ctx("start")?;
        expect_kinds(sig, &finite_run(5))?;
        recv_none(&[sig])?;
        let s = dev.stats().ctx("stats")?;
        ensure_eq!(State::from_u32(s.state), Some(State::Stopped));
        ensure_eq!((s.listeners, s.events, s.periods), (1, 8, 5));
        ensure_eq!(s.total.dropped_queue_full, 0);
        let periods: Vec<_> = dev
            .read_records(16)
            .ctx("read")?
            .into_iter()
            .filter(|r| r.kind == K::PeriodElapsed as u16)
            .collect();
        ensure_eq!(periods.len(), 5);
        ensure!(
            periods
                .iter()
                .all(|r| r.source == crate::common::period_source()),
            "periods from the period source: {periods:?}"
        );
        Ok(())
    })?;
    let triggers = spawn_child(|| {
        setresuid(3000, 3000, 3000)?;
        let sig = rt(0);
        let dev = listen(sig)?;
        wait_for(&go_rd, "go")?;
        // The longest period: none comes between the triggers, whatever pauses the VM.
        dev.configure(uapi::PERIOD_US_MAX, 0).ctx("configure")?;
        for t in [
            Trigger::Start,
            Trigger::PausePush,
            Trigger::PauseRelease,
            Trigger::Stop,
        ] {
            dev.trigger(t).ctx(&format!("{t:?}"))?;
        }
        expect_kinds(
            sig,
            &[K::Prepared, K::Started, K::Paused, K::Resumed, K::Stopped],
        )?;
        recv_none(&[sig])?;
        let s = dev.stats().ctx("stats")?;
        ensure_eq!((s.listeners, s.events), (1, 5));
        Ok(())
    })?;
    write(&go_wr, b"ggg").ctx("go")?;
    let codes = [
        wait_child(behind)?,
        wait_child(finite)?,
        wait_child(triggers)?,
    ];
    ensure_eq!(codes, [0, 0, 0], "users 1000, 2000, 3000");
    Ok(())
}

/// Sharing across users is explicit, and bounded by the send rule: a file user 2000 opened and
/// listens on, inherited by a process of user 1000, cannot drive 2000's stream (EPERM, nothing
/// emitted); once 2000 no longer listens, it may (2000 chose to share the file).
fn another_users_listeners_cannot_be_reached_through_a_passed_file() -> TestResult {
    chmod_device_666()?;
    let code = in_child(|| {
        // Saved uid root, so that the child below can become user 1000; user 1000 may signal
        // neither 2000 nor root.
        setresuid(2000, 2000, 0)?;
        let sig = rt(0);
        let dev = listen(sig)?;
        // The file passes by fork to a child that becomes user 1000 for good.
        let drive = |expect_eperm: bool| {
            in_child(|| {
                setresuid(0, 0, 0)?;
                setresuid(1000, 1000, 1000)?;
                let results = [
                    ("inject", dev.inject(K::Started)),
                    ("configure", dev.configure(STEADY_PERIOD_US, 1)),
                    ("trigger", dev.trigger(Trigger::Start)),
                ];
                for (what, r) in results {
                    if expect_eperm {
                        expect_errno(r, libc::EPERM, &format!("{what} as 1000"))?;
                    } else {
                        r.ctx(&format!("{what} as 1000, no listener"))?;
                    }
                }
                Ok(())
            })
        };
        ensure_eq!(drive(true)?, 0, "user 1000 while 2000 listens");
        recv_none(&[sig])?;
        ensure_eq!(dev.stats().ctx("stats")?.events, 0, "nothing emitted");
        dev.unregister().ctx("unregister")?;
        ensure_eq!(drive(false)?, 0, "user 1000 once nobody listens");
        Ok(())
    })?;
    ensure_eq!(code, 0, "user 2000");
    Ok(())
}
