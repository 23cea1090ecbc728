//! The module review's findings (issue 38): each test failed on the driver before its fix.
//!
//! Like the race tests, a test that needs a window reloads the module with a named delay point
//! (`uapi::DelayPoint`), acts inside it and releases it, deciding from state, never from time.

use std::sync::Arc;

use pcmsig::sys::{self, SignalSet};
use pcmsig::{uapi, uapi::DelayPoint, Device, EventKind as K, Trigger};

use crate::common::*;
use crate::race_tests::{hits, release, wait_hits, with_delay_points};
use crate::runner::{Context, Test, TestResult, QUIET};
use crate::{ensure, ensure_eq};

/// The tests that keep the module as init loaded it.
pub fn tests() -> Vec<Test> {
    crate::tests![]
}

/// The tests that reload the module (with delay points): they run with the race tests.
pub fn reload_tests() -> Vec<Test> {
    crate::tests![
        a_faulting_read_keeps_the_oldest_records_when_newer_ones_filled_the_buffer,
        a_delay_point_holds_each_visit_until_it_is_released,
        an_xrun_is_signalled_when_ioctls_have_filled_the_pending_queue,
        a_listener_that_exits_before_its_signal_is_sent_is_counted_exited,
    ]
}

const REC: usize = std::mem::size_of::<uapi::EventRecord>();

/// Two pages of our own, the second inaccessible: a buffer that ends `fit` records before the
/// hole faults on its record `fit`.
struct HalfFaulting {
    base: *mut u8,
    page: usize,
}

impl HalfFaulting {
    fn new() -> Result<Self, String> {
        // SAFETY: `sysconf` has no preconditions.
        let page =
            usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ctx("page size")?;
        // SAFETY: a fresh anonymous mapping of two pages.
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
        let r = unsafe { libc::mprotect(base.add(page).cast(), page, libc::PROT_NONE) };
        ensure_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
        Ok(Self { base, page })
    }

    /// The address `fit` records before the inaccessible page.
    fn buf(&self, fit: usize) -> usize {
        self.base as usize + self.page - fit * REC
    }

    /// Record `i` of a buffer from [`HalfFaulting::buf`]`(fit)`.
    fn record(&self, fit: usize, i: usize) -> uapi::EventRecord {
        assert!(i < fit);
        // SAFETY: within the accessible first page; `EventRecord` is plain integers.
        unsafe { std::ptr::read_unaligned((self.buf(fit) + i * REC) as *const uapi::EventRecord) }
    }
}

impl Drop for HalfFaulting {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used.
        unsafe { libc::munmap(self.base.cast(), 2 * self.page) };
    }
}

/// Finding 8: a `read()` whose copy faults puts the records it took but could not copy back at
/// the front; when newer records filled the buffer meanwhile, the documented order
/// (`READ_QUEUE_LEN`: the oldest are kept, newer ones dropped and counted) means the newest go,
/// not the put-back ones. The old driver dropped the put-back (oldest) records. The reader stops
/// at the delay point `read_before_put_back` while 16 newer events fill the buffer.
fn a_faulting_read_keeps_the_oldest_records_when_newer_ones_filled_the_buffer() -> TestResult {
    with_delay_points(&[DelayPoint::ReadBeforePutBack], || {
        let cap = uapi::READ_QUEUE_LEN as usize;
        let dev = Arc::new(Device::open_nonblocking().ctx("open")?);
        for _ in 0..cap / 64 {
            dev.inject_burst(K::Started, 64)
                .ctx("filling the read buffer")?;
        }
        let mem = HalfFaulting::new()?;
        // Room for 8 records, asked for 32: the driver takes 16, copies 8, faults on the 9th.
        let (fit, ask) = (8, 32);
        let buf = mem.buf(fit);
        let before = hits()?;
        let d = dev.clone();
        let reader = call(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: `buf` has `fit` writable records, then an inaccessible page.
            unsafe { libc::read(d.file().as_raw_fd(), buf as *mut libc::c_void, ask * REC) }
        })?;
        wait_hits(before + 1)?;
        // The reader holds 8 records it could not copy; 16 newer events fill the buffer.
        dev.inject_burst(K::Paused, 16).ctx("newer events")?;
        release(DelayPoint::ReadBeforePutBack)?;
        let n = reader.join()?;
        ensure_eq!(n, (fit * REC) as isize, "whole records before the fault");
        let first = mem.record(fit, 0).seq;
        let copied: Vec<u32> = (0..fit).map(|i| mem.record(fit, i).seq).collect();
        let want: Vec<u32> = (0..fit as u32).map(|i| first + i).collect();
        ensure_eq!(copied, want, "the copied records, in order");
        let mut rest = Vec::new();
        loop {
            match dev.read_records(64) {
                Ok(r) if !r.is_empty() => rest.extend(r),
                _ => break,
            }
        }
        let got: Vec<(u32, u16)> = rest.iter().map(|r| (r.seq, r.kind)).collect();
        // The oldest 256 records after the copied ones: the 248 first events left and the 8
        // oldest of the 16 newer ones; the 8 newest were dropped.
        let want: Vec<(u32, u16)> = (fit as u32..fit as u32 + cap as u32)
            .map(|i| {
                let kind = if (i as usize) < cap {
                    K::Started
                } else {
                    K::Paused
                };
                (first + i, kind as u16)
            })
            .collect();
        ensure_eq!(got, want, "the records left after the fault (seq, kind)");
        let s = dev.stats().ctx("stats")?;
        ensure_eq!(s.read_overruns, 8, "the 8 newest records counted as lost");
        Ok(())
    })
}

