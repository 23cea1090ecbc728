// SPDX-License-Identifier: GPL-2.0
//! What the kernel crate offers differently on the series the module builds on, 7.2 and 7.3:
//! the rest of the module is written once, against the names here. `module/Kbuild` passes
//! `--cfg pcmsig_kernel_7_2` when the kernel's `VERSION.PATCHLEVEL` is 7.2; without it, 7.3.
//!
//! - 7.2 has no `SpinLockIrq`: [`SpinLockIrq`] is then the kernel's `spinlock_t` through its
//!   `_irqsave` functions, as C drivers take a lock they share with an interrupt handler.
//! - 7.2 has no `EBADFD` or `EOPNOTSUPP` in `kernel::error::code`: [`ebadfd`], [`eopnotsupp`].
//! - A module parameter's `value()` is a copy on 7.3 and a reference on 7.2: [`param`].
//! - 7.2's `Task` has no `tgid()`: [`tgid`] (a KUnit test's layout check).
//! - 7.2's misc device file operations have no `owner`, so an open file does not pin the
//!   module: [`prepare_fops`], [`own_fops`], [`check_owned`].
//!
//! The edu driver's PCI and IRQ registrations differ more (lifetimes, the handler's
//! arguments); `edu.rs` keeps both forms side by side.

#[cfg(pcmsig_kernel_7_2)]
pub(crate) use v7_2::*;
#[cfg(not(pcmsig_kernel_7_2))]
pub(crate) use v7_3::*;

/// 7.3: the kernel crate's own.
#[cfg(not(pcmsig_kernel_7_2))]
mod v7_3 {
    use kernel::{
        fs::File,
        miscdevice::{MiscDevice, MiscDeviceRegistration},
        module_param::ModuleParamAccess,
        prelude::*,
    };

    pub(crate) use kernel::{new_spinlock_irq, sync::SpinLockIrq};

    /// `EBADFD`: a trigger the stream's state refuses.
    pub(crate) fn ebadfd() -> Error {
        EBADFD
    }

    /// `EOPNOTSUPP`: an inject hook without `test_hooks=1`.
    pub(crate) fn eopnotsupp() -> Error {
        EOPNOTSUPP
    }

    /// The value of a module parameter (its default unless given at load).
    pub(crate) fn param<T: Copy>(p: &ModuleParamAccess<T>) -> T {
        p.value()
    }

    /// The thread group id of `task`, read from its `task_struct` by the kernel crate.
    pub(crate) fn tgid(task: &kernel::task::Task) -> kernel::task::Pid {
        task.tgid()
    }

    /// Nothing to do on 7.3: the kernel crate's file operations name their module (`owner`).
    pub(crate) fn prepare_fops<T: MiscDevice>(_module: &'static ThisModule) {}

    /// Nothing to do on 7.3 (see [`prepare_fops`]).
    pub(crate) fn own_fops<T: MiscDevice>(_reg: &MiscDeviceRegistration<T>) {}

    /// Every open on 7.3 holds a module reference (`owner`, set by the kernel crate).
    pub(crate) fn check_owned(_file: &File) -> Result {
        Ok(())
    }
}

/// 7.2: the same names over what 7.2 has.
// Not mutated by `cargo xtask mutants`, which builds and boots 7.3, where this is compiled out:
// every mutant of it would survive unbuilt. The 7.2 suite runs it.
#[cfg_attr(test, mutants::skip)]
#[cfg(pcmsig_kernel_7_2)]
mod v7_2 {
    use core::{
        mem::MaybeUninit,
        sync::atomic::{AtomicPtr, Ordering},
    };
    use kernel::{
        bindings,
        fs::File,
        miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
        module_param::ModuleParamAccess,
        prelude::*,
    };

    pub(crate) use super::irqsave::{new_spinlock_irq, SpinLockIrq};

    /// The kernel's error for the positive errno `e` (one of `bindings`' constants, all below
    /// 4096, so `from_errno` takes it as is).
    fn errno(e: u32) -> Error {
        Error::from_errno(-(e as i32))
    }

