// SPDX-License-Identifier: GPL-2.0
//! Thread-directed, queued signals to a thread held by a counted `struct pid` reference.
//!
//! The kernel crate has no wrapper for `struct pid` references or for sending a signal with a
//! payload, so this file provides one, kept apart from the driver so that it could be upstreamed.
//!
//! Why a `struct pid` and not a `task_struct` pointer: a cached task pointer dangles once the
//! thread exits and is reaped. A counted pid reference stays valid; the task behind it is looked
//! up under RCU at send time and is simply absent once the thread is gone.
//!
//! One field of `struct task_struct` is read from Rust: `mm`, by address, in `resolve` (the
//! exported `get_task_mm` takes `task_lock`, which must not be taken in softirq context, where
//! delivery runs). Everything else goes through exported functions (`get_pid_task`,
//! `get_task_cred`). That read depends on bindgen's `task_struct` layout being C's: without
//! `CONFIG_SCHEDSTATS` it is 48 bytes short from its `stats` field on, so the read would return
//! another field; `vm/kernel.config` sets the option, the layout guard fails the build if any
//! binding disagrees, and the KUnit case `the_kernel_crates_task_layout_agrees_with_c` checks the
//! field's offset against `get_task_mm` in the running kernel.

use core::ptr::NonNull;
use kernel::{bindings, mm::Mm, prelude::*, sync::aref::ARef, task::Task};

/// The ids the signalling rule looks at (global `kuid_t` values), recorded from a file's opener
/// or from the calling thread, and checked at every send exactly as the kernel checks a
/// `F_SETOWN` owner (`sigio_perm` in fs/fcntl.c): the sender's euid is global root, or its euid
/// or uid equals the target's uid or saved uid. There is deliberately no `CAP_KILL` bypass:
/// `sigio_perm` has none, and a capability of the opener's own user namespace (a user-namespace
/// "root") must not reach threads outside it (`kill_ok_by_cred` in kernel/signal.c would ask
/// `ns_capable` in the target's namespace; the global-root uid check is that rule's
/// init-namespace case).
#[derive(Clone, Copy)]
pub(crate) struct SenderCred {
    uid: u32,
    euid: u32,
}

/// The global root's `kuid_t` value (`GLOBAL_ROOT_UID`).
const GLOBAL_ROOT_UID: u32 = 0;

impl SenderCred {
    /// Records the credentials a file was opened with.
    pub(crate) fn of_file(file: &kernel::fs::File) -> Self {
        let cred = file.cred().as_ptr();
        // SAFETY: `File::cred` returns the file's credentials, which live as long as the file;
        // `f_cred` is immutable after open, so plain reads of its fields are race-free.
        let (uid, euid) = unsafe { ((*cred).uid.val, (*cred).euid.val) };
        Self { uid, euid }
    }

    /// The effective uid (global `kuid_t` value): whose stream a file drives.
    pub(crate) fn euid(&self) -> u32 {
        self.euid
    }

    /// The calling thread's (objective) credentials.
    pub(crate) fn of_current() -> Self {
        // SAFETY: `current` is valid while it runs this code; `get_task_cred` returns a counted
        // reference to its credentials, never null for a live task.
        let cred = unsafe { bindings::get_task_cred(Task::current_raw()) };
        // SAFETY: `cred` is valid until `put_cred`; the ids of a published cred never change.
        let (uid, euid) = unsafe { ((*cred).uid.val, (*cred).euid.val) };
        // SAFETY: Releases the reference taken by `get_task_cred`.
        unsafe { bindings::put_cred(cred) };
        Self { uid, euid }
    }

    /// Whether these credentials may signal a thread whose real credentials are `cred`.
    ///
    /// # Safety
    ///
    /// `cred` must point to a valid `struct cred` (e.g. read under RCU from a live task).
    unsafe fn may_signal(&self, cred: *const bindings::cred) -> bool {
        // SAFETY: The caller guarantees `cred` is valid; ids of a published cred never change.
        let (uid, suid) = unsafe { ((*cred).uid.val, (*cred).suid.val) };
        self.euid == GLOBAL_ROOT_UID
            || self.euid == suid
            || self.euid == uid
            || self.uid == suid
            || self.uid == uid
    }

