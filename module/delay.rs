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

/// Whether any delay point is enabled (then delivery runs in process context, see
/// `delivery_queue`).
pub(crate) fn any_enabled() -> bool {
    crate::module_parameters::test_delay_points.value() != 0
}

/// How many times an enabled delay point has been reached.
pub(crate) fn hits() -> u64 {
    HITS.load(Ordering::Relaxed)
}

/// Ends the wait at the point named `name` (surrounding white space ignored), or at every point
/// if `name` names none; only the visits waiting now end. `off` also turns every point off for
/// good, so that a test's cleanup (the module's unload passes the device-removal point) never
/// waits.
pub(crate) fn release(name: &[u8]) {
    let name = name.trim_ascii();
    if name == b"off" {
        OFF.store(true, Ordering::Release);
    }
    let named = DelayPoint::ALL.iter().any(|p| p.name().as_bytes() == name);
    for (point, count) in DelayPoint::ALL.iter().zip(RELEASES.iter()) {
        if !named || point.name().as_bytes() == name {
            count.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The release count of `point`.
fn releases(point: DelayPoint) -> u64 {
    RELEASES
        .get(point as usize)
        .map_or(0, |c| c.load(Ordering::Acquire))
}

/// Waits at `point` if it is enabled: counts the visit, then calls `pause` (one short wait) until
/// the delay is over or released.
fn wait_at(point: DelayPoint, pause: impl Fn()) {
    if crate::module_parameters::test_delay_points.value() & point.bit() == 0
        || OFF.load(Ordering::Acquire)
    {
        return;
    }
    let released = releases(point);
    HITS.fetch_add(1, Ordering::AcqRel);
    let limit = Delta::from_millis(i64::from(crate::module_parameters::test_delay_ms.value()));
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
