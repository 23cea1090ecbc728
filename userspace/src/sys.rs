//! The few signal calls `nix` lacks for real-time signals, wrapped once.
//!
//! nix's `Signal` enum has no real-time signals, so its `SigSet::add` and `SigSet::wait` cannot
//! express them (`wait` panics on one). This module wraps `libc` for `SIGRTMIN()`, signal sets,
//! `pthread_sigmask`, `sigwaitinfo`, `sigtimedwait` and `sigqueue`.

use std::io;
use std::time::Duration;

/// glibc's first usable real-time signal (34 on glibc: it keeps 32 and 33 for itself).
///
/// ```
/// assert!(pcmsig::sys::sigrtmin() >= 32);
/// ```
pub fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

/// glibc's last real-time signal (64 on x86).
pub fn sigrtmax() -> i32 {
    libc::SIGRTMAX()
}

/// A set of signals that may hold real-time signals.
///
/// ```
/// let set = pcmsig::sys::SignalSet::of(&[pcmsig::sys::sigrtmin()]);
/// assert!(set.contains(pcmsig::sys::sigrtmin()));
/// ```
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The empty set.
    pub fn empty() -> Self {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the whole set it is given.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            SignalSet(set.assume_init())
        }
    }

    /// A set of the given signal numbers (invalid numbers are ignored).
    pub fn of(signals: &[i32]) -> Self {
        let mut s = Self::empty();
        for &sig in signals {
            s.add(sig);
        }
        s
    }

    /// Adds `sig`.
    pub fn add(&mut self, sig: i32) {
        // SAFETY: `self.0` is an initialised set; sigaddset rejects invalid numbers with EINVAL.
        unsafe { libc::sigaddset(&mut self.0, sig) };
    }

    /// Whether `sig` is in the set.
    pub fn contains(&self, sig: i32) -> bool {
        // SAFETY: `self.0` is an initialised set.
        unsafe { libc::sigismember(&self.0, sig) == 1 }
    }

    /// The raw set.
    pub fn as_raw(&self) -> &libc::sigset_t {
        &self.0
    }

    /// The same set as nix's type (for `SignalFd`).
    pub fn to_nix(self) -> nix::sys::signal::SigSet {
        // SAFETY: `self.0` was initialised by sigemptyset/sigaddset.
        unsafe { nix::sys::signal::SigSet::from_sigset_t_unchecked(self.0) }
    }

    /// Blocks the set in the calling thread; returns the previous mask.
    pub fn block(&self) -> io::Result<SignalSet> {
        self.mask(libc::SIG_BLOCK)
    }

    /// Unblocks the set in the calling thread; returns the previous mask.
    pub fn unblock(&self) -> io::Result<SignalSet> {
        self.mask(libc::SIG_UNBLOCK)
    }

    fn mask(&self, how: i32) -> io::Result<SignalSet> {
        let mut old = SignalSet::empty();
        // SAFETY: both sets are valid; pthread_sigmask only affects the calling thread.
        let r = unsafe { libc::pthread_sigmask(how, &self.0, &mut old.0) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(old)
    }

    /// The signals pending for the calling thread or its process.
    pub fn pending() -> io::Result<SignalSet> {
        let mut s = SignalSet::empty();
        // SAFETY: `s.0` is a valid set to write into.
        if unsafe { libc::sigpending(&mut s.0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// The fields of a `siginfo_t` that pcmsig uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigInfo {
    /// Signal number.
    pub signo: i32,
    /// `si_code` (`SI_QUEUE` = -1 for pcmsig and `sigqueue`).
    pub code: i32,
    /// `si_int` (the payload).
    pub value: i32,
    /// `si_pid` of the sender (0 for the kernel; [`crate::HandlerReceiver`] does not carry it: 0).
    pub pid: i32,
    /// `si_uid`: the sender's real uid (the overflow uid, 65534, for pcmsig's signals; 0 from
    /// [`crate::HandlerReceiver`], which does not carry it).
    pub uid: u32,
}

impl SigInfo {
    /// Reads the fields from a raw `siginfo_t`.
    ///
    /// # Safety
    ///
    /// `info` must have been filled in by the kernel for a queued signal (`si_value` valid).
    pub unsafe fn from_raw(info: &libc::siginfo_t) -> Self {
        // SAFETY: The caller guarantees that the union holds the `_rt` member.
        let (value, pid, uid) = unsafe {
            (
                info.si_value().sival_ptr as usize as i32,
                info.si_pid(),
                info.si_uid(),
            )
        };
        SigInfo {
            signo: info.si_signo,
            code: info.si_code,
            value,
            pid,
            uid,
        }
    }
}

/// `sigwaitinfo` on `set`, retried on `EINTR` (a signal outside `set` ran a handler).
pub fn sigwaitinfo(set: &SignalSet) -> io::Result<SigInfo> {
    loop {
        // SAFETY: zeroed siginfo is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is initialised and `info` is writable.
        let r = unsafe { libc::sigwaitinfo(set.as_raw(), &mut info) };
        if r >= 0 {
            // SAFETY: the kernel filled `info` for the signal it returned.
            return Ok(unsafe { SigInfo::from_raw(&info) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `sigtimedwait` on `set`: `Ok(None)` when `timeout` passes (`EAGAIN`). On `EINTR` it retries
/// with the full timeout again (the wait may then last longer than `timeout` in all).
pub fn sigtimedwait(set: &SignalSet, timeout: Duration) -> io::Result<Option<SigInfo>> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    loop {
        // SAFETY: zeroed siginfo is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: all pointers are valid for the call.
        let r = unsafe { libc::sigtimedwait(set.as_raw(), &mut info, &ts) };
        if r >= 0 {
            // SAFETY: the kernel filled `info` for the signal it returned.
            return Ok(Some(unsafe { SigInfo::from_raw(&info) }));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// `sigqueue(pid, sig, value)`: queues `sig` with `si_int = value` to process `pid`.
pub fn sigqueue(pid: i32, sig: i32, value: i32) -> io::Result<()> {
    let sv = libc::sigval {
        sival_ptr: value as isize as *mut libc::c_void,
    };
    // SAFETY: plain system call with valid arguments.
    if unsafe { libc::sigqueue(pid, sig, sv) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the module's event timestamps.
pub fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Signal;

    /// Installs a handler that does nothing for `signo`, without `SA_RESTART`: the signal then
    /// makes a blocking call fail with `EINTR`. Each test uses a signal no other test uses.
    pub(crate) fn interrupt_with(signo: i32) {
        extern "C" fn nothing(_: i32) {}
        // SAFETY: a valid handler that does nothing, for a signal only the caller uses.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as *const () as usize;
            assert_eq!(libc::sigaction(signo, &sa, std::ptr::null_mut()), 0);
        }
    }

    #[test]
    fn sigwaitinfo_goes_on_waiting_when_a_handled_signal_interrupts_it() {
        interrupt_with(libc::SIGWINCH);
        let sig = Signal::rtmin(12);
        sig.block().unwrap();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        let poker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: `me` waits in sigwaitinfo until we are joined.
            let winch = unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGWINCH) };
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: as above; a thread-directed real-time signal with a plain value.
            let queued = unsafe {
                libc::pthread_sigqueue(
                    me as libc::pthread_t,
                    sig.number(),
                    libc::sigval {
                        sival_ptr: 7 as *mut libc::c_void,
                    },
                )
            };
            (winch, queued)
        });
        let got = sigwaitinfo(&SignalSet::from(&[sig][..]));
        assert_eq!(poker.join().unwrap(), (0, 0));
        let got = got.expect("the interrupted wait went on");
        assert_eq!((got.signo, got.value), (sig.number(), 7));
    }
}
