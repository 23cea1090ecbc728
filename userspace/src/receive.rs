//! Three ways to receive pcmsig events.
//!
//! | type | how | fits | `EINTR` |
//! |---|---|---|---|
//! | [`WaitReceiver`] | signal blocked, `sigwaitinfo`/`sigtimedwait` | a dedicated thread | retried |
//! | [`FdReceiver`] | signal blocked, a signalfd | poll/epoll/mio event loops | retried |
//! | [`HandlerReceiver`] | `SA_SIGINFO` handler writes to a pipe | programs that cannot block the signal | retried; `SA_RESTART` is a choice |
//!
//! Delivery is thread-directed: the thread that called [`crate::Device::register`] gets the
//! signal. With the first two, that thread must have the signal blocked (or the default action,
//! termination, applies) and must be the one that waits (a signalfd reads the signals pending for
//! the thread that reads it).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::sys::{self, SigInfo, SignalSet};
use crate::Signal;

/// Signals (or records) taken per system call at most by the batch receivers
/// (`try_recv_many`, `recv_many`): the size of their stack buffers.
pub const BATCH: usize = 64;

/// Which of the three receivers: the CLI's `--mode` and the benchmark's signal paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// [`WaitReceiver`].
    Wait,
    /// [`FdReceiver`].
    Signalfd,
    /// [`HandlerReceiver`].
    Handler,
}

impl Mode {
    /// Every mode, in the order the docs list them.
    pub const ALL: [Mode; 3] = [Mode::Wait, Mode::Signalfd, Mode::Handler];

    /// The name `--mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Wait => "wait",
            Mode::Signalfd => "signalfd",
            Mode::Handler => "handler",
        }
    }

    /// The benchmark's name of the path (`pcmsig_contract::bench::PATHS`).
    pub fn bench_name(self) -> &'static str {
        match self {
            Mode::Wait => "sigwaitinfo",
            Mode::Signalfd => "signalfd+epoll",
            Mode::Handler => "handler",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s || m.bench_name() == s)
            .ok_or_else(|| format!("mode {s:?}: use wait, signalfd or handler"))
    }
}

/// Any of the three receivers, chosen at run time.
pub enum Receiver {
    /// `sigwaitinfo`/`sigtimedwait`.
    Wait(WaitReceiver),
    /// A signalfd.
    Fd(FdReceiver),
    /// An `SA_SIGINFO` handler's pipe.
    Handler(HandlerReceiver),
}

impl Receiver {
    /// Sets up `mode` for `signals` in the calling thread (the handler with `SA_RESTART`).
    pub fn new(mode: Mode, signals: &[Signal]) -> io::Result<Receiver> {
        Ok(match mode {
            Mode::Wait => Receiver::Wait(WaitReceiver::new(signals)?),
            Mode::Signalfd => Receiver::Fd(FdReceiver::new(signals)?),
            Mode::Handler => Receiver::Handler(HandlerReceiver::install(signals, true)?),
        })
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<Option<SigInfo>> {
        match self {
            Receiver::Wait(r) => r.recv_timeout(timeout),
            Receiver::Fd(r) => r.recv_timeout(timeout),
            Receiver::Handler(r) => r.recv_timeout(timeout),
        }
    }
}

/// Synchronous receipt: blocks the signals in the calling thread and waits for them.
///
/// ```no_run
/// use pcmsig::{Device, Signal, WaitReceiver};
/// let rx = WaitReceiver::new(&[Signal::rtmin(0)])?;
/// let dev = Device::open()?;
/// dev.register(Signal::rtmin(0))?;
/// let info = rx.recv_timeout(std::time::Duration::from_secs(1))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WaitReceiver {
    set: SignalSet,
}

impl WaitReceiver {
    /// Blocks `signals` in the calling thread.
    pub fn new(signals: &[Signal]) -> io::Result<Self> {
        let set = SignalSet::from(signals);
        set.block()?;
        Ok(WaitReceiver { set })
    }

    /// Waits for the next signal (`sigwaitinfo`, retried on `EINTR`).
    pub fn recv(&self) -> io::Result<SigInfo> {
        sys::sigwaitinfo(&self.set)
    }

    /// Waits at most `timeout` (`sigtimedwait`); `Ok(None)` on timeout.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<Option<SigInfo>> {
        sys::sigtimedwait(&self.set, timeout)
    }
}