    /// Whether these credentials may signal `task`.
    ///
    /// # Safety
    ///
    /// `task` must be a valid task (e.g. one we hold a reference on).
    unsafe fn may_signal_task(&self, task: *mut bindings::task_struct) -> bool {
        // SAFETY: The caller's guarantee.
        unsafe { self.check_task(task) }.0
    }

    /// Whether these credentials may signal `task`, and the user namespace of its (objective)
    /// credentials, the one the kernel maps `si_uid` into.
    ///
    /// # Safety
    ///
    /// `task` must be a valid task (e.g. one we hold a reference on).
    unsafe fn check_task(
        &self,
        task: *mut bindings::task_struct,
    ) -> (bool, *const bindings::user_namespace) {
        // SAFETY: The caller guarantees `task` is valid; `get_task_cred` returns a counted
        // reference to its objective credentials, never null for a live task.
        let cred = unsafe { bindings::get_task_cred(task) };
        // SAFETY: `cred` is a counted reference, valid until `put_cred` below; a published
        // cred's fields never change.
        let (ok, ns) = unsafe { (self.may_signal(cred), (*cred).user_ns.cast_const()) };
        // SAFETY: Releases the reference taken by `get_task_cred`.
        unsafe { bindings::put_cred(cred) };
        (ok, ns)
    }

    /// Whether these credentials may signal the calling thread.
    pub(crate) fn may_signal_current(&self) -> bool {
        // SAFETY: `current` is valid while it runs this code.
        unsafe { self.may_signal_task(Task::current_raw()) }
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

/// A counted reference to the `struct pid` of one thread, with the address space the thread
/// ran when the reference was taken.
///
/// # Invariants
///
/// `pid` holds a reference taken with `get_task_pid`, released exactly once in `Drop`. `mm` is
/// the kernel crate's `mmgrab` reference (which keeps the `mm_struct` allocated, so its address
/// cannot be reused by another address space).
pub(crate) struct ThreadRef {
    pid: NonNull<bindings::pid>,
    mm: ARef<Mm>,
}

/// Which `struct pid` of the registering thread is kept: its own (thread-directed delivery).
const KEPT_PID: bindings::pid_type = bindings::pid_type_PIDTYPE_PID;

// SAFETY: `struct pid` and `mm_struct` references may be used and released from any thread.
unsafe impl Send for ThreadRef {}
// SAFETY: All methods take `&self` and only pass the pointers to thread-safe kernel functions.
unsafe impl Sync for ThreadRef {}

/// A counted task reference, released on drop.
struct TaskRef(NonNull<bindings::task_struct>);

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: The reference was taken by `get_pid_task` and is released once, here.
        unsafe { bindings::put_task_struct(self.0.as_ptr()) };
    }
}

/// A registered thread resolved for one batch of signals ([`ThreadRef::resolve`]).
///
/// # Invariants
///
/// Holds a counted reference to a live thread that may be signalled.
pub(crate) struct Resolved {
    task: TaskRef,
    /// The `si_uid` to send so that the thread reads the overflow uid (see [`si_uid_for`]).
    si_uid: u32,
}

impl Resolved {
    fn task(&self) -> *mut bindings::task_struct {
        self.task.0.as_ptr()
    }

    /// Sends `signo` with `si_code = SI_QUEUE` and `si_int = value`. Never sleeps.
    pub(crate) fn send(&self, signo: u32, value: i32) -> Outcome {
        let mut info = bindings::kernel_siginfo::default();
        // Payload for every reader: SI_QUEUE makes `si_int` visible to signalfd and SA_SIGINFO
        // handlers alike. `si_pid` stays 0 (the kernel only ever clears it); `si_uid` is chosen
        // so that the receiver reads the overflow uid, whoever was interrupted.
        info.__bindgen_anon_1.si_signo = signo as i32;
        info.__bindgen_anon_1.si_code = SI_CODE;
        info.__bindgen_anon_1._sifields._rt._uid = self.si_uid;
        info.__bindgen_anon_1._sifields._rt._sigval.sival_int = value;
        // SAFETY: `info` is a valid, initialised siginfo; the task is valid (counted, type
        // invariant); `send_sig_info` takes the target's sighand lock itself and does not sleep.
        let ret = unsafe { bindings::send_sig_info(signo as i32, &mut info, self.task()) };
        match ret {
            0 => Outcome::Delivered,
            r if r == EAGAIN.to_errno() => Outcome::QueueFull,
            // -ESRCH: the thread lost its signal handlers on the way out.
            _ => Outcome::Exited,
        }
    }
}