/// The windows the race tests act in: an enabled delay point holds every visit, not only the
/// first, until a release, by the point's name or by any other write to the release file; a
/// release by name turns nothing off (only `off` does). Two faulting reads, each held at the
/// put-back point: the first released by name, the second by another word.
fn a_delay_point_holds_each_visit_until_it_is_released() -> TestResult {
    with_delay_points(&[DelayPoint::ReadBeforePutBack], || {
        let dev = Arc::new(Device::open_nonblocking().ctx("open")?);
        dev.inject_burst(K::Started, 4).ctx("inject")?;
        let mem = HalfFaulting::new()?;
        for by_name in [true, false] {
            let before = hits()?;
            // Room for one record, two asked for: the second's copy faults.
            let buf = mem.buf(1);
            let d = dev.clone();
            let reader = call(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: `buf` has one writable record, then an inaccessible page.
                unsafe { libc::read(d.file().as_raw_fd(), buf as *mut libc::c_void, 2 * REC) }
            })?;
            wait_hits(before + 1)?;
            ensure!(
                !reader.returned_or_asleep_in(libc::SYS_read)?,
                "the read did not wait at the put-back point (released by name: {by_name})"
            );
            if by_name {
                release(DelayPoint::ReadBeforePutBack)?;
            } else {
                std::fs::write(crate::module_tests::RELEASE, "every point")
                    .ctx("releasing every point")?;
            }
            ensure_eq!(
                reader.join()?,
                REC as isize,
                "one whole record before the fault"
            );
        }
        Ok(())
    })
}

