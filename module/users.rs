// SPDX-License-Identifier: GPL-2.0
//! One stream per user: the isolation between users.
//!
//! An open file drives the stream of its opener's effective uid, created by that user's first
//! open and forgotten at the last close of its files (the next open starts a fresh stream).
//! Opens by the same user share one stream (its files see the same events, and its listeners
//! share its xrun rule); another user's open never reaches it, so no user's listener can block,
//! stop, slow or xrun another user's stream, and no user's trigger reaches another user's
//! threads. Sharing across users is explicit: a file passed to another process (fork,
//! `SCM_RIGHTS`) still drives its opener's stream, under the send rule (REGISTER needs the
//! opener to be allowed to signal the caller; emitting ioctls need the caller to be allowed to
//! signal every listener).
//!
//! The `edu` device, when bound, is the period source of every stream: each stream's timer asks
//! it for an interrupt and counts its own periods owed, and the interrupt handler serves every
//! stream that is owed periods ([`Streams::device_interrupt`]).

use crate::{
    compat::{new_spinlock_irq, SpinLockIrq},
    signal::SenderCred,
    stream::{DeviceHook, OpenFile, Stream},
    uapi::DelayPoint,
};
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
};

/// The module's streams, for the file operations and the edu driver's probe, which get no other
/// context. Set before the misc device and the edu driver are registered, cleared after both are
/// deregistered; the module's `Arc` outlives both registrations (field order in `PcmsigModule`),
/// and no file can be open then (the module reference every open file holds).
static STREAMS: AtomicPtr<Streams> = AtomicPtr::new(core::ptr::null_mut());

/// Every user's stream.
#[pin_data]
pub(crate) struct Streams {
    /// The bound device's hook, if any. Also serialises the changes of `list` (a stream's
    /// creation with its first file, its removal at its last close) and the device's arrival and
    /// removal, so that a stream is listed exactly while it has files, and a listed stream has
    /// the hook. Taken before a stream's `control` and `files`.
    #[pin]
    setup: Mutex<Option<DeviceHook>>,
    /// The streams, read in hard-IRQ context by the device's interrupt handler.
    #[pin]
    list: SpinLockIrq<KVec<Arc<Stream>>>,
}

