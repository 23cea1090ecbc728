// SPDX-License-Identifier: GPL-2.0
//! Test hook: named delay points (`uapi::DelayPoint`), the windows in which the races of the
//! driver's history struck. Off unless the module is loaded with `test_delay_points=MASK`. An
//! enabled point counts the visit (`delay_point_hits` in debugfs `stats`), then waits until
//! `test_delay_ms` have passed or a test releases it (a write of its name to debugfs
//! `release_delivery`; any other write releases every point), so that a test sees it is inside
//! the window, acts there, and ends the window when it is done.
//! A point costs one parameter read when it is off.

use crate::uapi::DelayPoint;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::time::{delay, Delta, Instant, Monotonic};

/// Set by a write of `off`: every point is off from then on (until the module is loaded again).
static OFF: AtomicBool = AtomicBool::new(false);
/// Visits of enabled delay points since the module was loaded.
static HITS: AtomicU64 = AtomicU64::new(0);
/// Releases so far, per point: a point waits until its count moves (or its time is up).
static RELEASES: [AtomicU64; DelayPoint::ALL.len()] =
    [const { AtomicU64::new(0) }; DelayPoint::ALL.len()];
/// Per deferring point ([`defer_at`]): a visit left its work for the release to do.
static DEFERRED: [AtomicBool; DelayPoint::ALL.len()] =
    [const { AtomicBool::new(false) }; DelayPoint::ALL.len()];

/// Whether any delay point is enabled (then delivery runs in process context, see
/// `softirq_queue`).
pub(crate) fn any_enabled() -> bool {
    crate::compat::param(&crate::module_parameters::test_delay_points) != 0
}

/// How many times an enabled delay point has been reached.
pub(crate) fn hits() -> u64 {
    HITS.load(Ordering::Relaxed)
}

/// Ends the wait at the point named `name` (surrounding white space ignored), or at every point
/// if `name` names none; only the visits waiting now end. `off` also turns every point off for
/// good, so that a test's cleanup (the module's unload passes the device-removal point) never
/// waits. Returns the points released, as a mask of their bits.
pub(crate) fn release(name: &[u8]) -> u32 {
    let name = name.trim_ascii();
    if name == b"off" {
        OFF.store(true, Ordering::Release);
    }
    let named = DelayPoint::ALL.iter().any(|p| p.name().as_bytes() == name);
    let mut released = 0;
    for (point, count) in DelayPoint::ALL.iter().zip(RELEASES.iter()) {
        if !named || point.name().as_bytes() == name {
            count.fetch_add(1, Ordering::AcqRel);
            released |= point.bit();
        }
    }
    released
}

/// The release count of `point`.
fn releases(point: DelayPoint) -> u64 {
    RELEASES
        .get(point as usize)
        .map_or(0, |c| c.load(Ordering::Acquire))
}

/// Whether `point` is enabled (and the points not turned off).
fn enabled(point: DelayPoint) -> bool {
    crate::compat::param(&crate::module_parameters::test_delay_points) & point.bit() != 0
        && !OFF.load(Ordering::Acquire)
}

/// A point that does not wait where it stands: if it is enabled, counts the visit and returns
/// `true`, and the caller leaves its work undone for the release to do (whoever handles the
/// release asks [`take_deferred`]). For a hard-IRQ handler, which on the only vCPU could not
/// wait without keeping the test from acting.
pub(crate) fn defer_at(point: DelayPoint) -> bool {
    if !enabled(point) {
        return false;
    }
    HITS.fetch_add(1, Ordering::AcqRel);
    if let Some(d) = DEFERRED.get(point as usize) {
        d.store(true, Ordering::Release);
    }
    true
}

/// Whether a visit of `point` left work to do since the last call (clears it).
pub(crate) fn take_deferred(point: DelayPoint) -> bool {
    DEFERRED
        .get(point as usize)
        .is_some_and(|d| d.swap(false, Ordering::AcqRel))
}

/// Waits at `point` if it is enabled: counts the visit, then calls `pause` (one short wait) until
/// the delay is over or released.
fn wait_at(point: DelayPoint, pause: impl Fn()) {
    if !enabled(point) {
        return;
    }
    let released = releases(point);
    HITS.fetch_add(1, Ordering::AcqRel);
    let limit = Delta::from_millis(i64::from(crate::compat::param(
        &crate::module_parameters::test_delay_ms,
    )));
    let start = Instant::<Monotonic>::now();
    while releases(point) == released && start.elapsed() < limit {
        pause();
    }
}

/// A delay point in process context: sleeps.
pub(crate) fn sleep_at(point: DelayPoint) {
    wait_at(point, || delay::fsleep(Delta::from_millis(1)));
}

/// A delay point where sleeping may not be allowed (the delivery work item, which runs in
/// process context but may hold a spinlock when a point is enabled): busy-waits, preemptibly
/// unless a lock is held.
pub(crate) fn spin_at(point: DelayPoint) {
    wait_at(point, || delay::udelay(Delta::from_micros(100)));
}
