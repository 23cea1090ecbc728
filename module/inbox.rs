// SPDX-License-Identifier: GPL-2.0
//! What an open file of `/dev/pcmsig` receives (`Inbox`): the records it buffers for `read()`,
//! and its `Listener`, the thread it signals, with the counters of what became of each event
//! offered to it. The stream (`stream.rs`) offers each batch of events to every open file's
//! inbox, in delivery's run; an `OpenFile` there is its stream and its inbox.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::{
    compat::{new_spinlock_irq, SpinLockIrq},
    event::Event,
    live::{self, Live},
    ring::Ring,
    signal::{Outcome, SenderCred, ThreadRef},
    uapi::{self, DelayPoint, EventRecord, ListenerStats},
};
use kernel::{
    new_condvar,
    prelude::*,
    sync::{Arc, CondVar},
};

/// Records each open file buffers for `read()`.
pub(crate) const READ_CAP: usize = uapi::READ_QUEUE_LEN as usize;

/// A registered listener: one thread, one signal, its counters.
///
/// Its release may sleep (`ThreadRef` holds an `mm` reference, whose last drop frees page tables
/// under a lock that is not softirq-safe), so the rule is: **the delivery work item never holds
/// the last reference to a listener or to an open file.** Every process-context path that takes a
/// listener or a file away from delivery (REGISTER replacing, UNREGISTER, close) flushes the work
/// item before it drops its own reference; a closed file keeps none (its release takes both its
/// `listener` and its `last`), so the work item may drop the last reference to a closed file.
/// Nor is a listener ever cloned under a spinlock except by the work item: process context
/// checks a listener in place (`check_emitter`) or drops its clone with no lock held
/// (GET_STATS). `ThreadRef`'s `Drop` asserts the rule (`might_sleep`).
#[pin_data]
pub(crate) struct Listener {
    pub(crate) thread: ThreadRef,
    signo: u32,
    /// Taken by delivery (softirq) and by the stats ioctl: interrupts off while held.
    #[pin]
    stats: SpinLockIrq<ListenerStats>,
    _live: Live,
}

