// SPDX-License-Identifier: GPL-2.0
//! A spinlock that turns bottom halves off while held and leaves hard interrupts on
//! (`spin_lock_bh`, as C drivers use it): for data that process context and the delivery work
//! item (softirq) share and no hard-IRQ handler touches. The 7.3 kernel crate has `SpinLock`
//! (neither off: a softirq on the holder's CPU could spin on it forever) and `SpinLockIrq`
//! (interrupts off: every interrupt of the CPU waits for the holder, whatever the lock guards).
//! A walk under this lock that grows with one user's files therefore delays no interrupt, and
//! so no other user's period timer (review finding 2).

use kernel::{bindings, ffi::c_char, sync::lock::Backend};

#[cfg(CONFIG_PREEMPT_RT)]
compile_error!("bh.rs: under PREEMPT_RT a spinlock_t is not a raw spinlock; use its own API");

/// A lock with bottom halves off on the holder's CPU while it is held.
pub(crate) type SpinLockBh<T> = kernel::sync::lock::Lock<T, SpinLockBhBackend>;

/// A [`SpinLockBh`] initialiser with the given name and a new lock class (for lockdep).
macro_rules! new_spinlock_bh {
    ($inner:expr, $name:literal $(,)?) => {
        $crate::bh::SpinLockBh::new($inner, kernel::c_str!($name), kernel::static_lock_class!())
    };
}
pub(crate) use new_spinlock_bh;

/// The backend of [`SpinLockBh`]: the kernel's `spinlock_t` through its `_bh` functions.
pub(crate) struct SpinLockBhBackend;

/// The raw spinlock a `spinlock_t` wraps. Without PREEMPT_RT (refused above) a `spinlock_t` is a
/// union whose member `rlock` is at offset 0 (with lockdep too); C's `spin_lock_bh(lock)` is
/// `raw_spin_lock_bh(&lock->rlock)`, this address.
fn raw(ptr: *mut bindings::spinlock_t) -> *mut bindings::raw_spinlock_t {
    ptr.cast()
}

// SAFETY: `spin_lock_bh` excludes as `spin_lock` does (and keeps softirqs off on this CPU while
// held, so that the delivery work item cannot spin on a lock its own CPU holds); `relock` keeps
// the default, which calls the same `lock`.
unsafe impl Backend for SpinLockBhBackend {
    type State = bindings::spinlock_t;
    type GuardState = ();

    unsafe fn init(ptr: *mut Self::State, name: *const c_char, key: *mut bindings::lock_class_key) {
        // SAFETY: `Backend::init`'s contract: `ptr` is valid for writes, `name` and `key` are
        // valid for reads for as long as the lock exists.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: `Backend::lock`'s contract: `ptr` is an initialised `spinlock_t`; `raw` gives
        // the raw spinlock inside it, as C's `spin_lock_bh` passes it.
        unsafe { bindings::_raw_spin_lock_bh(raw(ptr)) }
    }

    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        // SAFETY: as in `lock`.
        let locked = unsafe { bindings::_raw_spin_trylock_bh(raw(ptr)) };
        (locked != 0).then_some(())
    }

    unsafe fn unlock(ptr: *mut Self::State, _guard_state: &Self::GuardState) {
        // SAFETY: `Backend::unlock`'s contract: the caller holds the lock, taken by `lock` or
        // `try_lock` above, with bottom halves off.
        unsafe { bindings::_raw_spin_unlock_bh(raw(ptr)) }
    }

    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: `ptr` is an initialised `spinlock_t` (the contract).
        unsafe { bindings::spin_assert_is_held(ptr) }
    }
}
