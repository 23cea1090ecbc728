// SPDX-License-Identifier: GPL-2.0
//! The fake PCM stream: its state machine, the period timer, and the delivery work item.
//!
//! Event flow: a trigger ioctl or the hrtimer *emits* an event (sequence number and timestamp
//! assigned under `Stream::inner`) into the `pending` ring; the work item `Stream::run` pops events
//! in order, up to 32 at a time, and *delivers* the batch to every open file (a `read()` record
//! each) and to every registered listener (a queued signal each; the listener's thread is
//! resolved once per batch). Delivery happens only in the work item, which the workqueue never
//! runs twice at once, so each listener's signals leave in sequence order; no driver lock is held
//! across `send_sig_info`. The work item runs on the BH workqueue (softirq context, on the CPU
//! whose interrupt queued it, see `softirq_queue`), or, for a delivery too big for softirq, in
//! its thread run (`WorkItem<1>`, see `Stage`); either way delivery never sleeps and never
//! allocates: the locks it takes disable interrupts (or bottom halves, for the file list it
//! takes a reference to in O(1): see `Stream::files`). Ioctls that emit events wait until
//! the work item has delivered them, so when an ioctl returns, its signals are queued.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::{
    bh::{new_spinlock_bh, SpinLockBh},
    compat::{self, new_spinlock_irq, SpinLockIrq},
    event::Event,
    inbox::{add_stats, Inbox},
    live::{self, Live},
    ring::Ring,
    signal::SenderCred,
    uapi::{self, DelayPoint, EventKind, EventSource, ListenerStats, State, Trigger},
    wait::KillableWait,
};
use kernel::{
    alloc::{flags::__GFP_NOWARN, Flags},
    bindings, new_condvar, new_mutex,
    prelude::*,
    sync::{Arc, ArcBorrow, CondVar, CondVarTimeoutResult, Mutex},
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
            HrTimerRestart, RelativeMode,
        },
        Delta, Instant, Monotonic,
    },
    workqueue::{self, impl_has_work, new_work, Work, WorkItem},
};

/// Capacity of the stream's queue of emitted, not yet delivered events.
const PENDING_CAP: usize = uapi::PENDING_LEN as usize;
/// The timer stops with an xrun rather than fill more than this much of `pending`, so that
/// ioctls always find room for their events.
const PENDING_TIMER_LIMIT: usize = PENDING_CAP / 2;
/// Events the ioctls may have in `pending` at once: the last slot is the timer's, for the Xrun
/// of a period that finds the queue at the timer's limit whatever the ioctls queued, so that no
/// state is entered without its event. (The module review found that Xrun dropped in silence
/// when ioctls had filled the queue while delivery lagged.)
const PENDING_IOCTL_LIMIT: usize = uapi::PENDING_IOCTL_MAX as usize;
const _: () =
    assert!(PENDING_IOCTL_LIMIT < PENDING_CAP && PENDING_TIMER_LIMIT < PENDING_IOCTL_LIMIT);
/// Most open files of one user (one stream): `uapi::FILES_PER_USER_MAX`, or the lower cap of
/// the test hook `test_files_per_user_max` (so that a test reaches it without opening 16,384
/// files, which takes minutes on the debug kernel).
pub(crate) fn files_max() -> usize {
    let cap = uapi::FILES_PER_USER_MAX;
    let test = crate::compat::param(&crate::module_parameters::test_files_per_user_max);
    (if test == 0 { cap } else { test.min(cap) }) as usize
}
/// Events the work item takes from `pending` at a time: per listener, the thread is resolved
/// once per batch.
const DELIVERY_BATCH: usize = 32;
// A run ends on a batch boundary.
const _: () = assert!(uapi::DELIVERY_RUN_MAX as usize % DELIVERY_BATCH == 0);
/// Most periods one timer expiry accounts for (after a long stall); past it the periods are lost,
/// and that is an xrun.
const MAX_OVERRUNS: u64 = uapi::STALL_PERIODS_MAX as u64;

/// Whether an expiry that finds `elapsed` periods passed lost some: up to [`MAX_OVERRUNS`] are
/// accounted for, more are an xrun.
fn stall_is_xrun(elapsed: u64) -> bool {
    elapsed > MAX_OVERRUNS
}

/// One open file of `/dev/pcmsig`: the stream its ioctls drive, and what delivery gives it
/// ([`Inbox`], which it derefs to: records for `read()`, signals for its listener).
#[pin_data]
pub(crate) struct OpenFile {
    pub(crate) stream: Arc<Stream>,
    #[pin]
    inbox: Inbox,
}

impl OpenFile {
    /// Per-open memory is charged to the opener's memory cgroup (`__GFP_ACCOUNT`).
    pub(crate) fn new(stream: Arc<Stream>, opener: SenderCred) -> Result<Arc<Self>> {
        let inbox = Inbox::new(opener)?;
        Arc::pin_init(
            pin_init!(Self { stream, inbox <- inbox }),
            GFP_KERNEL_ACCOUNT,
        )
    }
}

impl core::ops::Deref for OpenFile {
    type Target = Inbox;

    fn deref(&self) -> &Inbox {
        &self.inbox
    }
}

/// How the timer makes a bound device raise its period interrupt.
#[derive(Clone, Copy)]
pub(crate) struct DeviceHook {
    ctx: *const (),
    raise: unsafe fn(*const ()),
}

// SAFETY: A stream uses its copy of the hook only under its `inner`, and the hook's owner removes
// it from every stream (`Streams::detach_device`, each under its `inner`) before `ctx` becomes
// invalid; `raise` is safe to call from any CPU.
unsafe impl Send for DeviceHook {}

impl DeviceHook {
    /// A hook calling `raise(ctx)`; see [`Stream::attach_device`] for the contract.
    pub(crate) fn new(ctx: *const (), raise: unsafe fn(*const ())) -> Self {
        Self { ctx, raise }
    }
}