impl Listener {
    /// A listener for the calling thread.
    pub(crate) fn new_current(signo: u32) -> Result<Arc<Self>> {
        let thread = ThreadRef::current()?;
        Arc::pin_init(
            pin_init!(Self {
                thread,
                signo,
                stats <- new_spinlock_irq!(ListenerStats::default(), "pcmsig::Listener::stats"),
                _live: Live::new(&live::LISTENERS),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    pub(crate) fn stats(&self) -> ListenerStats {
        *self.stats.lock()
    }
}

/// Adds one outcome to a set of counters.
pub(crate) fn count(stats: &mut ListenerStats, outcome: Outcome) {
    stats.fired = stats.fired.wrapping_add(1);
    let field = match outcome {
        Outcome::Delivered => &mut stats.delivered,
        Outcome::QueueFull => &mut stats.dropped_queue_full,
        Outcome::Exited => &mut stats.dropped_exited,
        Outcome::Execd => &mut stats.dropped_execd,
        Outcome::NotPermitted => &mut stats.dropped_perm,
    };
    *field = field.wrapping_add(1);
}

pub(crate) fn add_stats(total: &mut ListenerStats, s: &ListenerStats) {
    total.fired = total.fired.wrapping_add(s.fired);
    total.delivered = total.delivered.wrapping_add(s.delivered);
    total.dropped_queue_full = total.dropped_queue_full.wrapping_add(s.dropped_queue_full);
    total.dropped_exited = total.dropped_exited.wrapping_add(s.dropped_exited);
    total.dropped_execd = total.dropped_execd.wrapping_add(s.dropped_execd);
    total.dropped_perm = total.dropped_perm.wrapping_add(s.dropped_perm);
}

/// Per-open-file state that delivery touches.
pub(crate) struct FileInner {
    /// The registered listener, if any.
    pub(crate) listener: Option<Arc<Listener>>,
    /// The listener that was unregistered last, so its counters stay readable.
    pub(crate) last: Option<Arc<Listener>>,
    records: Ring<EventRecord, READ_CAP>,
    pub(crate) read_overruns: u64,
}

/// What one open file receives: records for `read()`, signals for its listener.
#[pin_data]
pub(crate) struct Inbox {
    pub(crate) opener: SenderCred,
    #[pin]
    pub(crate) inner: SpinLockIrq<FileInner>,
    #[pin]
    readable: CondVar,
    /// Set once, when the file's close begins (under `Stream::files_update`): delivery skips it
    /// from then on, and the next list of the stream's files leaves it out.
    pub(crate) closed: AtomicBool,
    _live: Live,
}

impl Inbox {
    /// An empty inbox of a file opened by `opener`: its records' buffer is allocated now,
    /// charged to the opener's memory cgroup (`__GFP_ACCOUNT`), and the rest is initialized in
    /// place, in the open file's allocation.
    pub(crate) fn new(opener: SenderCred) -> Result<impl PinInit<Self>> {
        let records = Ring::new(GFP_KERNEL_ACCOUNT)?;
        Ok(pin_init!(Self {
                opener,
                inner <- new_spinlock_irq!(
                    FileInner {
                        listener: None,
                        last: None,
                        records,
                        read_overruns: 0,
                    },
                    "pcmsig::Inbox::inner"
                ),
                readable <- new_condvar!("pcmsig::Inbox::readable"),
                closed: AtomicBool::new(false),
                _live: Live::new(&live::FILES),
        }))
    }

    /// Whether this file's close has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Offers a batch of events to this file: a record each for `read()`, and a signal each to
    /// its listener, whose thread is resolved (alive, same program, permitted) once for the
    /// batch. Sets `full[i]` when event `i` met a full signal queue. The caller wakes readers
    /// ([`Inbox::wake_readers`]) once it has offered the batch.
    pub(crate) fn deliver_all(
        &self,
        batch: &[Event],
        totals: &mut ListenerStats,
        full: &mut [bool],
    ) {
        let listener = {
            let mut inner = self.inner.lock();
            for ev in batch {
                if !inner.records.push(ev.record()) {
                    inner.read_overruns = inner.read_overruns.wrapping_add(1);
                }
            }
            inner.listener.clone()
        };
        let Some(listener) = listener else {
            return;
        };
        crate::delay::spin_at(DelayPoint::DeliveryHoldsListener);
        let target = listener.thread.resolve(&self.opener);
        crate::delay::spin_at(DelayPoint::DeliveryBeforeSend);
        let mut stats = ListenerStats::default();
        for (ev, full) in batch.iter().zip(full.iter_mut()) {
            let Some(kind) = ev.kind() else {
                continue;
            };
            let seq = ev.seq as u32;
            let outcome = match &target {
                Ok(t) => t.send(listener.signo, uapi::encode(kind, seq)),
                Err(o) => *o,
            };
            count(&mut stats, outcome);
            if outcome == Outcome::QueueFull {
                *full = true;
            }
        }
        add_stats(&mut listener.stats.lock(), &stats);
        add_stats(totals, &stats);
    }

    /// Puts records that `read()` took but could not copy back at the front of the buffer, in
    /// order, so that a fault loses none. If newer records filled the buffer meanwhile, the
    /// newest make room and count as read overruns: a full buffer keeps the oldest records
    /// (`uapi::READ_QUEUE_LEN`), and the put-back ones are older than any buffered.
    pub(crate) fn put_back(&self, records: &[EventRecord]) {
        let mut inner = self.inner.lock();
        for r in records.iter().rev() {
            if inner.records.len() == READ_CAP && inner.records.pop_back().is_some() {
                inner.read_overruns = inner.read_overruns.wrapping_add(1);
            }
            if !inner.records.push_front(*r) {
                inner.read_overruns = inner.read_overruns.wrapping_add(1);
            }
        }
    }

    /// Wakes the threads blocked in `read()` on this file.
    pub(crate) fn wake_readers(&self) {
        self.readable.notify_all();
    }

    /// Blocks (unless `nonblock`) until records are buffered, then moves up to `out.len()` of them
    /// into `out`. Returns how many.
    pub(crate) fn take_records(&self, out: &mut [EventRecord], nonblock: bool) -> Result<usize> {
        let mut inner = self.inner.lock();
        while inner.records.is_empty() {
            if nonblock {
                return Err(EAGAIN);
            }
            if self.readable.wait_interruptible(&mut inner) {
                return Err(ERESTARTSYS);
            }
        }
        let mut n = 0;
        for slot in out.iter_mut() {
            match inner.records.pop() {
                Some(r) => {
                    *slot = r;
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
}