/// Finding 6 of the module review, a state without its event: with delivery held back, ioctls
/// fill the stream's pending queue (each waits for its delivery on a thread of its own); then
/// the timer's period finds it full and the stream goes to Xrun. Its listener must hear the
/// Xrun (the old driver dropped the event in silence: GET_STATS said Xrun, and no one heard
/// it). The ioctls may fill the queue only as far as they are allowed
/// (`uapi::PENDING_IOCTL_MAX`): an inject past that returns EAGAIN at once.
fn an_xrun_is_signalled_when_ioctls_have_filled_the_pending_queue() -> TestResult {
    crate::module_tests::with_delivery_held(|release| {
        let sig = rt(5);
        let dev = Arc::new(listen(sig)?);
        let mut waiting = Vec::new();
        // Runs an emitting ioctl on a thread: `None` while it waits for its delivery, else
        // what it returned at once.
        let mut emit = |f: Box<dyn FnOnce() -> pcmsig::Result<()> + Send>| {
            let c = call(f)?;
            if c.returned_or_asleep_in(libc::SYS_ioctl)? {
                return Ok::<_, String>(Some(c.join()?));
            }
            waiting.push(c);
            Ok(None)
        };
        let d = dev.clone();
        // One period a second: the queue is full long before the first one is due.
        let r = emit(Box::new(move || d.configure(1_000_000, 0)))?;
        ensure!(r.is_none(), "configure returned at once: {r:?}");
        let d = dev.clone();
        let r = emit(Box::new(move || d.trigger(Trigger::Start)))?;
        ensure!(r.is_none(), "start returned at once: {r:?}");
        // Bursts of 64, then of 32, ... 1, each size until one is refused: the queue as full
        // as the ioctls may make it.
        let mut injected = 0u32;
        let mut n = uapi::BURST_MAX;
        while n > 0 {
            let d = dev.clone();
            match emit(Box::new(move || d.inject_burst(K::Started, n)))? {
                None => injected += n,
                Some(Err(e)) if e.errno() == Some(libc::EAGAIN) => n /= 2,
                Some(other) => return Err(format!("an inject returned at once: {other:?}")),
            }
            ensure!(
                injected <= 2 * uapi::READ_QUEUE_LEN,
                "the queue never filled"
            );
        }
        // Configure's and start's events and the injected ones: as many as the ioctls may hold.
        ensure_eq!(
            injected + 2,
            uapi::PENDING_IOCTL_MAX,
            "events the ioctls could queue"
        );
        // A trigger past the ioctls' share fails at once and changes nothing (the stream runs,
        // or the period has come meanwhile and it is in Xrun: STOP is valid in both).
        let e = dev.trigger(Trigger::Stop).err().and_then(|e| e.errno());
        ensure_eq!(
            e,
            Some(libc::EAGAIN),
            "STOP with the ioctls' share of the queue full"
        );
        let state = pcmsig::State::from_u32(dev.stats().ctx("stats")?.state);
        ensure!(
            state != Some(pcmsig::State::Stopped),
            "a refused STOP stopped the stream"
        );
        // The period comes (a hang guard), finds the queue full: the stream is in Xrun.
        let deadline = std::time::Instant::now() + crate::runner::hang_guard();
        while pcmsig::State::from_u32(dev.stats().ctx("stats")?.state) != Some(pcmsig::State::Xrun)
        {
            ensure!(
                std::time::Instant::now() < deadline,
                "no xrun after {injected} injected events"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        release()?;
        for c in waiting {
            c.join()?.ctx("an ioctl waiting for its delivery")?;
        }
        let mut kinds = Vec::new();
        while let Some(info) =
            sys::sigtimedwait(&SignalSet::from(&[sig][..]), QUIET).ctx("sigtimedwait")?
        {
            kinds.push(pcmsig::Event::decode(&info).map(|e| e.kind));
        }
        ensure_eq!(
            kinds.last().copied().flatten(),
            Some(K::Xrun),
            "the last signal of {} ({injected} injected)",
            kinds.len()
        );
        Ok(())
    })
}

/// A listener thread that exits after delivery resolved it for a batch and before the send (the
/// window `delivery_before_send` holds open): the kernel refuses the send (the thread has no
/// signal handlers any more), and the driver counts the event as dropped because the thread
/// exited, not because its queue was full.
fn a_listener_that_exits_before_its_signal_is_sent_is_counted_exited() -> TestResult {
    with_delay_points(&[DelayPoint::DeliveryBeforeSend], || {
        let sig = rt(6);
        let dev = Arc::new(Device::open_nonblocking().ctx("open")?);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let d = dev.clone();
        let listener = std::thread::spawn(move || -> TestResult {
            sig.block().ctx("block")?;
            d.register(sig).ctx("register")?;
            let _ = ready_tx.send(sys::gettid());
            let _ = exit_rx.recv();
            Ok(())
        });
        let tid = ready_rx
            .recv()
            .map_err(|_| "the listener died".to_string())?;
        let before = hits()?;
        let d = dev.clone();
        let inject = call(move || d.inject(K::Started))?;
        // Delivery has resolved the listener and waits before sending.
        wait_hits(before + 1)?;
        let _ = exit_tx.send(());
        listener
            .join()
            .map_err(|_| "the listener panicked".to_string())??;
        // Gone: reaped, its signal handlers released.
        let task = format!("/proc/self/task/{tid}");
        let deadline = std::time::Instant::now() + crate::runner::hang_guard();
        while std::path::Path::new(&task).exists() {
            ensure!(
                std::time::Instant::now() < deadline,
                "{task} is still there"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        release(DelayPoint::DeliveryBeforeSend)?;
        inject.join()?.ctx("inject")?;
        let s = dev.stats().ctx("stats")?;
        ensure_eq!(
            (
                s.file.fired,
                s.file.delivered,
                s.file.dropped_exited,
                s.file.dropped_queue_full
            ),
            (1, 0, 1, 0),
            "fired, delivered, dropped as exited, dropped as queue full"
        );
        Ok(())
    })
}