impl Streams {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                setup <- new_mutex!(None, "pcmsig::Streams::setup"),
                list <- new_spinlock_irq!(KVec::new(), "pcmsig::Streams::list"),
            }),
            GFP_KERNEL,
        )
    }

    /// Makes `streams` the module's streams (or none, with `None`), for [`Streams::get`].
    pub(crate) fn publish(streams: Option<&Arc<Streams>>) {
        let ptr = streams.map_or(core::ptr::null_mut(), |s| Arc::as_ptr(s).cast_mut());
        STREAMS.store(ptr, Ordering::Release);
    }

    /// The module's streams: `None` only before init has published them or after unload began.
    pub(crate) fn get() -> Option<Arc<Streams>> {
        let ptr = STREAMS.load(Ordering::Acquire);
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `STREAMS` holds `Arc::as_ptr` of the module's `Arc<Streams>`, which is alive
        // while it is published (see `STREAMS`); `ArcBorrow` + `into` takes a new reference.
        Some(unsafe { ArcBorrow::from_raw(ptr) }.into())
    }

    /// A new open file of `opener`, attached to the stream of its effective uid (created if the
    /// user has none).
    ///
    /// `setup` is held only to look the stream up and to list a new one, never across the
    /// allocations, which are charged to the opener's memory cgroup (and the file list's may be
    /// large): one user's reclaim must not hold up every other user's open and close. So the
    /// lookup is checked again once the file is attached: the stream may have lost its last
    /// file and been forgotten meanwhile (then the file leaves it and the open starts again), or
    /// another open of the user may have listed a stream first (then that one is joined; the
    /// misc core holds its global `misc_mtx` across every open today, so only the first
    /// happens, but this function does not rely on it).
    pub(crate) fn open(&self, opener: SenderCred) -> Result<Arc<OpenFile>> {
        let owner = opener.euid();
        loop {
            let listed = {
                let _setup = self.setup.lock();
                self.find(owner)
            };
            let stream = match &listed {
                Some(s) => s.clone(),
                None => Stream::new(owner)?,
            };
            crate::delay::sleep_at(DelayPoint::OpenAllocating);
            let file = OpenFile::new(stream.clone(), opener)?;
            stream.attach(file.clone())?;
            let device = self.setup.lock();
            // Under `setup` the list cannot change, and a close that would forget the stream
            // (it takes `setup` and finds no file) now sees this file.
            match (&listed, self.find(owner)) {
                (Some(s), Some(now)) if Arc::ptr_eq(s, &now) => return Ok(file),
                (None, None) => {
                    if let Some(hook) = *device {
                        // SAFETY: The hook's owner calls `detach_device`, which reaches every
                        // listed stream, before the hook becomes invalid. This stream is listed
                        // below, under this hold of `setup`, which `detach_device` takes; if the
                        // listing fails, the stream is dropped here, its timer (the hook's only
                        // caller) never started: no ioctl can reach a file `open` did not return.
                        unsafe { stream.attach_device(hook) };
                    }
                    match self.push(stream.clone()) {
                        Ok(()) => return Ok(file),
                        Err(e) => {
                            drop(device);
                            // Undo the attach: the file and the stream go together.
                            stream.detach(&file);
                            return Err(e);
                        }
                    }
                }
                // The stream was forgotten, or another is listed for this user now.
                _ => {}
            }
            drop(device);
            stream.detach(&file);
        }
    }

    /// The stream of `owner`, if listed.
    fn find(&self, owner: u32) -> Option<Arc<Stream>> {
        self.list.lock().iter().find(|s| s.owner == owner).cloned()
    }

    /// Lists `stream`: the list grows outside its lock (a sleeping allocation); only callers
    /// holding `setup` change it, so it cannot change meanwhile.
    fn push(&self, stream: Arc<Stream>) -> Result {
        let (len, cap) = {
            let list = self.list.lock();
            (list.len(), list.capacity())
        };
        let old = if len == cap {
            let want = len.checked_add(1).ok_or(ENOMEM)?.saturating_mul(2);
            let mut bigger = KVec::with_capacity(want, GFP_KERNEL)?;
            let mut list = self.list.lock();
            // Within capacity: no allocation, no failure.
            bigger.extend_from_slice(&list, GFP_ATOMIC)?;
            bigger.push(stream, GFP_ATOMIC)?;
            core::mem::replace(&mut *list, bigger)
        } else {
            self.list.lock().push(stream, GFP_ATOMIC)?;
            KVec::new()
        };
        // The old list (and its references) is freed outside the lock.
        drop(old);
        Ok(())
    }

    /// Closes `file`: detaches it from its stream, and forgets the stream if that was its last
    /// file.
    pub(crate) fn close(&self, file: &OpenFile) {
        let stream = file.stream.clone();
        stream.detach(file);
        // Another file's close will forget it (without `setup`: most closes take no lock that
        // other users' opens and closes take).
        if stream.has_files() {
            return;
        }
        let setup = self.setup.lock();
        // Under `setup` no open can attach a file meanwhile.
        if stream.has_files() {
            return;
        }
        let gone = {
            let mut list = self.list.lock();
            let at = list.iter().position(|s| Arc::ptr_eq(s, &stream));
            at.and_then(|i| list.remove(i).ok())
        };
        drop(setup);
        if let Some(s) = &gone {
            // Unlisted, no file, its timer stopped: nothing can queue its work item any more,
            // but a device interrupt that found it listed just before may have (periods owed
            // from before the last close's reset). The unload flushes only listed streams: this
            // flush is the last one.
            s.flush_work();
        }
        // Dropped outside the list's lock (the stream's own drop may wait for its timer).
        drop(gone);
    }

    /// The `i`-th listed stream (by index: no allocation, and no lock held while the caller
    /// works on it).
    fn nth(&self, i: usize) -> Option<Arc<Stream>> {
        self.list.lock().get(i).cloned()
    }

    /// Calls `f` on every listed stream; with `setup` held (the list cannot change), from
    /// process context.
    fn for_each_locked(&self, mut f: impl FnMut(&Arc<Stream>)) {
        let mut i = 0;
        while let Some(s) = self.nth(i) {
            f(&s);
            i += 1;
        }
    }

    /// The streams listed now, from process context. Without `setup`, which the device's removal
    /// holds through its delay point: debugfs must answer (and release the point) meanwhile.
    pub(crate) fn snapshot(&self) -> Result<KVec<Arc<Stream>>> {
        loop {
            let len = self.list.lock().len();
            let mut all = KVec::with_capacity(len, GFP_KERNEL)?;
            let list = self.list.lock();
            if list.len() > all.capacity() {
                // Grew meanwhile: again, with room for the new length.
                continue;
            }
            for s in list.iter() {
                // Within capacity: no allocation, no failure.
                all.push(s.clone(), GFP_ATOMIC)?;
            }
            return Ok(all);
        }
    }

    /// Makes a bound device the period source of every stream, present and future.
    ///
    /// # Safety
    ///
    /// As [`Stream::attach_device`]: `hook` must stay sound to call until
    /// [`Streams::detach_device`] has returned.
    pub(crate) unsafe fn attach_device(&self, hook: DeviceHook) {
        let mut device = self.setup.lock();
        *device = Some(hook);
        self.for_each_locked(|s| {
            // SAFETY: The caller's contract; `detach_device` reaches every listed stream.
            unsafe { s.attach_device(hook) }
        });
    }

    /// The device is going away: every stream stops using it (a running one stops).
    pub(crate) fn detach_device(&self) {
        let mut device = self.setup.lock();
        *device = None;
        self.for_each_locked(|s| s.detach_device());
    }

    /// The device's period interrupt, in hard-IRQ context: each stream emits the periods it is
    /// owed (none, unless its own timer asked for them).
    pub(crate) fn device_interrupt(&self) {
        let list = self.list.lock();
        for s in list.iter() {
            s.device_interrupt();
        }
    }
}
