// SPDX-License-Identifier: GPL-2.0
//! How many of the module's objects are alive now, shown in debugfs `stats` (`live_streams`,
//! `live_files`, `live_listeners`). The fault sweep reads them after every failed call: a leak
//! on an error path is then named by its call and by the fault that took that path (kmemleak
//! finds the leaked memory too, later, without saying which call leaked it).

use core::sync::atomic::{AtomicUsize, Ordering};

/// Streams alive (listed or not yet dropped).
pub(crate) static STREAMS: AtomicUsize = AtomicUsize::new(0);
/// Open files alive.
pub(crate) static FILES: AtomicUsize = AtomicUsize::new(0);
/// Listeners alive (registered, or kept as a file's last listener for its statistics).
pub(crate) static LISTENERS: AtomicUsize = AtomicUsize::new(0);

/// A field of each counted object: counts it from its creation to its drop (also when the
/// object's initialisation fails after this field, which drops it again).
pub(crate) struct Live(&'static AtomicUsize);

impl Live {
    pub(crate) fn new(count: &'static AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Live(count)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The value of one count.
pub(crate) fn now(count: &AtomicUsize) -> usize {
    count.load(Ordering::Relaxed)
}