impl ThreadRef {
    /// A reference to the calling thread (not its thread group: delivery is thread-directed).
    pub(crate) fn current() -> Result<Self> {
        // The kernel crate reads `current->mm` (correct since the bindings' layouts agree with C:
        // the layout guard and the KUnit test `the_kernel_crates_task_layout_agrees_with_c`).
        let mm: ARef<Mm> = ARef::from(&**kernel::current!().mm().ok_or(ESRCH)?);
        let task = Task::current_raw();
        // SAFETY: `current` is a valid task for the duration of this call; `get_task_pid` takes
        // its own reference on the pid.
        let pid = unsafe { bindings::get_task_pid(task, KEPT_PID) };
        let pid = NonNull::new(pid).ok_or(ESRCH)?;
        // INVARIANT: `pid` and `mm` are the references taken above.
        Ok(Self { pid, mm })
    }

    /// Resolves the thread for a batch of signals: the checks every signal needs (the thread is
    /// alive, still the same program, and `sender` may signal it), made once per batch rather
    /// than once per event. `Err` is the outcome of every signal of the batch. Never sleeps and
    /// takes no lock but RCU's, so it may run in softirq context.
    pub(crate) fn resolve(&self, sender: &SenderCred) -> core::result::Result<Resolved, Outcome> {
        // SAFETY: `self.pid` is a counted reference (type invariant); `get_pid_task` returns the
        // thread with its own reference taken, or null once the thread has been released.
        let Some(task) = NonNull::new(unsafe {
            bindings::get_pid_task(self.pid.as_ptr(), bindings::pid_type_PIDTYPE_PID)
        }) else {
            return Err(Outcome::Exited);
        };
        let task = TaskRef(task);
        if let Some(gone) = leaving(task.0.as_ptr()) {
            return Err(gone);
        }
        // The thread's address space, compared by address only and never dereferenced, so no
        // reference is taken (`get_task_mm` would take `task_lock`, a lock that is not safe to
        // take in softirq context, where delivery runs). `execve` and exit change `mm` under
        // `task_lock`; this unlocked read sees the old or the new pointer, never a torn one.
        // The address cannot be reused by the new program: `self.mm` holds the old `mm_struct`
        // allocated (`mmgrab`). What the check cannot do is hold the answer: a thread that
        // enters `execve` after it and before the batch's last `send_sig_info` still gets those
        // signals, pending into its new program, counted delivered (as `kill(2)` racing an exec
        // does). The window is one batch; an exec found here or in `leaving` is counted exec'd.
        // SAFETY: `task` is valid (counted); the field is read once, as the C `READ_ONCE` does.
        let mm = unsafe { core::ptr::addr_of!((*task.0.as_ptr()).mm).read_volatile() };
        if mm.is_null() {
            // Exiting: `exit_mm` has dropped its address space.
            return Err(Outcome::Exited);
        }
        // `execve` always installs a new address space; ours stays allocated (mm_count), so
        // an equal pointer means the same program.
        if mm != self.mm.as_raw() {
            return Err(Outcome::Execd);
        }
        // SAFETY: `task` is valid (counted).
        let (permitted, ns) = unsafe { sender.check_task(task.0.as_ptr()) };
        if !permitted {
            return Err(Outcome::NotPermitted);
        }
        Ok(Resolved {
            task,
            si_uid: si_uid_for(ns),
        })
    }

    /// Whether `sender` may signal the thread now (a thread that is gone can be "signalled":
    /// nobody receives anything).
    pub(crate) fn may_be_signalled_by(&self, sender: &SenderCred) -> bool {
        // SAFETY: `self.pid` is a counted reference (type invariant); `get_pid_task` returns the
        // thread with its own reference taken, or null once the thread has been released.
        let task =
            unsafe { bindings::get_pid_task(self.pid.as_ptr(), bindings::pid_type_PIDTYPE_PID) };
        let Some(task) = NonNull::new(task) else {
            return true;
        };
        let task = TaskRef(task);
        // SAFETY: `task` is valid (counted).
        unsafe { sender.may_signal_task(task.0.as_ptr()) }
    }
}