/// State of the stream, under `Stream::inner`.
pub(crate) struct StreamInner {
    pub(crate) state: State,
    pub(crate) config: uapi::Config,
    /// Periods elapsed since the last start.
    pub(crate) periods: u64,
    /// Events emitted since load.
    pub(crate) events: u64,
    next_seq: u64,
    delivered_seq: u64,
    pending: Ring<Event, PENDING_CAP>,
    timer: Option<ArcHrTimerHandle<Stream>>,
    pub(crate) totals: ListenerStats,
    /// The most events one run of the delivery work item has offered (at most
    /// `uapi::DELIVERY_RUN_MAX`; debugfs `delivery_run_max`).
    pub(crate) delivery_run_max: u32,
    /// Whether the thread run owns delivery (see `Stage`): set by a softirq run
    /// that hands the stream over, cleared by the thread run in the same critical section in
    /// which it finds `pending` empty, so that an event emitted meanwhile is delivered by one
    /// run or the other, never by both and never by neither.
    in_thread: bool,
    /// Softirq runs that handed delivery over to the thread run (debugfs `delivery_handoffs`).
    pub(crate) delivery_handoffs: u64,
    /// Softirq runs that found the thread run owning delivery and left the stream to it
    /// (debugfs `delivery_softirq_yields`).
    pub(crate) delivery_softirq_yields: u64,
    /// The bound device that produces period interrupts, if any.
    device: Option<DeviceHook>,
    /// Periods the device has been asked for and whose interrupt has not been handled yet, and
    /// the boundary stamp of the first of them.
    owed: u64,
    owed_stamp: u64,
}

impl StreamInner {
    /// A stream in `Setup`, its first event numbered 1 (or `test_first_seq`, a test hook for the
    /// 24-bit wrap of `si_int`'s sequence without 2^24 events first).
    fn new() -> Result<Self> {
        let first = u64::from(crate::compat::param(
            &crate::module_parameters::test_first_seq,
        ))
        .max(1);
        Ok(Self {
            state: State::Setup,
            config: uapi::Config::default(),
            periods: 0,
            events: 0,
            next_seq: first,
            delivered_seq: first - 1,
            pending: Ring::new(GFP_KERNEL_ACCOUNT)?,
            timer: None,
            totals: ListenerStats::default(),
            delivery_run_max: 0,
            in_thread: false,
            delivery_handoffs: 0,
            delivery_softirq_yields: 0,
            device: None,
            owed: 0,
            owed_stamp: 0,
        })
    }

    /// Accounts for `count` elapsed periods, the first stamped `first_stamp` and each next one a
    /// period later, while the stream runs; returns `false` once it does not (any more).
    fn elapse(&mut self, source: EventSource, first_stamp: u64, count: u64) -> bool {
        let period_ns = u64::from(self.config.period_us).saturating_mul(1000);
        let mut stamp = first_stamp;
        for _ in 0..count {
            if !matches!(self.state, State::Running | State::Draining)
                || !self.period(source, stamp)
            {
                return false;
            }
            stamp = stamp.saturating_add(period_ns);
        }
        true
    }

    /// Accounts for one elapsed period stamped `stamp`; returns `false` when the stream stops.
    fn period(&mut self, source: EventSource, stamp: u64) -> bool {
        if self.pending.len() >= PENDING_TIMER_LIMIT {
            // Delivery cannot keep up: an xrun, as when a ring buffer overflows. The ioctls
            // left room for it (`PENDING_IOCTL_LIMIT`), and the timer adds nothing past its
            // limit, so it cannot fail.
            self.state = State::Xrun;
            let _ = self.emit(EventKind::Xrun, source);
            return false;
        }
        let _ = self.emit_at(EventKind::PeriodElapsed, source, stamp);
        self.periods = self.periods.wrapping_add(1);
        let limit = u64::from(self.config.periods);
        if self.state == State::Draining || (limit != 0 && self.periods >= limit) {
            self.state = State::Stopped;
            let _ = self.emit(EventKind::Stopped, source);
            return false;
        }
        true
    }

    /// Emits one event; returns its sequence number, or `EAGAIN` if the pending queue is full.
    fn emit(&mut self, kind: EventKind, source: EventSource) -> Result<u64> {
        self.emit_at(kind, source, now_ns())
    }

    /// Emits one event of an ioctl: `EAGAIN` once the ioctls' share of the pending queue
    /// ([`PENDING_IOCTL_LIMIT`]) is full, so that the timer's state events always find room.
    fn emit_ioctl(&mut self, kind: EventKind) -> Result<u64> {
        if self.pending.len() >= PENDING_IOCTL_LIMIT {
            return Err(EAGAIN);
        }
        self.emit(kind, EventSource::Ioctl)
    }

    /// Emits one event that happened at `timestamp_ns` (`CLOCK_MONOTONIC`).
    fn emit_at(&mut self, kind: EventKind, source: EventSource, timestamp_ns: u64) -> Result<u64> {
        let seq = self.next_seq;
        let ev = Event {
            kind: kind as u32,
            source: source as u32,
            seq,
            timestamp_ns,
        };
        if !self.pending.push(ev) {
            return Err(EAGAIN);
        }
        self.next_seq = seq.wrapping_add(1);
        self.events = self.events.wrapping_add(1);
        Ok(seq)
    }
}

/// What a trigger does to the period timer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TimerAction {
    Start,
    Stop,
    Keep,
}