    /// `EBADFD`: a trigger the stream's state refuses.
    pub(crate) fn ebadfd() -> Error {
        errno(bindings::EBADFD)
    }

    /// `EOPNOTSUPP`: an inject hook without `test_hooks=1`.
    pub(crate) fn eopnotsupp() -> Error {
        errno(bindings::EOPNOTSUPP)
    }

    /// The value of a module parameter (its default unless given at load).
    pub(crate) fn param<T: Copy>(p: &ModuleParamAccess<T>) -> T {
        *p.value()
    }

    /// The thread group id of `task`, read from its `task_struct` as 7.3's `Task::tgid` reads
    /// it (7.2 has no such method): through the bindings' layout, which the caller checks.
    pub(crate) fn tgid(task: &kernel::task::Task) -> kernel::task::Pid {
        // SAFETY: `task` is a live task (the reference); `tgid` never changes after the task is
        // created (as 7.3's `Task::tgid` relies on).
        unsafe { *core::ptr::addr_of!((*task.as_ptr()).tgid) }
    }

    /// The misc device's file operations, as [`prepare_fops`] copied them, with `owner` set.
    static mut FOPS: MaybeUninit<bindings::file_operations> = MaybeUninit::uninit();

    /// 7.2's kernel crate builds a misc device's file operations without `owner` (7.3 sets
    /// it), so an open file would not pin the module: `rmmod` succeeded with `/dev/pcmsig`
    /// open, and the file's close then oopsed in freed module text (`filp_flush`, seen in the
    /// suite's `rmmod_is_refused_while_open` on 7.2.12). The module's device therefore uses a
    /// copy of those operations that names the module, so that `misc_open`'s `fops_get` takes
    /// a module reference for each open file and `fput` drops it after `release`, as C drivers
    /// get from `.owner = THIS_MODULE`.
    ///
    /// This writes the copy; call it once in the module's init, before the registration,
    /// whose `misc_register` (taking and releasing `misc_mtx`) then publishes it to every
    /// `misc_open`, which reads the device under that lock. [`own_fops`] points the registered
    /// device at it.
    pub(crate) fn prepare_fops<T: MiscDevice>(module: &'static ThisModule) {
        // The crate's own operations for `T` (the name does not matter here).
        let theirs = MiscDeviceOptions { name: c"" }.into_raw::<T>().fops;
        let ours = core::ptr::addr_of_mut!(FOPS).cast::<bindings::file_operations>();
        // SAFETY: `theirs` is the crate's static vtable, `ours` the module's own static, which
        // nothing reads yet (no device points to it) and which is never `theirs`.
        unsafe {
            core::ptr::copy_nonoverlapping(theirs, ours, 1);
            (*ours).owner = module.as_ptr();
        }
    }

    /// Points the registered device at the copy [`prepare_fops`] made, in one atomic store: a
    /// concurrent `misc_open` sees the crate's operations (and [`check_owned`] refuses that
    /// file) or the copy, complete since the registration.
    pub(crate) fn own_fops<T: MiscDevice>(reg: &MiscDeviceRegistration<T>) {
        let misc = reg.as_raw();
        let ours = core::ptr::addr_of_mut!(FOPS).cast::<bindings::file_operations>();
        // SAFETY: `misc` is the registered `miscdevice`, alive as long as `reg`; its `fops` is a
        // pointer-sized, aligned field, which `misc_open` reads once per open.
        let fops = unsafe {
            AtomicPtr::from_ptr(
                core::ptr::addr_of_mut!((*misc).fops).cast::<*mut bindings::file_operations>(),
            )
        };
        fops.store(ours, Ordering::Release);
    }