/// Receipt through a signalfd: blocks the signals in the calling thread and reads them from a
/// pollable, non-blocking file descriptor.
///
/// ```no_run
/// use pcmsig::{FdReceiver, Signal};
/// let rx = FdReceiver::new(&[Signal::rtmin(1)])?;
/// // register rx.as_fd() with epoll/mio; when readable:
/// while let Some(info) = rx.try_recv()? { println!("{}", info.value); }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct FdReceiver {
    fd: SignalFd,
}

impl FdReceiver {
    /// Blocks `signals` in the calling thread and opens a signalfd for them.
    pub fn new(signals: &[Signal]) -> io::Result<Self> {
        let set = SignalSet::from(signals);
        set.block()?;
        let fd = SignalFd::with_flags(
            &set.to_nix(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        Ok(FdReceiver { fd })
    }

    /// Reads one signal if one is pending.
    pub fn try_recv(&self) -> io::Result<Option<SigInfo>> {
        let mut one = Vec::with_capacity(1);
        self.try_recv_many(&mut one, 1)?;
        Ok(one.pop())
    }

    /// Appends every pending signal, up to `max`, to `out` with one `read(2)` of the signalfd;
    /// returns how many (0: none pending).
    pub fn try_recv_many(&self, out: &mut Vec<SigInfo>, max: usize) -> io::Result<usize> {
        // SAFETY: `signalfd_siginfo` is plain integers; all-zero is valid.
        let mut buf: [libc::signalfd_siginfo; BATCH] = unsafe { std::mem::zeroed() };
        let want = max.min(BATCH);
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: `buf` holds `BATCH >= want` records of `size` bytes.
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), want * size) };
            if n >= 0 {
                let got = n as usize / size;
                out.extend(buf.iter().take(got).map(|s| SigInfo {
                    signo: s.ssi_signo as i32,
                    code: s.ssi_code,
                    value: s.ssi_int,
                    pid: s.ssi_pid as i32,
                    uid: s.ssi_uid,
                }));
                return Ok(got);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// Polls for at most `timeout`, then reads one signal.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<Option<SigInfo>> {
        if let Some(s) = self.try_recv()? {
            return Ok(Some(s));
        }
        if !poll_readable(self.fd.as_fd(), timeout)? {
            return Ok(None);
        }
        self.try_recv()
    }
}

impl AsFd for FdReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Waits until `fd` is readable; `false` on timeout. Retries on `EINTR` with the full timeout.
fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Write end of the handler's pipe (-1: none). A static because a signal handler has no context.
static PIPE_WR: AtomicI32 = AtomicI32::new(-1);
/// Events the handler could not hand off because the pipe was full.
static HANDLER_OVERFLOWS: AtomicU64 = AtomicU64::new(0);

/// Size of one record in the handler's pipe: signo, code, value.
const REC: usize = 12;