/// Whether `task` is leaving its program: exiting, or in an `execve` (from `bprm_execve`'s
/// checks on).
/// The kernel still accepts a signal sent then, and reports success, but an exiting thread group
/// discards it (`prepare_signal`) and an exiting thread's private queue is flushed as it goes;
/// during an exec, the signal stays pending into the *new* program (pending signals and the
/// blocked mask survive `execve`, handlers do not), which did not ask for it. So such an event is
/// counted as dropped, exited or exec'd, rather than delivered.
///
/// Racy by design, like the `mm` read in `resolve`: a thread that starts to leave just after the
/// check gets the signal it would have got a moment earlier.
fn leaving(task: *mut bindings::task_struct) -> Option<Outcome> {
    // SAFETY: The caller holds a counted reference on `task`; `flags` is read once (the C side
    // reads another task's flags with plain loads too).
    let flags = unsafe { core::ptr::addr_of!((*task).flags).read_volatile() };
    if flags & bindings::PF_EXITING != 0 {
        // `exit_signals` has run: the thread is on its way out of `do_exit`.
        return Some(Outcome::Exited);
    }
    // SAFETY: A task's `signal` is set at fork, never null, and released only with the task
    // itself (`__put_task_struct`), on which the caller holds a reference.
    let signal = unsafe { core::ptr::addr_of!((*task).signal).read() };
    // SAFETY: `signal` is valid (above); both fields are read once, without `siglock`, as a
    // check before sending may be (the same race as any).
    let (group_flags, exec_task) = unsafe {
        (
            core::ptr::addr_of!((*signal).flags).read_volatile(),
            core::ptr::addr_of!((*signal).group_exec_task).read_volatile(),
        )
    };
    if group_flags & bindings::SIGNAL_GROUP_EXIT != 0 {
        // `exit_group` (or the last thread's exit) has begun: `prepare_signal` drops the signal.
        return Some(Outcome::Exited);
    }
    if !exec_task.is_null() {
        // A thread of the group is in `de_thread`, past the exec's point of no return: it
        // becomes the new program, and every other thread is being killed.
        return Some(if exec_task == task {
            Outcome::Execd
        } else {
            Outcome::Exited
        });
    }
    // SAFETY: The caller holds a counted reference on `task`; the bit is read once without a
    // lock, like the fields above (only the task itself writes it, at the start and the end of
    // its `bprm_execve`).
    if unsafe { bindings::task_struct::in_execve_raw(task) } != 0 {
        // In `bprm_execve`: a single-threaded exec sets no `group_exec_task`, and in 7.3 the
        // exec closes the close-on-exec files (whose `flush` may block: FUSE's) before
        // `exec_mmap` replaces the program, so the old `mm` is still there. A signal sent now
        // stays pending into the new program. (An exec that fails after this point loses the
        // event for the old program: counted exec'd, so the loss shows in the stats.)
        return Some(Outcome::Execd);
    }
    None
}

/// The `si_uid` that makes a thread whose credentials live in user namespace `target_ns` read the
/// overflow uid (`/proc/sys/kernel/overflowuid`, 65534 by default): the sender is the kernel, no
/// user, and the value must not depend on which task the delivery happened to interrupt.
///
/// Delivery runs in softirq, on top of whatever task was running, and `send_signal_locked`
/// (kernel/signal.c) rewrites an `SI_QUEUE` signal's `si_uid` when that task's user namespace
/// (of its subjective credentials) differs from the target's:
/// `from_kuid_munged(target_ns, make_kuid(current_ns, si_uid))`. Sending 0, as the driver once
/// did, let a listener read the uid that the root of an interrupted container maps to. So:
/// - same namespace: no rewrite, so send the overflow uid itself;
/// - another namespace: send `u32::MAX`, which no namespace maps (`(uid_t)-1` is refused in a
///   uid map), so `make_kuid` gives `INVALID_UID`, which `from_kuid_munged` turns into the
///   overflow uid.
///
/// Called in the delivery work item, where the interrupted task cannot change its credentials
/// until we return: the kernel's later read of `current_user_ns()` sees what we read here.
fn si_uid_for(target_ns: *const bindings::user_namespace) -> u32 {
    // SAFETY: `current` is valid while it runs (or is interrupted by) this code; its `cred` is
    // the subjective credentials `current_user_ns()` reads, alive while the task holds them, and
    // not replaced while this code runs on top of it.
    let current_ns = unsafe {
        let cred = core::ptr::addr_of!((*Task::current_raw()).cred).read();
        (*cred).user_ns.cast_const()
    };
    if current_ns == target_ns {
        // SAFETY: `overflowuid` is an exported `int`, changed only by its sysctl; read once.
        let overflow = unsafe { core::ptr::addr_of!(bindings::overflowuid).read_volatile() };
        overflow as u32
    } else {
        u32::MAX
    }
}

