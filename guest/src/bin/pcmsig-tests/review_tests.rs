//! The module review's findings (issue 38): each test failed on the driver before its fix.
//!
//! Like the race tests, a test that needs a window reloads the module with a named delay point
//! (`uapi::DelayPoint`), acts inside it and releases it, deciding from state, never from time.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use pcmsig::sys::{self, SignalSet};
use pcmsig::{uapi, uapi::DelayPoint, Device, EventKind as K, Trigger};

use crate::common::*;
use crate::race_tests::{hits, release, wait_hits, with_delay_points};
use crate::runner::{Context, Test, TestResult, QUIET};
use crate::{ensure, ensure_eq};

/// The tests that keep the module as init loaded it.
pub fn tests() -> Vec<Test> {
    crate::tests![
        a_listener_whose_process_is_exiting_is_counted_exited,
        si_uid_is_the_overflow_uid_whichever_task_the_delivery_interrupts,
        a_big_delivery_moves_to_a_thread_and_back_in_order,
    ]
}

/// The tests that reload the module (with delay points): they run with the race tests.
pub fn reload_tests() -> Vec<Test> {
    crate::tests![
        a_faulting_read_keeps_the_oldest_records_when_newer_ones_filled_the_buffer,
        a_delay_point_holds_each_visit_until_it_is_released,
        an_xrun_is_signalled_when_ioctls_have_filled_the_pending_queue,
        a_listener_that_exits_before_its_signal_is_sent_is_counted_exited,
        a_listener_whose_exec_has_begun_is_counted_execd,
        a_delivery_run_offers_a_bounded_number_of_events,
        a_softirq_run_leaves_a_stream_to_its_thread_run,
        one_users_open_files_are_capped_and_other_users_can_still_open,
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
                std::fs::write(crate::modload::RELEASE, "every point")
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
    crate::modload::with_delivery_held(|release| {
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
        // As many events as the ioctls may hold wait undelivered: configure's, start's, the
        // injected ones and any the timer added meanwhile (a slow machine can take over a
        // second to fill the queue: its period, or its Xrun once the queue passed the timer's
        // limit, takes one of the ioctls' slots as it waits there). Once the queue is full,
        // the period may come before this read: its Xrun takes the timer's own last slot.
        let s = dev.stats().ctx("stats")?;
        let xrun = pcmsig::State::from_u32(s.state) == Some(pcmsig::State::Xrun);
        ensure_eq!(
            s.events,
            u64::from(injected + 2) + s.periods + u64::from(xrun),
            "events emitted: those of the ioctls, periods and Xrun ({injected} injected, {} \
             period(s) come meanwhile, Xrun: {xrun})",
            s.periods
        );
        ensure!(
            s.events == u64::from(uapi::PENDING_IOCTL_MAX)
                || (xrun && s.events == u64::from(uapi::PENDING_IOCTL_MAX) + 1),
            "{} events emitted: the ioctls' share of the queue is {}, and only an Xrun may \
             pass it",
            s.events,
            uapi::PENDING_IOCTL_MAX
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
        wait_until(
            || {
                Ok(pcmsig::State::from_u32(dev.stats().ctx("stats")?.state)
                    == Some(pcmsig::State::Xrun))
            },
            || format!("no xrun after {injected} injected events"),
        )?;
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
        // Every event heard, the Xrun once: last when the period came after the queue was
        // full, among the injected ones when a slow machine's period came while it filled.
        let xruns = kinds.iter().filter(|k| **k == Some(K::Xrun)).count();
        ensure_eq!(
            (kinds.len() as u64, xruns),
            (
                s.events + 1 - u64::from(s.state == pcmsig::State::Xrun as u32),
                1
            ),
            "signals heard and Xrun signals among them ({injected} injected)"
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

/// A child process stopped under `ptrace`, killed and reaped if the test ends early.
struct Tracee(i32);

impl Tracee {
    /// Waits for the tracee's next stop; its wait status.
    fn wait_stop(&self, what: &str) -> Result<i32, String> {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(self.0, &mut status, 0) };
        ensure!(r == self.0, "waitpid: {}", std::io::Error::last_os_error());
        ensure!(
            libc::WIFSTOPPED(status),
            "the child ended (wait status {status:#x}) instead of stopping {what}"
        );
        Ok(status)
    }

    /// A `ptrace` request on the tracee.
    fn ptrace(&self, req: libc::c_uint, data: usize, what: &str) -> TestResult {
        // SAFETY: a request on our own stopped tracee; `data` is an integer argument.
        let r = unsafe { libc::ptrace(req, self.0, 0usize, data) };
        ensure!(
            r != -1,
            "ptrace {what}: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        // Let it go on first: a tracee stopped in its exit ignores SIGKILL (its group is exiting
        // already) and would stay stopped, and `waitpid` with it.
        // SAFETY: our own child; requests on one that is not stopped, or dead, fail harmlessly.
        unsafe {
            libc::ptrace(libc::PTRACE_DETACH, self.0, 0usize, 0usize);
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// A listener whose process has begun to exit: held by its tracer at `PTRACE_EVENT_EXIT`, after
/// `do_exit` marked the thread group exiting and before its address space goes. The kernel
/// discards a signal sent to it then (`prepare_signal`) and still reports success, so the event
/// must be counted as dropped because the listener exited, not as delivered.
fn a_listener_whose_process_is_exiting_is_counted_exited() -> TestResult {
    let sig = rt(6);
    let dev = Device::open().ctx("open")?;
    let pid = spawn_child(|| {
        // SAFETY: a request about ourselves, with no pointer.
        let r = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) };
        ensure!(
            r == 0,
            "PTRACE_TRACEME: {}",
            std::io::Error::last_os_error()
        );
        sig.block().ctx("block")?;
        dev.register(sig).ctx("register")?;
        // Stopped until the tracer has set its options; then it exits (status 0).
        nix::sys::signal::raise(nix::sys::signal::SIGSTOP).ctx("SIGSTOP")
    })?;
    let tracee = Tracee(pid);
    tracee.wait_stop("at its SIGSTOP")?;
    tracee.ptrace(
        libc::PTRACE_SETOPTIONS,
        (libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL) as usize,
        "SETOPTIONS",
    )?;
    tracee.ptrace(libc::PTRACE_CONT, 0, "CONT")?;
    let status = tracee.wait_stop("at its exit")?;
    ensure_eq!(
        status >> 8,
        libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8),
        "the stop is PTRACE_EVENT_EXIT"
    );
    let mut code: libc::c_ulong = 0;
    // SAFETY: `code` is a valid place for the event message.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            pid,
            0usize,
            &mut code as *mut libc::c_ulong,
        )
    };
    ensure!(
        r == 0,
        "PTRACE_GETEVENTMSG: {}",
        std::io::Error::last_os_error()
    );
    ensure_eq!(code, 0, "the child's exit status (it registered)");
    dev.inject(K::Started).ctx("inject")?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(
        (s.file.fired, s.file.delivered, s.file.dropped_exited),
        (1, 0, 1),
        "fired, delivered, dropped as exited"
    );
    tracee.ptrace(libc::PTRACE_CONT, 0, "CONT past the exit")?;
    let pid = tracee.0;
    std::mem::forget(tracee);
    ensure_eq!(wait_child(pid)?, 0, "the child's exit code");
    Ok(())
}

/// A listener thread calls `execve` while another thread of its process is held in the driver
/// (the last close of a stream, at `last_close_before_reset`): its exec, past the point of no
/// return, waits in `de_thread` for that thread to die, with the old program still mapped. A
/// signal sent then would stay pending into the new program (pending signals and the blocked mask
/// survive exec; a handler does not, so an unblocked one would kill it), which never asked for
/// it: the driver counts the event as dropped because the listener exec'd, and the new program
/// finds nothing pending. The held thread, a listener too (on another file), is being killed
/// by that exec: its event counts as dropped because it exited.
fn a_listener_whose_exec_has_begun_is_counted_execd() -> TestResult {
    with_delay_points(&[DelayPoint::LastCloseBeforeReset], || {
        chmod_device_666()?;
        let sig = rt(6);
        // The only file of uid 2000's stream: its release is that stream's last close.
        nix::unistd::seteuid(nix::unistd::Uid::from_raw(2000)).ctx("seteuid 2000")?;
        let other = Device::open();
        nix::unistd::seteuid(nix::unistd::Uid::from_raw(0)).ctx("seteuid 0")?;
        let other = other.ctx("open as uid 2000")?;
        let dev = Device::open().ctx("open")?;
        // The closer's file: the same stream (root's), another listener.
        let dev2 = Device::open().ctx("open")?;
        let (tid_r, tid_w) = nix::unistd::pipe().ctx("pipe")?;
        // One pipe per thread that waits for the parent's word: the closer's, the exec's.
        let (close_r, close_w) = nix::unistd::pipe().ctx("pipe")?;
        let (exec_r, exec_w) = nix::unistd::pipe().ctx("pipe")?;
        let other_fd = other.file().as_raw_fd();
        let pid = spawn_child(|| {
            sig.block().ctx("block")?;
            dev.register(sig).ctx("register")?;
            let (go, tid_w) = (close_r.as_raw_fd(), tid_w.as_raw_fd());
            let dev2 = &dev2;
            // The closer (the signal blocked, as in the thread that starts it): a listener on
            // `dev2`; once the parent has closed its copy of the uid-2000 file, its close of it
            // is the file's last.
            std::thread::scope(|scope| {
                scope.spawn(move || {
                    // Its tid, or 0 if it could not register.
                    let tid = if dev2.register(sig).is_ok() {
                        sys::gettid()
                    } else {
                        0
                    };
                    let _ = put(tid_w, &tid.to_ne_bytes());
                    let _ = get(go, 1);
                    // SAFETY: closes this process's copy of the uid-2000 file, used by nothing
                    // else.
                    unsafe { libc::close(other_fd) };
                });
                // Exec once the parent says the closer is held (the scope never ends: the exec
                // replaces the program, or it fails and the child exits).
                get(exec_r.as_raw_fd(), 1)?;
                let probe = std::ffi::CString::new(format!("{EXEC_PROBE}={}", sig.number()))
                    .ctx("probe word")?;
                nix::unistd::execve(c"/proc/self/exe", &[c"pcmsig-tests"], &[probe.as_c_str()])
                    .ctx("execve")?;
                Ok(())
            })
        })?;
        drop(other);
        let mut b = [0u8; 4];
        b.copy_from_slice(&get(tid_r.as_raw_fd(), 4)?);
        let closer = i32::from_ne_bytes(b);
        ensure!(closer != 0, "the closer could not register");
        let before = hits()?;
        // Lets the closer close (now the last close), and waits until it is held there.
        put(close_w.as_raw_fd(), b"c")?;
        wait_hits(before + 1)?;
        // The exec: past its point of no return once `de_thread` has sent the closer SIGKILL.
        put(exec_w.as_raw_fd(), b"x")?;
        wait_sigkill_pending(pid, closer)?;
        dev.inject(K::Started).ctx("inject")?;
        let s = dev.stats().ctx("stats")?;
        let s2 = dev2.stats().ctx("stats of the closer's file")?;
        release(DelayPoint::LastCloseBeforeReset)?;
        let code = wait_child(pid)?;
        // Every point off for good: the last close of `dev` (ours) would wait there too.
        std::fs::write(crate::modload::RELEASE, "off").ctx("delay points off")?;
        drop((dev, dev2));
        ensure_eq!(
            (s.file.fired, s.file.delivered, s.file.dropped_execd),
            (1, 0, 1),
            "the exec'ing listener: fired, delivered, dropped as exec'd"
        );
        ensure_eq!(
            (s2.file.fired, s2.file.delivered, s2.file.dropped_exited),
            (1, 0, 1),
            "the listener the exec is killing: fired, delivered, dropped as exited"
        );
        ensure_eq!(
            code,
            0,
            "the new program's probe (3: the event's signal was pending in it)"
        );
        Ok(())
    })
}

/// Writes all of `bytes` to `fd`.
fn put(fd: i32, bytes: &[u8]) -> TestResult {
    // SAFETY: `bytes` is valid for its length.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    ensure!(
        n == bytes.len() as isize,
        "write to a pipe: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Reads exactly `n` bytes from `fd`.
fn get(fd: i32, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        // SAFETY: the rest of `buf` is valid for writing.
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), n - got) };
        ensure!(
            r > 0,
            "read from a pipe: {r} ({})",
            std::io::Error::last_os_error()
        );
        got += r as usize;
    }
    Ok(buf)
}

/// One user may hold at most `uapi::FILES_PER_USER_MAX` files open: the next `open` fails with
/// `EMFILE` (the user's stream's file list would otherwise grow until it asked the page
/// allocator for more than it may give, which warns, and panics under `panic_on_warn`), another
/// user still opens, and a close makes room again. The module says its cap in debugfs; the test
/// reaches it with the test hook's lower cap (16,384 opens and closes take minutes on the debug
/// kernel), the same check on the same path.
fn one_users_open_files_are_capped_and_other_users_can_still_open() -> TestResult {
    use nix::sys::resource::{setrlimit, Resource};
    use nix::unistd::{seteuid, Uid};
    ensure_eq!(
        debugfs_stat("files_per_user_max")?,
        u64::from(uapi::FILES_PER_USER_MAX),
        "the cap as loaded by init"
    );
    const MAX: usize = 64;
    crate::modload::with_module_params(&format!("test_files_per_user_max={MAX}"), || {
        chmod_device_666()?;
        ensure_eq!(
            debugfs_stat("files_per_user_max")?,
            MAX as u64,
            "the test cap"
        );
        let code = in_child(|| {
            let room = (MAX + 64) as u64;
            setrlimit(Resource::RLIMIT_NOFILE, room, room).ctx("RLIMIT_NOFILE")?;
            // A user of its own (a stream with no file yet); root's saved uid lets it come back.
            seteuid(Uid::from_raw(3000)).ctx("seteuid 3000")?;
            let mut files = Vec::with_capacity(MAX);
            for i in 0..MAX {
                files.push(Device::open().map_err(|e| format!("open {} of {MAX}: {e}", i + 1))?);
            }
            expect_errno(Device::open(), libc::EMFILE, "open past the cap")?;
            seteuid(Uid::from_raw(0)).ctx("seteuid 0")?;
            Device::open().ctx("root's open while uid 3000 is at its cap")?;
            seteuid(Uid::from_raw(3000)).ctx("seteuid 3000")?;
            files.pop();
            Device::open().ctx("open after a close made room")?;
            Ok(())
        })?;
        ensure_eq!(code, 0, "the capped user's child");
        Ok(())
    })
}

/// One run of the delivery work item (in softirq, other users' timers behind it) offers at most
/// `uapi::DELIVERY_RUN_MAX` events, then queues itself again: a pending queue the ioctls filled
/// while delivery was held back is delivered in several runs, every event once and in order.
/// With one file the runs stay in softirq; with [`BIG_FILES`] more, the first hands the stream
/// to the thread run, whose runs are bounded alike.
fn a_delivery_run_offers_a_bounded_number_of_events() -> TestResult {
    held_delivery_runs(0, 0)?;
    held_delivery_runs(BIG_FILES, 1)
}

/// [`a_delivery_run_offers_a_bounded_number_of_events`] with `files` open beside the
/// listener's, expecting `handoffs` hand-overs to the thread run.
fn held_delivery_runs(files: usize, handoffs: u64) -> TestResult {
    crate::modload::with_delivery_held(|release| {
        let sig = rt(6);
        sig.block().ctx("block")?;
        let dev = Arc::new(Device::open().ctx("open")?);
        dev.register(sig).ctx("register")?;
        let others = (0..files)
            .map(|_| Device::open_nonblocking())
            .collect::<Result<Vec<_>, _>>()
            .ctx("open")?;
        let total = uapi::PENDING_IOCTL_MAX;
        let mut calls = Vec::new();
        let mut left = total;
        while left > 0 {
            let n = left.min(uapi::BURST_MAX);
            left -= n;
            let d = dev.clone();
            calls.push(call(move || d.inject_burst(K::PeriodElapsed, n))?);
        }
        // Every burst emitted, none delivered: the whole queue waits for one held run.
        let emitted = format!("events {total}");
        wait_until(
            || Ok(debugfs_block(0)?.1.contains(&emitted)),
            || format!("the bursts never all emitted:\n{:?}", debugfs_block(0)),
        )?;
        release()?;
        for c in calls {
            c.join()?.ctx("inject burst")?;
        }
        let kinds = vec![K::PeriodElapsed; total as usize];
        let first = expect_kinds(sig, &kinds)?;
        let s = dev.stats().ctx("stats")?;
        ensure_eq!(s.file.delivered, u64::from(total), "delivered");
        let want: Vec<u32> = (0..total).map(|i| (first + i) & uapi::SEQ_MASK).collect();
        for (i, f) in others.iter().enumerate() {
            let got: Vec<u32> = f
                .read_records(uapi::READ_QUEUE_LEN as usize)
                .ctx("read")?
                .iter()
                .map(|r| r.seq & uapi::SEQ_MASK)
                .collect();
            ensure_eq!(got, want, "file {i}'s records");
        }
        let (text, block) = debugfs_block(0)?;
        let want = format!("delivery_run_max {}", uapi::DELIVERY_RUN_MAX);
        ensure_eq!(
            block.last(),
            Some(&want),
            "the longest run offered the bound, no more, of {total} events waiting:\n{text}"
        );
        let want = format!("delivery_handoffs {handoffs}");
        ensure!(
            block.contains(&want),
            "{} files: want {want:?} in:\n{text}",
            files + 1
        );
        Ok(())
    })
}

/// Open files of [`a_big_delivery_moves_to_a_thread_and_back_in_order`] beside its listener's:
/// one burst then needs more offers than a softirq run may make.
const BIG_FILES: usize = 16;
const _: () =
    assert!((BIG_FILES + 1) * uapi::BURST_MAX as usize > uapi::SOFTIRQ_OFFERS_MAX as usize);
/// Bursts of that test, each followed by a drain of the signals and of every file's records.
const BIG_ROUNDS: usize = 8;

/// Review finding 2: a stream whose delivery is too big for softirq (more than
/// `uapi::SOFTIRQ_OFFERS_MAX` offers, events times open files) hands it to a kernel thread, so
/// that it cannot hold up other users' deliveries on its CPU, and takes it back once nothing is
/// pending. Bursts go through the thread, while 50 ms periods come in between through softirq:
/// the listener and every file still get every event once, in order, none lost. (One file's
/// delivery staying in softirq: `a_delivery_run_offers_a_bounded_number_of_events`.)
fn a_big_delivery_moves_to_a_thread_and_back_in_order() -> TestResult {
    let sig = rt(6);
    let dev = listen(sig)?;
    let files = (0..BIG_FILES)
        .map(|_| Device::open_nonblocking())
        .collect::<Result<Vec<_>, _>>()
        .ctx("open")?;
    // 50 ms periods: a pause of the VM under 3.2 s is no stall (`uapi::STALL_PERIODS_MAX`),
    // and a round (a burst and the drain of 17 files) may take 9.6 s before the periods fill a
    // file's `read()` queue (with 5 ms periods a round on the debug kernel under load took
    // longer than 1 s, and the files lost records).
    dev.configure(50_000, 0).ctx("configure")?;
    dev.trigger(Trigger::Start).ctx("start")?;
    let mut signals: Vec<u32> = Vec::new();
    let mut records: Vec<Vec<u32>> = vec![Vec::new(); BIG_FILES];
    let drain = |signals: &mut Vec<u32>, records: &mut Vec<Vec<u32>>| -> TestResult {
        let set = SignalSet::from(&[sig][..]);
        while let Some(info) =
            sys::sigtimedwait(&set, std::time::Duration::ZERO).ctx("sigtimedwait")?
        {
            signals.push(expect_event(&info, sig)?.1);
        }
        for (f, got) in files.iter().zip(records.iter_mut()) {
            loop {
                match f.read_records(uapi::READ_QUEUE_LEN as usize) {
                    Ok(r) if r.is_empty() => break,
                    Ok(r) => got.extend(r.iter().map(|r| r.seq & uapi::SEQ_MASK)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
        }
        Ok(())
    };
    for _ in 0..BIG_ROUNDS {
        // Returns once the burst is delivered (to every file).
        dev.inject_burst(K::PeriodElapsed, uapi::BURST_MAX)
            .ctx("inject burst")?;
        drain(&mut signals, &mut records)?;
    }
    // Stop returns once its Stopped is delivered: nothing of the run is pending after it.
    dev.trigger(Trigger::Stop).ctx("stop")?;
    drain(&mut signals, &mut records)?;
    let s = dev.stats().ctx("stats")?;
    ensure_eq!(s.total.dropped_queue_full, 0, "signals dropped");
    // Prepared, Started, the bursts, the periods, Stopped: consecutive, as emitted.
    let first = *signals.first().ok_or("no signal")?;
    let want: Vec<u32> = (0..s.events as u32)
        .map(|i| (first + i) & uapi::SEQ_MASK)
        .collect();
    ensure_eq!(signals, want, "the listener's sequence numbers");
    for (i, got) in records.iter().enumerate() {
        ensure_eq!(*got, want, "file {i}'s records");
    }
    let handoffs = debugfs_stream_stat(0, "delivery_handoffs")?;
    ensure!(
        handoffs >= 1,
        "no delivery went to the thread with {} files:\n{:?}",
        BIG_FILES + 1,
        debugfs_block(0)
    );
    Ok(())
}

/// Review finding 2, the hand-over's window: while the thread run holds a batch (delay point
/// `thread_run_batch`), an event emitted meanwhile queues a softirq run, which must leave the
/// stream to the thread run (debugfs `delivery_softirq_yields`): delivering that event itself
/// would let it, and the burst's next events, overtake the held batch.
fn a_softirq_run_leaves_a_stream_to_its_thread_run() -> TestResult {
    with_delay_points(&[DelayPoint::ThreadRunBatch], || {
        let sig = rt(6);
        let dev = Arc::new(listen(sig)?);
        let _files = (0..BIG_FILES)
            .map(|_| Device::open())
            .collect::<Result<Vec<_>, _>>()
            .ctx("open")?;
        let d = dev.clone();
        let burst = call(move || d.inject_burst(K::PeriodElapsed, uapi::BURST_MAX))?;
        // The burst's first events went through softirq, the rest to the thread run, which
        // holds its first batch now.
        wait_hits(1)?;
        let d = dev.clone();
        let one = call(move || d.inject(K::Xrun))?;
        let yields = || debugfs_stream_stat(0, "delivery_softirq_yields");
        wait_until(
            || Ok(yields()? >= 1),
            || {
                format!(
                    "no softirq run left the stream to its thread run: {:?}",
                    yields()
                )
            },
        )?;
        // Every later visit passes at once.
        std::fs::write(crate::modload::RELEASE, "off").ctx("turning the delay point off")?;
        burst.join()?.ctx("inject burst")?;
        one.join()?.ctx("inject")?;
        let mut kinds = vec![K::PeriodElapsed; uapi::BURST_MAX as usize];
        kinds.push(K::Xrun);
        expect_kinds(sig, &kinds)?;
        Ok(())
    })
}

/// Periods of each stream in the `si_uid` test: enough timer interrupts to land on the busy
/// container threads many times.
const UID_PERIODS: u32 = 200;

/// Receives the run of `sig` (blocked, registered, started) up to its end (Stopped, or Xrun if a
/// loaded machine stalled its timer) and returns how many events carried each `si_uid`.
fn uids_of_a_run(sig: pcmsig::Signal) -> Result<std::collections::BTreeMap<u32, u32>, String> {
    let mut seen = std::collections::BTreeMap::new();
    loop {
        let info = recv(&[sig])?;
        let (kind, _) = expect_event(&info, sig)?;
        *seen.entry(info.uid).or_insert(0) += 1;
        if matches!(kind, K::Stopped | K::Xrun) {
            return Ok(seen);
        }
    }
}

/// What a listener reads in `si_uid` must not depend on which task the delivery (in softirq)
/// happened to interrupt: it is the overflow uid, for a listener in the initial user namespace
/// and for one in a container's, while the container's threads keep both CPUs busy so that the
/// timers' interrupts land on them. Sending 0, the driver let the initial namespace's listener
/// read 1000 (what the container's root maps to) whenever a container thread was interrupted,
/// and 0 otherwise; and the container's listener read 0 or 65534 by the same chance.
fn si_uid_is_the_overflow_uid_whichever_task_the_delivery_interrupts() -> TestResult {
    let overflow: u32 = std::fs::read_to_string("/proc/sys/kernel/overflowuid")
        .ctx("overflowuid")?
        .trim()
        .parse()
        .map_err(|e| format!("overflowuid: {e}"))?;
    chmod_device_666()?;
    let sig = rt(6);
    sig.block().ctx("block")?;
    let (ready_r, ready_w) = nix::unistd::pipe().ctx("pipe")?;
    let (done_r, done_w) = nix::unistd::pipe().ctx("pipe")?;
    let child = spawn_child(|| {
        enter_user_namespace_as(1000)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hogs: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let dev = listen(sig)?;
        put(ready_w.as_raw_fd(), b"r")?;
        dev.configure(1000, UID_PERIODS).ctx("configure")?;
        dev.trigger(Trigger::Start).ctx("start")?;
        let seen = uids_of_a_run(sig);
        // The container's threads spin until the parent's run is over too.
        let _ = get(done_r.as_raw_fd(), 1);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hogs.into_iter().for_each(|h| {
            let _ = h.join();
        });
        let seen = seen?;
        ensure!(
            seen.keys().all(|&u| u == overflow),
            "the container's listener read si_uid (value: events) {seen:?}, not {overflow}"
        );
        Ok(())
    })?;
    let ours = (|| {
        get(ready_r.as_raw_fd(), 1)?;
        let _dev = listen_to_stream(sig, 1000, UID_PERIODS)?;
        uids_of_a_run(sig)
    })();
    let _ = put(done_w.as_raw_fd(), b"d");
    let code = wait_child(child)?;
    let ours = ours?;
    ensure!(
        ours.keys().all(|&u| u == overflow),
        "the initial namespace's listener read si_uid (value: events) {ours:?}, not {overflow}"
    );
    ensure_eq!(code, 0, "the container's child");
    Ok(())
}