/// The SA_SIGINFO handler: copies three integers into a pipe with one `write(2)` and returns.
///
/// It may do nothing more: a handler interrupts the thread at an arbitrary instruction, perhaps
/// inside `malloc` or holding a lock, so it may only call async-signal-safe functions
/// (signal-safety(7)); `write(2)` is one, allocation, locks and `println!` are not. `errno` is
/// saved and restored so the interrupted code does not see ours.
extern "C" fn on_signal(signo: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    let saved = unsafe { *libc::__errno_location() };
    let fd = PIPE_WR.load(Ordering::Relaxed);
    if fd >= 0 && !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let (code, value) = unsafe {
            (
                (*info).si_code,
                (*info).si_value().sival_ptr as usize as i32,
            )
        };
        let mut rec = [0u8; REC];
        rec[0..4].copy_from_slice(&signo.to_ne_bytes());
        rec[4..8].copy_from_slice(&code.to_ne_bytes());
        rec[8..12].copy_from_slice(&value.to_ne_bytes());
        // SAFETY: write(2) is async-signal-safe; a pipe write of <= PIPE_BUF bytes is atomic.
        let n = unsafe { libc::write(fd, rec.as_ptr().cast(), REC) };
        if n != REC as isize {
            HANDLER_OVERFLOWS.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Receipt through an `SA_SIGINFO` handler that hands each event to a normal thread through a
/// pipe: the blog's design, made correct. One per process (the handler is process-wide).
///
/// The registering thread must have the signals *unblocked* (the handler runs on it); any thread
/// may call [`HandlerReceiver::recv_timeout`].
///
/// With `restart = true` the handler is installed with `SA_RESTART`, so that blocking calls the
/// signal interrupts (a `read()` of the device, for instance) restart instead of failing with
/// `EINTR`; with `false` they fail with `EINTR` and the caller decides.
pub struct HandlerReceiver {
    rd: OwnedFd,
    /// The dispositions we replaced, restored on drop.
    old: Vec<(i32, libc::sigaction)>,
}

impl HandlerReceiver {
    /// Installs the handler for `signals` and unblocks them in the calling thread.
    pub fn install(signals: &[Signal], restart: bool) -> io::Result<Self> {
        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(io::Error::from)?;
        let old = PIPE_WR.swap(wr.as_raw_fd(), Ordering::SeqCst);
        if old >= 0 {
            PIPE_WR.store(old, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a HandlerReceiver is already installed",
            ));
        }
        std::mem::forget(wr); // owned by PIPE_WR until Drop
        let mut old = Vec::new();
        for s in signals {
            // SAFETY: a zeroed sigaction is valid; we fill handler, flags and an empty mask.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | if restart { libc::SA_RESTART } else { 0 };
            // SAFETY: sa_mask is a valid sigset to initialise.
            unsafe { libc::sigemptyset(&mut sa.sa_mask) };
            // SAFETY: a zeroed sigaction is a valid out-parameter.
            let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: valid signal number and sigactions.
            if unsafe { libc::sigaction(s.number(), &sa, &mut prev) } != 0 {
                return Err(io::Error::last_os_error());
            }
            old.push((s.number(), prev));
        }
        let rx = HandlerReceiver { rd, old };
        SignalSet::from(signals).unblock()?;
        Ok(rx)
    }

    /// Events the handler dropped because the pipe was full.
    pub fn overflows() -> u64 {
        HANDLER_OVERFLOWS.load(Ordering::Relaxed)
    }

    /// Appends every handed-off event, up to `max`, to `out` with one `read(2)` of the pipe,
    /// waiting at most `timeout` for the first; returns how many (0: none within `timeout`).
    pub fn recv_many(
        &self,
        out: &mut Vec<SigInfo>,
        max: usize,
        timeout: Duration,
    ) -> io::Result<usize> {
        let mut buf = [[0u8; REC]; BATCH];
        // Room for `max` whole records, at most the buffer's.
        let room = &mut buf[..max.clamp(1, BATCH)];
        let want = std::mem::size_of_val(room);
        loop {
            // SAFETY: reading at most `want` bytes, the size of `room`, into it.
            let n = unsafe { libc::read(self.rd.as_raw_fd(), room.as_mut_ptr().cast(), want) };
            if n > 0 {
                // The handler writes whole records atomically (<= PIPE_BUF) and we ask for a
                // multiple of REC, so a read returns whole records.
                let n = n as usize;
                if n % REC != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "partial record from the handler pipe",
                    ));
                }
                out.extend(room[..n / REC].iter().map(|rec| {
                    let at =
                        |i: usize| i32::from_ne_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
                    SigInfo {
                        signo: at(0),
                        code: at(4),
                        value: at(8),
                        pid: 0,
                        uid: 0,
                    }
                }));
                return Ok(n / REC);
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the handler pipe was closed",
                ));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    if !poll_readable(self.rd.as_fd(), timeout)? {
                        return Ok(0);
                    }
                }
                _ => return Err(e),
            }
        }
    }

    /// Takes the next handed-off event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<Option<SigInfo>> {
        let mut one = Vec::with_capacity(1);
        self.recv_many(&mut one, 1, timeout)?;
        Ok(one.pop())
    }
}