/// The state machine: what `cmd` does in `state` (the next state, the event it emits, the timer
/// action), or `None` when the trigger is refused (`EBADFD`). Modelled on ALSA's PCM triggers.
pub(crate) fn transition(cmd: Trigger, state: State) -> Option<(State, EventKind, TimerAction)> {
    use State::*;
    Some(match (cmd, state) {
        (Trigger::Start, Prepared | Stopped) => (Running, EventKind::Started, TimerAction::Start),
        (Trigger::Stop, Running | Paused | Draining | Xrun) => {
            (Stopped, EventKind::Stopped, TimerAction::Stop)
        }
        (Trigger::PausePush, Running) => (Paused, EventKind::Paused, TimerAction::Stop),
        (Trigger::PauseRelease, Paused) => (Running, EventKind::Resumed, TimerAction::Start),
        (Trigger::Drain, Running) => (Draining, EventKind::Draining, TimerAction::Keep),
        (Trigger::Xrun, Running | Paused | Draining) => (Xrun, EventKind::Xrun, TimerAction::Stop),
        _ => return None,
    })
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
fn now_ns() -> u64 {
    // SAFETY: `ktime_get` reads the monotonic clock; callable in any context.
    let t = unsafe { bindings::ktime_get() };
    u64::try_from(t).unwrap_or(0)
}

/// The `CLOCK_MONOTONIC` nanoseconds of `t`: the very value the clock gave, not one derived
/// from a second reading (a pair of readings drifts apart when the CPU is taken between them:
/// a vCPU paused for 41 ms stamped every period 41 ms late).
fn instant_ns(t: Instant<Monotonic>) -> u64 {
    // SAFETY: `Instant<C>` is `#[repr(transparent)]` over a `ktime_t` (its other field is a
    // zero-sized `PhantomData`), so its bits are that `ktime_t`; `transmute` checks the sizes.
    let ns: bindings::ktime_t = unsafe { core::mem::transmute::<Instant<Monotonic>, _>(t) };
    u64::try_from(ns).unwrap_or(0)
}

/// A stream's open files, in the order delivery offers them: shared by every reader of
/// `Stream::files`, and never changed once built.
type FileList = Arc<KVVec<Arc<OpenFile>>>;

/// The next [`FileList`] of an open or a close: allocated whole in process context (it may
/// sleep), then filled without allocating.
struct FileListBuilder {
    files: KVVec<Arc<OpenFile>>,
    flags: Flags,
}

impl FileListBuilder {
    /// Room for `n` files, from kvmalloc (`flags` | `__GFP_NOWARN`: a failure is an error, never
    /// a page-allocator warning).
    fn with_capacity(n: usize, flags: Flags) -> Result<Self> {
        let flags = flags | __GFP_NOWARN;
        Ok(Self {
            files: KVVec::with_capacity(n, flags)?,
            flags,
        })
    }

    /// Adds the files of `list` that are not closed, in their order.
    fn live_from(self, list: &[Arc<OpenFile>]) -> Result<Self> {
        list.iter()
            .filter(|f| !f.is_closed())
            .try_fold(self, |b, f| b.with(f.clone()))
    }

    /// Adds `file` last.
    fn with(mut self, file: Arc<OpenFile>) -> Result<Self> {
        self.files.push(file, self.flags)?;
        Ok(self)
    }

    fn build(self) -> Result<FileList> {
        Ok(Arc::new(self.files, self.flags)?)
    }
}

/// One user's stream, shared by that user's open files (see `users.rs`).
#[pin_data]
pub(crate) struct Stream {
    /// The effective uid (global `kuid_t` value) of the user whose opens drive this stream.
    pub(crate) owner: u32,
    #[pin]
    pub(crate) inner: SpinLockIrq<StreamInner>,
    /// Where emitting ioctls wait for their events' delivery.
    #[pin]
    delivered: KillableWait,
    /// Serialises the control operations (configure, trigger, inject), the last close's reset
    /// and the device's removal: two of them racing between a state change and its timer
    /// start/stop could otherwise leave a Running stream without its timer. Only the timer
    /// start/stop is done under it besides the state change, and never a wait for delivery, so
    /// that no caller waits for it (uninterruptibly) longer than those steps take. Taken before
    /// `files` and `inner`, never by the timer or the work item.
    #[pin]
    control: Mutex<()>,
    /// Every open file, registered or not, as one shared list ([`FileList`]; `None`: no file
    /// open), replaced whole and never changed in place. A reader (the delivery work item in
    /// softirq, the emitter check, a close) takes a reference under this lock and walks the
    /// list with no lock held, so the lock is held for a pointer copy whatever the user's file
    /// count (review finding 2): no interrupt, bottom half or other user waits for a walk.
    /// Never taken by a hard-IRQ handler or under `inner`; bottom halves are off while it is
    /// held (`bh.rs`), as the work item takes it in softirq.
    #[pin]
    files: SpinLockBh<Option<FileList>>,
    /// Serialises the writers of `files` (open and close, in process context): each builds the
    /// next list from the current one outside `files`, with allocations that may sleep.
    #[pin]
    files_update: Mutex<()>,
    /// Test hook (`test_delivery_delay_ms`): whether the delivery delay was released early
    /// (`/sys/kernel/debug/pcmsig/release_delivery`), and where the delayed work item waits.
    #[pin]
    hold: Mutex<bool>,
    #[pin]
    hold_released: CondVar,
    #[pin]
    timer: HrTimer<Stream>,
    /// The delivery work item's softirq run (`WorkItem<0>`, on `softirq_queue`).
    #[pin]
    work: Work<Stream, 0>,
    /// Its thread run (`WorkItem<1>`, on `thread_queue`), for deliveries too big for
    /// softirq.
    #[pin]
    thread_work: Work<Stream, 1>,
    /// How many of `files` have a listener: counted where a file's listener comes and goes
    /// (REGISTER over none, UNREGISTER, close), under that file's lock, so that GET_STATS and
    /// debugfs need not walk `files` (0.3 µs a file: 3 ms at 10,000 files, measured).
    listeners: AtomicU32,
    _live: Live,
}

impl_has_work! {
    impl HasWork<Self, 0> for Stream { self.work }
    impl HasWork<Self, 1> for Stream { self.thread_work }
}

kernel::impl_has_hr_timer! {
    impl HasHrTimer<Self> for Stream {
        mode: RelativeMode<Monotonic>, field: self.timer
    }
}

impl Stream {
    /// A new stream of user `owner`, charged to the opener creating it (`__GFP_ACCOUNT`).
    pub(crate) fn new(owner: u32) -> Result<Arc<Self>> {
        let inner = StreamInner::new()?;
        Arc::pin_init(
            pin_init!(Self {
                owner,
                inner <- new_spinlock_irq!(inner, "pcmsig::Stream::inner"),
                delivered <- KillableWait::new(
                    c"pcmsig::Stream::delivered",
                    kernel::static_lock_class!()
                ),
                control <- new_mutex!((), "pcmsig::Stream::control"),
                files <- new_spinlock_bh!(None, "pcmsig::Stream::files"),
                files_update <- new_mutex!((), "pcmsig::Stream::files_update"),
                hold <- new_mutex!(false, "pcmsig::Stream::hold"),
                hold_released <- new_condvar!("pcmsig::Stream::hold_released"),
                timer <- HrTimer::new(),
                work <- new_work!("pcmsig::Stream::work"),
                thread_work <- new_work!("pcmsig::Stream::thread_work"),
                listeners: AtomicU32::new(0),
                _live: Live::new(&live::STREAMS),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Adds an open file to the delivery list: `EMFILE` if the user has
    /// [`uapi::FILES_PER_USER_MAX`] open already.
    pub(crate) fn attach(&self, file: Arc<OpenFile>) -> Result {
        let _update = self.files_update.lock();
        let now = self.file_list();
        let open = now.as_deref().map_or(&[][..], |l| &l[..]);
        let live = open.iter().filter(|f| !f.is_closed()).count();
        if live >= files_max() {
            return Err(EMFILE);
        }
        // The next list: the live files in their order, then this one. Charged to the opener,
        // as the rest of per-open memory. At most `files_max()` entries (128 KiB), from
        // kvmalloc: never a high-order allocation the page allocator warns about, and a failure
        // is a clean `ENOMEM` that changes nothing.
        let next = FileListBuilder::with_capacity(live.saturating_add(1), GFP_KERNEL_ACCOUNT)?
            .live_from(open)?
            .with(file)?
            .build()?;
        let old = self.files.lock().replace(next);
        // The old list (and its references: none the last, `next` holds each live file)
        // goes after the lock.
        drop(old);
        Ok(())
    }

    /// The open files now: a reference to the current list, taken in O(1) under `files`.
    fn file_list(&self) -> Option<FileList> {
        self.files.lock().clone()
    }

    /// Whether any file is open on this stream.
    pub(crate) fn has_files(&self) -> bool {
        self.files.lock().is_some()
    }

    /// Listeners registered now, over all open files (a counter: no walk of `files`).
    pub(crate) fn listeners(&self) -> u32 {
        self.listeners.load(Ordering::Relaxed)
    }

    /// A file of this stream gained (`true`) or lost its listener; called under that file's
    /// lock, where its `listener` changes.
    pub(crate) fn count_listener(&self, added: bool) {
        let _ = self
            .listeners
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                if added {
                    n.checked_add(1)
                } else {
                    n.checked_sub(1)
                }
            });
    }

    /// Removes an open file. On the last close the stream stops, its timer is cancelled, pending
    /// work is flushed and it returns to `Setup`.
    pub(crate) fn detach(self: &Arc<Self>, file: &OpenFile) {
        let (last, old) = {
            let _update = self.files_update.lock();
            // Closed from now on: delivery skips it, and a list that keeps it (below) holds it
            // as a tombstone until the next open or close rebuilds the list.
            file.closed.store(true, Ordering::Release);
            let now = self.file_list();
            let open = now.as_deref().map_or(&[][..], |l| &l[..]);
            let live = open.iter().filter(|f| !f.is_closed()).count();
            // The next list: the others in their order (the order in which delivery offers
            // them, so a user's shared signal quota is spent the same way), or none. If it
            // cannot be allocated, the current one stays, with this file closed in it: a close
            // never fails, and never delivers or walks under `files`. Charged to the closer, as
            // the opens' lists are to the openers. (Closing n files one by one copies O(n^2)
            // entries in all: the closer's own time, in process context, under its stream's
            // `files_update` only, and at most `FILES_PER_USER_MAX` files.)
            let next = if live == 0 {
                Some(None)
            } else {
                FileListBuilder::with_capacity(live, GFP_KERNEL_ACCOUNT)
                    .and_then(|b| b.live_from(open))
                    .and_then(FileListBuilder::build)
                    .ok()
                    .map(Some)
            };
            let old = next.map(|next| core::mem::replace(&mut *self.files.lock(), next));
            // The old list's references go after the lock (never the last one of this file: the
            // caller holds it).
            (live == 0, (now, old))
        };
        drop(old);
        let listeners = {
            let mut inner = file.inner.lock();
            let listener = inner.listener.take();
            if listener.is_some() {
                self.count_listener(false);
            }
            (listener, inner.last.take())
        };
        if listeners.0.is_some() || listeners.1.is_some() {
            // A delivery that took this file's listener before it was removed may still be
            // sending: when close() returns, no signal of this file is in flight, and the last
            // references to its listeners are dropped here, in process context (see
            // `Listener`). A file without listeners holds nothing whose release may sleep: the
            // work item may drop the last reference to it.
            self.flush_work();
        }
        drop(listeners);
        if !last {
            return;
        }
        crate::delay::sleep_at(DelayPoint::LastCloseBeforeReset);
        let _control = self.control.lock();
        // A file opened since the decision above keeps the stream as it is.
        if self.has_files() {
            return;
        }
        {
            self.stop_timer();
            self.flush_work();
            let mut inner = self.inner.lock();
            inner.state = State::Setup;
            inner.periods = 0;
            inner.pending.clear();
            inner.delivered_seq = inner.next_seq.wrapping_sub(1);
        }
        // A waiter (none can emit now, but one may still sleep) sees the moved `delivered_seq`.
        self.delivered.wake_all();
    }

    /// Makes a bound device the source of period events: from now on the timer calls
    /// `hook.raise` each period and the device's interrupt handler calls
    /// [`Stream::device_interrupt`].
    ///
    /// # Safety
    ///
    /// `hook.raise(hook.ctx)` must be sound to call, from any CPU and in hard-IRQ context, until
    /// [`Stream::detach_device`] has returned; the caller must call it before `hook.ctx` becomes
    /// invalid.
    pub(crate) unsafe fn attach_device(&self, hook: DeviceHook) {
        let mut inner = self.inner.lock();
        inner.device = Some(hook);
        inner.owed = 0;
    }

    /// The device is going away: remove its hook, stop a running stream (a `Stopped` event),
    /// cancel the timer. Periods then come from the timer again.
    pub(crate) fn detach_device(self: &Arc<Self>) {
        // The state change and the timer cancel as one step (see `control`).
        let _control = self.control.lock();
        let stopped = {
            let mut inner = self.inner.lock();
            inner.device = None;
            inner.owed = 0;
            if matches!(
                inner.state,
                State::Running | State::Paused | State::Draining
            ) {
                inner.state = State::Stopped;
                let _ = inner.emit(EventKind::Stopped, EventSource::Device);
                true
            } else {
                false
            }
        };
        crate::delay::sleep_at(DelayPoint::DetachDeviceBeforeTimerStop);
        self.stop_timer();
        if stopped {
            Self::kick(self.clone());
        }
    }

    /// The device's period interrupt: emits the periods it was asked for (several if
    /// interrupts coalesced). Called in hard-IRQ context.
    pub(crate) fn device_interrupt(self: &Arc<Self>) {
        {
            let mut inner = self.inner.lock();
            let owed = core::mem::take(&mut inner.owed);
            if owed == 0 {
                // Another stream's interrupt (they share the device), or a coalesced one.
                return;
            }
            let first = inner.owed_stamp;
            inner.elapse(EventSource::Device, first, owed);
        }
        Self::kick(self.clone());
    }

    /// Cancels the period timer and waits for a running callback to finish.
    fn stop_timer(&self) {
        let handle = self.inner.lock().timer.take();
        // Dropping the handle cancels the timer; done outside the lock the callback takes.
        drop(handle);
    }

    /// Waits until the delivery work item is idle: its softirq run, then the thread run that
    /// one may have queued (the thread run queues no softirq run).
    pub(crate) fn flush_work(&self) {
        // SAFETY: `self.work` and `self.thread_work` are initialised work_structs embedded in
        // this pinned `Stream`, which outlives this call. `flush_work` sleeps: callers are in
        // process context and hold no spinlock; some hold `control` or `Streams::setup`
        // (mutexes), which the work items never take, so waiting for them under them cannot
        // deadlock.
        unsafe {
            bindings::flush_work(Work::raw_get(&self.work));
            bindings::flush_work(Work::raw_get(&self.thread_work));
        }
    }

    /// Queues the delivery work item's softirq run (a no-op if it is already queued).
    fn kick(stream: Arc<Self>) {
        // `Err` means the work is queued already and will see our event: nothing to do.
        let _ = softirq_queue().enqueue::<_, 0>(stream);
    }

    /// Queues the delivery work item's thread run, which owns delivery (`in_thread`) until it
    /// finds nothing pending.
    fn kick_thread(stream: Arc<Self>) {
        // `Err`: queued already, by this run itself (only the owner queues it).
        let _ = thread_queue().enqueue::<_, 1>(stream);
    }

    /// Waits until the event with sequence number `seq` has been delivered, so that when an
    /// emitting ioctl returns 0 its signals are queued. The wait is killable: a fatal signal ends
    /// it (the events are emitted, and their delivery completes in the background); another
    /// signal waits, and its handler runs once the ioctl returns.
    fn wait_delivered(self: &Arc<Self>, seq: u64) -> Result {
        Self::kick(self.clone());
        self.delivered
            .wait_until(|| self.inner.lock().delivered_seq >= seq)
    }

    /// Emits `count` events of `kind` from an ioctl, without changing the state, and waits for
    /// their delivery. All or nothing: `EAGAIN` and no event when the pending queue lacks room.
    pub(crate) fn inject(self: &Arc<Self>, kind: EventKind, count: u32) -> Result {
        if count == 0 || count > uapi::BURST_MAX {
            return Err(EINVAL);
        }
        let last = {
            let _control = self.control.lock();
            self.check_emitter()?;
            let mut inner = self.inner.lock();
            let room = PENDING_IOCTL_LIMIT.saturating_sub(inner.pending.len());
            if usize::try_from(count).map_or(true, |c| c > room) {
                return Err(EAGAIN);
            }
            let mut last = 0;
            for _ in 0..count {
                last = inner.emit_ioctl(kind)?;
            }
            last
        };
        self.wait_delivered(last)
    }

    /// The rule for ioctls that emit events (configure, trigger, inject): the caller (`current`:
    /// they run in the ioctl's context) must be allowed to signal every registered listener (the
    /// same rule as the send check), or the stream could be used to fill another user's signal
    /// queue. `EPERM` otherwise, and nothing is emitted. A listener that registers later has
    /// chosen to receive the stream as it is. Called with `control` held, so no other emitter
    /// runs meanwhile.
    fn check_emitter(&self) -> Result {
        // Walked with no lock held: the list's reference keeps every file of it alive.
        let files = self.file_list();
        crate::delay::spin_at(DelayPoint::FilesLocked);
        // Read once, and only when someone listens.
        let mut caller = None;
        for f in files.iter().flat_map(|l| l.iter()) {
            // Checked in place, not on a clone: a clone dropped here, under the file's lock,
            // could be the last reference if REGISTER or close took the listener meanwhile (the
            // release rule of `Listener`; found by its `might_sleep` on the debug kernel).
            let inner = f.inner.lock();
            if let Some(l) = &inner.listener {
                let caller = caller.get_or_insert_with(SenderCred::of_current);
                if !l.thread.may_be_signalled_by(caller) {
                    return Err(EPERM);
                }
            }
        }
        Ok(())
    }

    /// Configures (prepares) the stream.
    pub(crate) fn configure(self: &Arc<Self>, config: uapi::Config) -> Result {
        if config.period_us < uapi::PERIOD_US_MIN || config.period_us > uapi::PERIOD_US_MAX {
            return Err(EINVAL);
        }
        let seq = {
            let _control = self.control.lock();
            self.check_emitter()?;
            let mut inner = self.inner.lock();
            match inner.state {
                State::Running | State::Paused | State::Draining => return Err(EBUSY),
                State::Setup | State::Prepared | State::Stopped | State::Xrun => {}
            }
            let seq = inner.emit_ioctl(EventKind::Prepared)?;
            inner.config = config;
            inner.state = State::Prepared;
            inner.periods = 0;
            seq
        };
        self.wait_delivered(seq)
    }

    /// Applies a trigger command.
    pub(crate) fn trigger(self: &Arc<Self>, cmd: Trigger) -> Result {
        let seq = {
            // State change and timer start/stop as one step (see `control`).
            let _control = self.control.lock();
            self.check_emitter()?;
            let (seq, timer) = {
                let mut inner = self.inner.lock();
                let (next, kind, timer) =
                    transition(cmd, inner.state).ok_or_else(compat::ebadfd)?;
                let seq = inner.emit_ioctl(kind)?;
                inner.state = next;
                if cmd == Trigger::Start {
                    inner.periods = 0;
                }
                (seq, timer)
            };
            match timer {
                TimerAction::Stop => self.stop_timer(),
                TimerAction::Start => self.start_timer(),
                TimerAction::Keep => {}
            }
            seq
        };
        self.wait_delivered(seq)
    }

    fn start_timer(self: &Arc<Self>) {
        let (old, period_us) = {
            let mut inner = self.inner.lock();
            (inner.timer.take(), inner.config.period_us)
        };
        // Cancels a stale timer outside the lock its callback takes.
        drop(old);
        // Periods the device still owes (their interrupt not yet come) are the stopped run's:
        // a late interrupt must not emit them into this one. No timer runs now to add more.
        self.inner.lock().owed = 0;
        let handle = self.clone().start(Delta::from_micros(i64::from(period_us)));
        let old = self.inner.lock().timer.replace(handle);
        drop(old);
    }

    /// Delivers pending events, in order, to every open file: at most
    /// `uapi::DELIVERY_RUN_MAX` of them, so that one run of the work item is bounded however
    /// fast events come; in softirq (with other users' deliveries waiting behind it on its CPU)
    /// also at most `uapi::SOFTIRQ_OFFERS_MAX` offers, past which it hands the stream to the
    /// thread run. Says how the run ended.
    fn deliver_pending(&self, stage: Stage) -> RunEnd {
        let mut offered = 0u32;
        // The offers this run may still make in softirq.
        let mut left = uapi::SOFTIRQ_OFFERS_MAX as usize;
        loop {
            if offered >= uapi::DELIVERY_RUN_MAX {
                return RunEnd::More;
            }
            let mut room = DELIVERY_BATCH;
            // Offers per event, as counted against `left` (0 in the thread run).
            let mut per_event = 0;
            if stage == Stage::Softirq {
                // The files now (closed ones included: an estimate, taken in O(1); a file opened
                // meanwhile counts from the next batch).
                per_event = self.file_list().map_or(0, |l| l.len()).max(1);
                room = room.min(left / per_event);
            }
            let mut batch = [Event::default(); DELIVERY_BATCH];
            let mut n = 0;
            {
                let mut inner = self.inner.lock();
                if room == 0 {
                    if inner.pending.is_empty() {
                        return RunEnd::Empty;
                    }
                    // Under the lock that the softirq run reads it under: from here on the thread
                    // run delivers, and a softirq run queued meanwhile leaves it alone.
                    inner.in_thread = true;
                    inner.delivery_handoffs = inner.delivery_handoffs.wrapping_add(1);
                    return RunEnd::HandOff;
                }
                for slot in batch.iter_mut().take(room) {
                    match inner.pending.pop() {
                        Some(ev) => {
                            *slot = ev;
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 {
                    // Nothing pending, seen in the critical section that gives delivery back
                    // to softirq: an event emitted after it queues a softirq run that delivers.
                    if stage == Stage::Thread {
                        inner.in_thread = false;
                    }
                    return RunEnd::Empty;
                }
            }
            if stage == Stage::Thread {
                // Process context, no lock held.
                crate::delay::sleep_at(DelayPoint::ThreadRunBatch);
            }
            // The open files, taken after popping, so that a file opened before an event was
            // emitted is in the list; no lock is held while signalling, and nothing allocates.
            let files = self.file_list();
            let files = files.as_deref().map_or(&[][..], |l| &l[..]);
            self.deliver_batch(&batch[..n], files);
            // `n` is at most `DELIVERY_BATCH`.
            offered = offered.saturating_add(n as u32);
            // `n <= room <= left / per_event`: neither wraps.
            left = left.wrapping_sub(n.wrapping_mul(per_event));
            let mut inner = self.inner.lock();
            inner.delivery_run_max = inner.delivery_run_max.max(offered);
        }
    }

    fn deliver_batch(&self, batch: &[Event], files: &[Arc<OpenFile>]) {
        let mut totals = ListenerStats::default();
        let mut full = [false; DELIVERY_BATCH];
        for f in files.iter().filter(|f| !f.is_closed()) {
            f.deliver_all(batch, &mut totals, &mut full);
        }
        {
            let mut inner = self.inner.lock();
            add_stats(&mut inner.totals, &totals);
            if let Some(last) = batch.last() {
                inner.delivered_seq = last.seq;
            }
            // The xrun rule: a period that a listener could not take while the stream runs
            // means that listener fell behind, as a full ring buffer does in ALSA.
            let running = matches!(inner.state, State::Running | State::Draining);
            let fell_behind = batch
                .iter()
                .zip(full)
                .any(|(ev, full)| full && ev.kind() == Some(EventKind::PeriodElapsed));
            if running && fell_behind {
                // The timer is not cancelled here: only holders of `control` start and stop
                // it. It sees the state at its next expiry and stops itself (`idle_expiry`).
                inner.state = State::Xrun;
                // The pending queue always has room above the timer's limit.
                let _ = inner.emit(EventKind::Xrun, EventSource::Timer);
                drop(inner);
                crate::delay::spin_at(DelayPoint::DeliveryAfterXrun);
            }
        }
        // Once per batch: blocked readers and a waiting ioctl wake when the whole batch has been
        // offered (one wake-up per batch, not per event).
        for f in files {
            f.wake_readers();
        }
        self.delivered.wake_all();
    }
}

impl Stream {
    /// Test hook: the delivery work item waits `delay_ms` before each run, or until the delay is
    /// released (for good, until the module is loaded again). With the delay set, `softirq_queue`
    /// is a process-context workqueue, where the work item may sleep.
    fn hold_delivery(&self, delay_ms: u32) {
        let mut left = kernel::time::msecs_to_jiffies(delay_ms);
        let mut released = self.hold.lock();
        while !*released && left > 0 {
            // A work item gets no signals: the wait ends by timeout or release.
            match self
                .hold_released
                .wait_interruptible_timeout(&mut released, left)
            {
                CondVarTimeoutResult::Timeout => break,
                CondVarTimeoutResult::Woken { jiffies }
                | CondVarTimeoutResult::Signal { jiffies } => left = jiffies,
            }
        }
    }

    /// Test hook: ends the delivery delay now and for every later run.
    pub(crate) fn release_delivery(&self) {
        *self.hold.lock() = true;
        self.hold_released.notify_all();
    }
}

/// The test hook's delivery delay (ms; 0 unless the module was loaded with it). Module
/// parameters of Rust modules have no sysfs file, so the value is fixed at load.
fn test_delivery_delay_ms() -> u32 {
    crate::compat::param(&crate::module_parameters::test_delivery_delay_ms)
}

/// Where the softirq run of the delivery work item runs: the BH workqueue, i.e. in softirq
/// context on the CPU that queued it, right after the timer's (or the device's) interrupt, with
/// no kernel thread to wake; so delivery never sleeps. With a test hook set (the delivery
/// delay, or any delay point; fixed at load, so the item never moves between queues, which
/// would void the workqueue's no-reentrancy guarantee) it runs in process context on
/// `system_dfl_wq` instead: there the delay may sleep, and a delay point's busy-wait is
/// preemptible, so that it never takes a CPU away from the test acting inside its window (a
/// softirq spinning on an idle CPU would: the scheduler still sees that CPU idle and wakes
/// threads on it).
fn softirq_queue() -> &'static workqueue::Queue {
    if test_delivery_delay_ms() == 0 && !crate::delay::any_enabled() {
        return workqueue::system_bh();
    }
    thread_queue()
}

/// Where the thread run of the delivery work item runs: `system_dfl_wq`, unbound kernel threads
/// that the scheduler shares fairly with every other task, so that a stream with many files
/// takes its share of a CPU and no more (in softirq, the other streams' runs on that CPU would
/// wait for it).
fn thread_queue() -> &'static workqueue::Queue {
    // SAFETY: `system_dfl_wq` is created at boot, before any module loads, and never destroyed.
    // (The crate's `system()` is the deprecated `system_wq`, which warns.)
    unsafe { workqueue::Queue::from_raw(core::ptr::addr_of!(bindings::system_dfl_wq).read()) }
}

/// The two runs of a stream's delivery work item.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `Stream::work` on `softirq_queue`: where every delivery starts.
    Softirq,
    /// `Stream::thread_work` on `thread_queue`: a delivery too big for softirq.
    Thread,
}

/// How a delivery run ended.
enum RunEnd {
    /// Nothing pending.
    Empty,
    /// The run offered `uapi::DELIVERY_RUN_MAX` events; more may wait.
    More,
    /// The softirq run reached `uapi::SOFTIRQ_OFFERS_MAX`: the thread run owns delivery now.
    HandOff,
}

impl WorkItem<0> for Stream {
    type Pointer = Arc<Stream>;

    /// The softirq run: delivers unless the thread run owns delivery, and hands the stream over
    /// when its delivery is too big for softirq. The owner changes only under `inner`, in the
    /// critical sections that also look at `pending`, so exactly one run delivers each event,
    /// and in order (the two work items never deliver at once).
    fn run(this: Arc<Stream>) {
        // Test hook (0 unless loaded with it): a slow delivery, so that a test can show that an
        // ioctl waiting for it ends on a fatal signal.
        let delay = test_delivery_delay_ms();
        if delay > 0 {
            this.hold_delivery(delay);
        }
        {
            let mut inner = this.inner.lock();
            if inner.in_thread {
                // The thread run delivers this kick's events: it gives delivery back only when
                // it finds nothing pending.
                inner.delivery_softirq_yields = inner.delivery_softirq_yields.wrapping_add(1);
                return;
            }
        }
        match this.deliver_pending(Stage::Softirq) {
            RunEnd::Empty => {}
            // A new run, queued behind whatever else waits on this CPU.
            RunEnd::More => Stream::kick(this),
            RunEnd::HandOff => Stream::kick_thread(this),
        }
    }
}

impl WorkItem<1> for Stream {
    type Pointer = Arc<Stream>;

    /// The thread run: delivers until nothing is pending, then gives delivery back to softirq.
    fn run(this: Arc<Stream>) {
        match this.deliver_pending(Stage::Thread) {
            RunEnd::Empty => {}
            // Still the owner: a new run, so that one run stays bounded.
            RunEnd::More | RunEnd::HandOff => Stream::kick_thread(this),
        }
    }
}

impl HrTimerCallback for Stream {
    type Pointer<'a> = Arc<Self>;

    fn run(this: ArcBorrow<'_, Self>, mut ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        let mut restart = HrTimerRestart::Restart;
        crate::delay::spin_at(DelayPoint::TimerStall);
        {
            let mut inner = this.inner.lock();
            if !matches!(inner.state, State::Running | State::Draining) {
                return idle_expiry(&mut ctx, &inner);
            }
            let period = Delta::from_micros(i64::from(inner.config.period_us));
            // A period's timestamp is its boundary (the expiry), not when the callback got to
            // run: a late callback that accounts for several periods stamps each on its own.
            // The expiry's own clock value, so stamps differ by exact multiples of the period.
            let stamp = instant_ns(this.timer.expires());
            let elapsed = ctx.forward_now(period).max(1);
            if stall_is_xrun(elapsed) {
                // More periods passed than one expiry may account for: they are lost, an xrun
                // (as when a ring buffer's hardware pointer laps the application's).
                inner.state = State::Xrun;
                let _ = inner.emit(EventKind::Xrun, EventSource::Timer);
                drop(inner);
                Stream::kick(this.into());
                return HrTimerRestart::NoRestart;
            }
            if let Some(hook) = &inner.device {
                // The device produces the periods: ask for them; its interrupt emits them.
                // SAFETY: The hook's owner removes it under this lock before its context goes.
                unsafe { (hook.raise)(hook.ctx) };
                if inner.owed == 0 {
                    inner.owed_stamp = stamp;
                }
                inner.owed = inner.owed.saturating_add(elapsed);
                return HrTimerRestart::Restart;
            }
            if !inner.elapse(EventSource::Timer, stamp, elapsed) {
                restart = HrTimerRestart::NoRestart;
            }
        }
        Stream::kick(this.into());
        restart
    }
}

/// What the timer does when it expires with the stream not running: it stops.
fn idle_expiry(
    _ctx: &mut HrTimerCallbackContext<'_, Stream>,
    _inner: &StreamInner,
) -> HrTimerRestart {
    HrTimerRestart::NoRestart
}

#[kunit_tests(pcmsig_stream)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_of_up_to_64_periods_is_accounted_past_it_an_xrun() {
        // The boundary no guest test can hit exactly (timer lateness under TCG is several
        // periods of slack at a 64-period stall): checked here, both sides.
        assert!(!stall_is_xrun(1));
        assert!(!stall_is_xrun(MAX_OVERRUNS));
        assert!(stall_is_xrun(MAX_OVERRUNS + 1));
        assert_eq!(MAX_OVERRUNS, 64);
    }

    #[test]
    fn the_state_machine_is_alsas() {
        use State::*;
        let t = |cmd, state| transition(cmd, state).map(|(next, _, timer)| (next, timer));
        assert_eq!(
            t(Trigger::Start, Prepared),
            Some((Running, TimerAction::Start))
        );
        assert_eq!(
            t(Trigger::Start, Stopped),
            Some((Running, TimerAction::Start))
        );
        assert_eq!(t(Trigger::Start, Running), None);
        // Configure first.
        assert_eq!(t(Trigger::Start, Setup), None);
        // An xrun needs configure.
        assert_eq!(t(Trigger::Start, Xrun), None);
        assert_eq!(
            t(Trigger::PausePush, Running),
            Some((Paused, TimerAction::Stop))
        );
        assert_eq!(t(Trigger::PausePush, Paused), None);
        assert_eq!(
            t(Trigger::PauseRelease, Paused),
            Some((Running, TimerAction::Start))
        );
        assert_eq!(
            t(Trigger::Drain, Running),
            Some((Draining, TimerAction::Keep))
        );
        assert_eq!(t(Trigger::Drain, Paused), None);
        assert_eq!(t(Trigger::Stop, Xrun), Some((Stopped, TimerAction::Stop)));
        assert_eq!(t(Trigger::Stop, Prepared), None);
        assert_eq!(t(Trigger::Xrun, Draining), Some((Xrun, TimerAction::Stop)));
        // Every transition's event names what happened.
        assert_eq!(
            transition(Trigger::PauseRelease, Paused).map(|(_, k, _)| k),
            Some(EventKind::Resumed)
        );
    }

    #[test]
    fn periods_are_counted_stamped_a_period_apart_and_stop_at_the_limit() -> Result {
        let mut s = StreamInner::new()?;
        // Numbered from 1 whatever the module was loaded with (`test_first_seq`).
        s.next_seq = 1;
        s.state = State::Running;
        s.config = uapi::Config {
            period_us: 1_000,
            periods: 3,
        };
        // Five periods due at once (a late expiry): three run, then the stream stops.
        assert!(!s.elapse(EventSource::Timer, 5_000_000, 5));
        assert_eq!(s.state, State::Stopped);
        assert_eq!(s.periods, 3);
        let mut got = KVec::new();
        while let Some(ev) = s.pending.pop() {
            got.push((ev.kind, ev.seq, ev.timestamp_ns), GFP_KERNEL)?;
        }
        let period = EventKind::PeriodElapsed as u32;
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], (period, 1, 5_000_000));
        assert_eq!(got[1], (period, 2, 6_000_000));
        assert_eq!(got[2], (period, 3, 7_000_000));
        assert_eq!((got[3].0, got[3].1), (EventKind::Stopped as u32, 4));
        assert_eq!(s.events, 4);
        Ok(())
    }

    #[test]
    fn a_full_pending_queue_makes_an_xrun() -> Result {
        let mut s = StreamInner::new()?;
        s.state = State::Running;
        s.config.period_us = 100;
        for _ in 0..PENDING_TIMER_LIMIT {
            s.emit(EventKind::PeriodElapsed, EventSource::Ioctl)?;
        }
        assert!(!s.elapse(EventSource::Timer, 0, 1));
        assert_eq!(s.state, State::Xrun);
        Ok(())
    }

    #[test]
    fn the_si_int_encoding_round_trips() {
        for kind in EventKind::ALL {
            for seq in [0, 1, 0x12_3456, uapi::SEQ_MASK] {
                assert_eq!(uapi::decode(uapi::encode(kind, seq)), Some((kind, seq)));
            }
        }
        assert_eq!(uapi::decode(0), None);
    }
}