/// The `si_code` of every signal: `SI_QUEUE`, so that `si_int` reaches every reader.
const SI_CODE: i32 = crate::uapi::SI_CODE;

impl Drop for ThreadRef {
    fn drop(&mut self) {
        // Dropping `mm` may free the address space (`__mmdrop`), which may sleep and takes a
        // lock that is not softirq-safe: the driver only ever drops a `ThreadRef` where it may
        // sleep (see `Listener`). Checked on kernels with `CONFIG_DEBUG_ATOMIC_SLEEP`.
        kernel::task::might_sleep();
        // SAFETY: The pid reference was taken in `current` and is released exactly once, here.
        unsafe { bindings::put_pid(self.pid.as_ptr()) };
    }
}

#[kunit_tests(pcmsig_signal)]
mod tests {
    use super::*;

    /// A `struct cred` with only the ids the rule reads.
    fn cred(uid: u32, suid: u32) -> bindings::cred {
        // SAFETY: `struct cred` is integers, pointers and plain structs of them: all-zero is a
        // valid value (it is never passed to the kernel, only read by `may_signal`).
        let mut c: bindings::cred = unsafe { core::mem::zeroed() };
        c.uid.val = uid;
        c.suid.val = suid;
        c
    }

    fn may(uid: u32, euid: u32, target: &bindings::cred) -> bool {
        let sender = SenderCred { uid, euid };
        // SAFETY: `target` is a valid, initialised `struct cred`.
        unsafe { sender.may_signal(target) }
    }

    #[test]
    fn the_send_rule_is_sigio_perm() {
        let t = cred(1000, 1001);
        // Global root's euid.
        assert!(may(5, GLOBAL_ROOT_UID, &t));
        // euid against the target's uid and saved uid; uid against both.
        assert!(may(7, 1000, &t));
        assert!(may(7, 1001, &t));
        assert!(may(1000, 7, &t));
        assert!(may(1001, 7, &t));
        // Nothing in common: no (a user-namespace root's euid is not global root).
        assert!(!may(7, 8, &t));
        assert!(!may(2000, 2000, &t));
    }

    #[test]
    fn the_kernel_crates_task_layout_agrees_with_c() {
        // These read `task_struct` fields from Rust: with the bindgen layout shift (no
        // CONFIG_SCHEDSTATS) they returned other fields. C's own accessors are the reference.
        let task = kernel::current!();
        let raw = Task::current_raw();
        // SAFETY: `raw` is the running task; a null namespace means the task's own.
        let c_pid = unsafe {
            bindings::__task_pid_nr_ns(raw, bindings::pid_type_PIDTYPE_PID, core::ptr::null_mut())
        };
        // SAFETY: As above.
        let c_tgid = unsafe { bindings::task_tgid_nr_ns(raw, core::ptr::null_mut()) };
        assert_eq!(task.pid(), c_pid);
        assert_eq!(crate::compat::tgid(task), c_tgid);
        assert_eq!(task.group_leader().pid(), c_tgid);
        // SAFETY: `raw` is valid; `get_task_mm` returns a counted `mm` or null (a kthread).
        let c_mm = unsafe { bindings::get_task_mm(raw) };
        let rust_mm = task.mm().map_or(core::ptr::null_mut(), |mm| mm.as_raw());
        assert_eq!(rust_mm, c_mm);
        if !c_mm.is_null() {
            // SAFETY: Drops the reference `get_task_mm` took.
            unsafe { bindings::mmput(c_mm) };
        }
    }
}
