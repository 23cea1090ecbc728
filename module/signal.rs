// SPDX-License-Identifier: GPL-2.0
//! Thread-directed, queued signals to a thread held by a counted `struct pid` reference.
//!
//! The kernel crate has no wrapper for `struct pid` references or for sending a signal with a
//! payload, so this file provides one, kept apart from the driver so that it could be upstreamed.
//!
//! Why a `struct pid` and not a `task_struct` pointer: a cached task pointer dangles once the thread
//! exits and is reaped. A counted pid reference stays valid; the task behind it is looked up under
//! RCU at send time and is simply absent once the thread is gone.

use core::ptr::NonNull;
use kernel::{bindings, prelude::*, sync::rcu, task::Task};

/// `CAP_KILL` from `include/uapi/linux/capability.h`.
const CAP_KILL: u32 = 5;

/// Credentials of the opener of a file, recorded when it opened and checked at every send, as the
/// kernel does for `F_SETOWN` (`sigio_perm` in `fs/fcntl.c`).
#[derive(Clone, Copy)]
pub(crate) struct SenderCred {
    uid: u32,
    euid: u32,
    cap_kill: bool,
}

impl SenderCred {
    /// Records the credentials a file was opened with.
    pub(crate) fn of_file(file: &kernel::fs::File) -> Self {
        let cred = file.cred().as_ptr();
        // SAFETY: `File::cred` returns the file's credentials, which live as long as the file;
        // `f_cred` is immutable after open, so plain reads of its fields are race-free.
        let (uid, euid, caps) = unsafe { ((*cred).uid.val, (*cred).euid.val, (*cred).cap_effective.val) };
        Self {
            uid,
            euid,
            cap_kill: caps & (1u64 << CAP_KILL) != 0,
        }
    }

    /// Whether these credentials may signal a thread whose real credentials are `cred`.
    ///
    /// # Safety
    ///
    /// `cred` must point to a valid `struct cred` (e.g. read under RCU from a live task).
    unsafe fn may_signal(&self, cred: *const bindings::cred) -> bool {
        // SAFETY: The caller guarantees `cred` is valid; ids of a published cred never change.
        let (uid, suid) = unsafe { ((*cred).uid.val, (*cred).suid.val) };
        self.cap_kill
            || self.euid == 0
            || self.euid == suid
            || self.euid == uid
            || self.uid == suid
            || self.uid == uid
    }

    /// Whether these credentials may signal the calling thread.
    pub(crate) fn may_signal_current(&self) -> bool {
        let task = Task::current_raw();
        // SAFETY: `current` is alive while it runs this code and its `real_cred` is valid for
        // as long as the task is; only the task itself replaces it, and it is busy here.
        unsafe { self.may_signal((*task).real_cred) }
    }
}

/// What became of one signal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Outcome {
    /// The kernel accepted it (queued, or merged into an already pending standard signal).
    Delivered,
    /// `-EAGAIN`: the target's user reached `RLIMIT_SIGPENDING`; nothing was queued.
    QueueFull,
    /// The thread has exited (or is exiting).
    Exited,
    /// The thread has called `execve` since it registered.
    Execd,
    /// The opener's credentials no longer allow signalling the thread.
    NotPermitted,
}

/// A counted reference to the `struct pid` of one thread, with the thread's exec id at the time
/// the reference was taken.
///
/// # Invariants
///
/// `pid` holds a reference taken with `get_task_pid`, released exactly once in `Drop`.
pub(crate) struct ThreadRef {
    pid: NonNull<bindings::pid>,
    exec_id: u64,
}

// SAFETY: A `struct pid` reference may be used and released from any thread and context.
unsafe impl Send for ThreadRef {}
// SAFETY: All methods take `&self` and only read the pid, which is safe concurrently.
unsafe impl Sync for ThreadRef {}

impl ThreadRef {
    /// A reference to the calling thread (not its thread group: delivery is thread-directed).
    pub(crate) fn current() -> Result<Self> {
        let task = Task::current_raw();
        // SAFETY: `current` is a valid task for the duration of this call; `get_task_pid` takes
        // its own reference on the pid, which `Drop` releases.
        let pid = unsafe { bindings::get_task_pid(task, bindings::pid_type_PIDTYPE_PID) };
        let pid = NonNull::new(pid).ok_or(ESRCH)?;
        // SAFETY: `current` is alive; `self_exec_id` is only written by the task itself during
        // `execve`, and it is running this code instead.
        let exec_id = unsafe { (*task).self_exec_id };
        Ok(Self { pid, exec_id })
    }

    /// Sends `signo` with `si_code = SI_QUEUE` and `si_int = value` to the thread, if it is still
    /// the same program and `sender` may signal it. Never sleeps; callable from process context
    /// with no driver spinlock held.
    pub(crate) fn send(&self, signo: u32, value: i32, sender: &SenderCred) -> Outcome {
        let _rcu = rcu::read_lock();
        // SAFETY: `self.pid` is a counted reference (type invariant); `pid_task` requires the RCU
        // read lock, which `_rcu` holds.
        let task = unsafe { bindings::pid_task(self.pid.as_ptr(), bindings::pid_type_PIDTYPE_PID) };
        if task.is_null() {
            return Outcome::Exited;
        }
        // SAFETY: A task found through its pid under RCU stays allocated until the RCU read lock
        // is dropped (task structs are freed after a grace period). `flags` and `self_exec_id`
        // are read once, racily, as the kernel's own readers do (READ_ONCE).
        let (flags, exec_id, cred) = unsafe {
            (
                core::ptr::addr_of!((*task).flags).read_volatile(),
                core::ptr::addr_of!((*task).self_exec_id).read_volatile(),
                core::ptr::addr_of!((*task).real_cred).read_volatile(),
            )
        };
        if flags & bindings::PF_EXITING != 0 {
            return Outcome::Exited;
        }
        if exec_id != self.exec_id {
            return Outcome::Execd;
        }
        // SAFETY: `real_cred` of a task is RCU-protected and we hold the RCU read lock.
        if !unsafe { sender.may_signal(cred) } {
            return Outcome::NotPermitted;
        }
        let mut info = bindings::kernel_siginfo::default();
        // Payload for every reader: SI_QUEUE makes `si_int` visible to signalfd and SA_SIGINFO
        // handlers alike. `si_pid`/`si_uid` stay 0: the sender is the kernel.
        info.__bindgen_anon_1.si_signo = signo as i32;
        info.__bindgen_anon_1.si_code = crate::uapi::SI_CODE;
        info.__bindgen_anon_1._sifields._rt._sigval.sival_int = value;
        // SAFETY: `info` is a valid, initialised siginfo; `task` is valid under RCU (above), and
        // `send_sig_info` takes the target's sighand lock itself and does not sleep.
        let ret = unsafe { bindings::send_sig_info(signo as i32, &mut info, task) };
        match ret {
            0 => Outcome::Delivered,
            r if r == EAGAIN.to_errno() => Outcome::QueueFull,
            // -ESRCH: the thread lost its signal handlers on the way out.
            _ => Outcome::Exited,
        }
    }
}

impl Drop for ThreadRef {
    fn drop(&mut self) {
        // SAFETY: The reference was taken in `current` and is released exactly once, here.
        unsafe { bindings::put_pid(self.pid.as_ptr()) };
    }
}
