// SPDX-License-Identifier: GPL-2.0
//! A wait queue with the one wait the kernel crate's `CondVar` lacks: a killable one
//! (`TASK_KILLABLE`, as C's `wait_event_killable`). Only a fatal signal ends it early, so an
//! ioctl that waits for delivery returns 0 exactly when its signals are queued, a handled signal
//! cannot cut the wait short (it runs once the ioctl returns), and SIGKILL still ends it.

use kernel::{bindings, prelude::*, sync::LockClassKey, types::Opaque};

/// A `struct wait_queue_head` and its killable wait.
#[pin_data]
pub(crate) struct KillableWait {
    #[pin]
    head: Opaque<bindings::wait_queue_head>,
}

// SAFETY: A `wait_queue_head` may be used from any thread: it has its own spinlock.
unsafe impl Send for KillableWait {}
// SAFETY: As above: every method goes through the kernel's locked wait-queue functions.
unsafe impl Sync for KillableWait {}

impl KillableWait {
    /// An initialiser of an empty queue; `name` and `key` are lockdep's for its lock.
    pub(crate) fn new(name: &'static CStr, key: Pin<&'static LockClassKey>) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid while the closure runs; `name` and `key` are static.
            head <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_waitqueue_head(slot, name.as_char_ptr(), key.as_ptr())
            }),
        })
    }

    /// Sleeps until `done()` holds (`Ok`) or a fatal signal is pending (`EINTR`: the caller is
    /// dying and its return value is never seen). `done` is evaluated after the task is on the
    /// queue and its state is set, so a [`KillableWait::wake_all`] that follows the condition
    /// becoming true is never lost. Process context, with no spinlock held (`done` may take
    /// one).
    pub(crate) fn wait_until(&self, done: impl Fn() -> bool) -> Result {
        let wait = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `wait` is valid, writable memory for an entry, and does not move until the
        // `finish_wait` below.
        unsafe { bindings::init_wait_entry(wait.get(), 0) };
        let result = loop {
            // SAFETY: The queue head is initialised and pinned; `wait` is initialised. Returns
            // nonzero (and leaves the entry off the queue) if a fatal signal is pending.
            let fatal = unsafe {
                bindings::prepare_to_wait_event(
                    self.head.get(),
                    wait.get(),
                    bindings::TASK_KILLABLE as i32,
                )
            };
            if done() {
                break Ok(());
            }
            if fatal != 0 {
                break Err(EINTR);
            }
            // SAFETY: Process context with no lock held (this function's contract).
            unsafe { bindings::schedule() };
        };
        // SAFETY: As for `prepare_to_wait_event`; sets the task running and takes the entry off
        // the queue if it is still on it.
        unsafe { bindings::finish_wait(self.head.get(), wait.get()) };
        result
    }

    /// Wakes every waiter, which then checks its condition. Callable from any context.
    pub(crate) fn wake_all(&self) {
        // SAFETY: The queue head is initialised; `__wake_up` takes its lock itself.
        unsafe {
            bindings::__wake_up(
                self.head.get(),
                bindings::TASK_NORMAL,
                0,
                core::ptr::null_mut(),
            )
        };
    }
}