    /// `EAGAIN` for a file opened through the kernel crate's own operations (between the
    /// registration and [`own_fops`], at load): such a file holds no module reference. (The
    /// VFS then drops the file without `release`.)
    pub(crate) fn check_owned(file: &File) -> Result {
        let ours = core::ptr::addr_of!(FOPS).cast::<bindings::file_operations>();
        // SAFETY: `file` is a file being opened, whose `f_op` the VFS set before `open`.
        let f_op = unsafe { (*file.as_ptr()).f_op };
        if f_op == ours {
            Ok(())
        } else {
            Err(EAGAIN)
        }
    }
}

/// 7.2's stand-in for the kernel crate's `SpinLockIrq`.
#[cfg_attr(test, mutants::skip)] // As `v7_2`.
#[cfg(pcmsig_kernel_7_2)]
mod irqsave {
    use kernel::{
        bindings,
        ffi::{c_char, c_ulong},
        sync::lock::Backend,
    };

    #[cfg(CONFIG_PREEMPT_RT)]
    compile_error!("compat.rs: under PREEMPT_RT a spinlock_t is not a raw spinlock");

    /// A lock with interrupts off on the holder's CPU while it is held. Unlike 7.3's, whose
    /// guards count the disables and may go in any order, each guard restores the state it
    /// saved: nested guards must drop in reverse order, as every nesting in the module does
    /// (each guard is scoped; none is dropped early while an inner one lives).
    pub(crate) type SpinLockIrq<T> = kernel::sync::lock::Lock<T, SpinLockIrqBackend>;

    /// A [`SpinLockIrq`] initialiser with the given name and a new lock class (for lockdep).
    macro_rules! new_spinlock_irq {
        ($inner:expr, $name:literal $(,)?) => {
            $crate::compat::SpinLockIrq::new(
                $inner,
                kernel::c_str!($name),
                kernel::static_lock_class!(),
            )
        };
    }
    pub(crate) use new_spinlock_irq;

    /// The backend of [`SpinLockIrq`]: `spin_lock_irqsave` and `spin_unlock_irqrestore`; the
    /// guard keeps the saved interrupt state.
    pub(crate) struct SpinLockIrqBackend;

    /// The raw spinlock a `spinlock_t` wraps: without PREEMPT_RT (refused above) the union's
    /// member `rlock`, at offset 0 (with lockdep too), as in `bh.rs`.
    fn raw(ptr: *mut bindings::spinlock_t) -> *mut bindings::raw_spinlock_t {
        ptr.cast()
    }

    // SAFETY: `spin_lock_irqsave` excludes as `spin_lock` does, with interrupts off on this CPU
    // while held, so that an interrupt handler or hrtimer callback on the holder's CPU cannot
    // spin on it; `unlock` restores the state `lock` saved. `relock` keeps the default, which
    // saves the state anew.
    unsafe impl Backend for SpinLockIrqBackend {
        type State = bindings::spinlock_t;
        type GuardState = c_ulong;

        unsafe fn init(
            ptr: *mut Self::State,
            name: *const c_char,
            key: *mut bindings::lock_class_key,
        ) {
            // SAFETY: `Backend::init`'s contract: `ptr` is valid for writes, `name` and `key`
            // are valid for reads for as long as the lock exists.
            unsafe { bindings::__spin_lock_init(ptr, name, key) }
        }

        unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
            // SAFETY: `Backend::lock`'s contract: `ptr` is an initialised `spinlock_t`; `raw`
            // gives the raw spinlock inside it, as C's `spin_lock_irqsave` passes it.
            unsafe { bindings::_raw_spin_lock_irqsave(raw(ptr)) }
        }

        unsafe fn try_lock(_ptr: *mut Self::State) -> Option<Self::GuardState> {
            // 7.2 exports no trylock that saves the interrupt state (`spin_trylock_irqsave` is
            // a macro), and the module never tries these locks: always busy, which claims
            // nothing (a caller would never get the lock; none exists).
            None
        }

        unsafe fn unlock(ptr: *mut Self::State, guard_state: &Self::GuardState) {
            // SAFETY: `Backend::unlock`'s contract: the caller holds the lock, taken by `lock`,
            // which returned `guard_state`.
            unsafe { bindings::_raw_spin_unlock_irqrestore(raw(ptr), *guard_state) }
        }

        unsafe fn assert_is_held(ptr: *mut Self::State) {
            // SAFETY: `ptr` is an initialised `spinlock_t` (the contract).
            unsafe { bindings::spin_assert_is_held(ptr) }
        }
    }
}