impl Drop for HandlerReceiver {
    fn drop(&mut self) {
        for (signo, prev) in &self.old {
            // SAFETY: `prev` is the disposition sigaction returned for this signal.
            unsafe { libc::sigaction(*signo, prev, std::ptr::null_mut()) };
        }
        let wr = PIPE_WR.swap(-1, Ordering::SeqCst);
        if wr >= 0 {
            // SAFETY: we own this descriptor (forgotten in `install`).
            unsafe { libc::close(wr) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues `sig` with `value` to `thread` (thread-directed: no other test thread gets it).
    fn queue_to(thread: libc::pthread_t, sig: Signal, value: usize) -> i32 {
        // SAFETY: a live thread of this process, a valid signal, a plain integer value.
        unsafe {
            libc::pthread_sigqueue(
                thread,
                sig.number(),
                libc::sigval {
                    sival_ptr: value as *mut libc::c_void,
                },
            )
        }
    }

    #[test]
    fn the_bench_names_are_the_contracts_paths() {
        let names: Vec<&str> = Mode::ALL.iter().map(|m| m.bench_name()).collect();
        let paths: Vec<&str> = pcmsig_contract::bench::signal_paths().collect();
        assert_eq!(names, paths);
    }

    #[test]
    fn recv_timeout_returns_a_signal_that_comes_while_it_waits_and_waits_its_time() {
        let sig = Signal::rtmin(8);
        sig.block().unwrap();
        let rx = FdReceiver::new(&[sig]).unwrap();
        // Nothing comes: it waits its whole time (poll never ends early without a cause).
        let t = std::time::Instant::now();
        assert_eq!(rx.recv_timeout(Duration::from_millis(200)).unwrap(), None);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        // One comes from another thread while it waits.
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // `me` is the waiting thread, alive until it joins us.
            queue_to(me as libc::pthread_t, sig, 9)
        });
        let got = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(sender.join().unwrap(), 0);
        assert_eq!(got.map(|i| i.value), Some(9));
    }

    #[test]
    fn a_handled_signal_does_not_end_recv_timeouts_wait_with_an_error() {
        // SIGURG's handler makes poll(2) fail with EINTR.
        crate::sys::tests::interrupt_with(libc::SIGURG);
        let sig = Signal::rtmin(9);
        sig.block().unwrap();
        let rx = FdReceiver::new(&[sig]).unwrap();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        let poker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: `me` waits in recv_timeout until we are joined.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGURG) }
        });
        let t = std::time::Instant::now();
        let got = rx.recv_timeout(Duration::from_millis(300));
        assert_eq!(poker.join().unwrap(), 0);
        assert_eq!(
            got.unwrap(),
            None,
            "an interrupted wait goes on, then times out"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn the_handler_hands_each_signal_over_and_an_empty_wait_times_out() {
        // The only test that installs the handler (one per process).
        let sig = Signal::rtmin(10);
        sig.block().unwrap();
        let rx = HandlerReceiver::install(&[sig], true).unwrap();
        let mut got = Vec::new();
        // Nothing yet: the wait ends with its timeout, not in a blocked read.
        assert_eq!(
            rx.recv_many(&mut got, 4, Duration::from_millis(100))
                .unwrap(),
            0
        );
        // The handler runs in this thread when the signals are queued to it (unblocked now).
        for v in 1..=3 {
            // SAFETY: pthread_self has no preconditions.
            assert_eq!(
                queue_to(unsafe { libc::pthread_self() }, sig, v as usize),
                0
            );
        }
        assert_eq!(
            rx.recv_many(&mut got, 8, Duration::from_secs(30)).unwrap(),
            3
        );
        let seen: Vec<(i32, i32, i32)> = got.iter().map(|i| (i.signo, i.code, i.value)).collect();
        let want: Vec<(i32, i32, i32)> = (1..=3).map(|v| (sig.number(), -1, v)).collect();
        assert_eq!(seen, want, "signal, SI_QUEUE, value, in order");
        // More than one read's worth: `max` bounds each call (0 counts as 1, more than BATCH as
        // BATCH), and nothing is lost or reordered between calls.
        let n = BATCH + 5;
        for v in 0..n {
            // SAFETY: pthread_self has no preconditions.
            assert_eq!(queue_to(unsafe { libc::pthread_self() }, sig, v), 0);
        }
        got.clear();
        let wait = Duration::from_secs(30);
        assert_eq!(rx.recv_many(&mut got, 0, wait).unwrap(), 1);
        assert_eq!(rx.recv_many(&mut got, 2, wait).unwrap(), 2);
        assert_eq!(rx.recv_many(&mut got, BATCH + 1, wait).unwrap(), BATCH);
        assert_eq!(rx.recv_many(&mut got, BATCH, wait).unwrap(), 2);
        let values: Vec<usize> = got.iter().map(|i| i.value as usize).collect();
        assert_eq!(values, (0..n).collect::<Vec<_>>());
        assert_eq!(HandlerReceiver::overflows(), 0);
        // More than the pipe holds (64 KiB: about 5,400 records): the handler cannot wait, so
        // it counts each record it could not write, and every event is either read or counted.
        let flood = 8000;
        for v in 0..flood {
            // SAFETY: pthread_self has no preconditions.
            assert_eq!(queue_to(unsafe { libc::pthread_self() }, sig, v), 0);
        }
        got.clear();
        while rx
            .recv_many(&mut got, BATCH, Duration::from_millis(10))
            .unwrap()
            > 0
        {}
        let overflowed = HandlerReceiver::overflows();
        assert!(overflowed > 0, "the pipe never filled");
        assert_eq!(got.len() as u64 + overflowed, flood as u64);
        // One at a time: recv_timeout gives the next event, then None once its wait is over.
        // SAFETY: pthread_self has no preconditions.
        assert_eq!(queue_to(unsafe { libc::pthread_self() }, sig, 77), 0);
        let one = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(one.map(|i| (i.signo, i.value)), Some((sig.number(), 77)));
        assert_eq!(rx.recv_timeout(Duration::from_millis(50)).unwrap(), None);
        // A second receiver while one is installed: refused.
        assert_eq!(
            HandlerReceiver::install(&[Signal::rtmin(11)], false)
                .err()
                .map(|e| e.kind()),
            Some(io::ErrorKind::AlreadyExists)
        );
        // Dropped: the disposition it replaced (the default) is back, its pipe's write end is
        // closed, and a new receiver may be installed.
        let disposition = |s: Signal| {
            // SAFETY: a zeroed sigaction is a valid out-parameter; a query changes nothing.
            let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: a valid signal number; a null new action only queries.
            assert_eq!(
                unsafe { libc::sigaction(s.number(), std::ptr::null(), &mut now) },
                0
            );
            now.sa_sigaction
        };
        assert_eq!(disposition(sig), on_signal as *const () as usize);
        // The pipe's write end closed under a waiting receiver (short of a bug elsewhere
        // closing the descriptor, it cannot be): an error, not "nothing within the timeout".
        let wr = PIPE_WR.swap(-1, Ordering::SeqCst);
        // SAFETY: `wr` is the write end `install` forgot; with PIPE_WR at -1 nothing else
        // (the handler, Drop) uses or closes it.
        unsafe { libc::close(wr) };
        let closed = rx
            .recv_many(&mut got, 1, Duration::from_secs(30))
            .unwrap_err();
        assert_eq!(closed.kind(), io::ErrorKind::UnexpectedEof);
        let rd = rx.rd.try_clone().unwrap();
        drop(rx);
        assert_eq!(disposition(sig), libc::SIG_DFL);
        let mut b = [0u8; 1];
        // SAFETY: reads at most one byte into `b`.
        let n = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        assert_eq!(n, 0, "end of file: the write end is closed");
        let again = HandlerReceiver::install(&[sig], false).unwrap();
        assert_eq!(disposition(sig), on_signal as *const () as usize);
        drop(again);
        sig.block().unwrap();
    }

    #[test]
    fn try_recv_many_takes_every_pending_signal_in_one_call() {
        // Thread-directed, to this test's thread only (a process-directed real-time signal
        // could reach another test thread, where its default action ends the process).
        let sig = Signal::rtmin(7);
        sig.block().unwrap();
        let rx = FdReceiver::new(&[sig]).unwrap();
        for v in 0..5 {
            // SAFETY: pthread_self has no preconditions.
            assert_eq!(
                queue_to(unsafe { libc::pthread_self() }, sig, v as usize),
                0
            );
        }
        let mut got = Vec::new();
        assert_eq!(rx.try_recv_many(&mut got, 16).unwrap(), 5);
        let values: Vec<i32> = got.iter().map(|i| i.value).collect();
        assert_eq!(values, [0, 1, 2, 3, 4]);
        assert_eq!(rx.try_recv_many(&mut got, 16).unwrap(), 0);
    }
}
