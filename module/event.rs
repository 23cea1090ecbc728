// SPDX-License-Identifier: GPL-2.0
//! One event a stream emitted: what it is, where it came from, its sequence number and when it
//! happened. The stream queues it (`stream.rs`); delivery turns it into a `read()` record and a
//! signal's `si_int` for each open file (`inbox.rs`).

use crate::uapi::{EventKind, EventRecord};

/// One emitted event.
#[derive(Clone, Copy, Default)]
pub(crate) struct Event {
    pub(crate) kind: u32,
    pub(crate) source: u32,
    pub(crate) seq: u64,
    pub(crate) timestamp_ns: u64,
}

impl Event {
    pub(crate) fn record(&self) -> EventRecord {
        EventRecord {
            kind: self.kind as u16,
            source: self.source as u16,
            seq: self.seq as u32,
            timestamp_ns: self.timestamp_ns,
        }
    }

    pub(crate) fn kind(&self) -> Option<EventKind> {
        EventKind::from_u32(self.kind)
    }
}
