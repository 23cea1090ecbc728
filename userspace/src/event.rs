//! Decoded events, signal names, and the gap/reorder detector.

use std::fmt;
use std::str::FromStr;

use pcmsig_uapi as uapi;
pub use pcmsig_uapi::EventKind;

use crate::sys::{self, SigInfo, SignalSet};
use crate::Error;

/// A signal number as the kernel sees it (absolute, never an offset).
///
/// ```
/// use pcmsig::Signal;
/// let s: Signal = "rtmin+2".parse().unwrap();
/// assert_eq!(s.number(), pcmsig::sys::sigrtmin() + 2);
/// assert_eq!("usr1".parse::<Signal>().unwrap().number(), 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signal(i32);

impl Signal {
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal(libc::SIGUSR2);

    /// glibc's `SIGRTMIN() + n`, resolved at run time.
    pub fn rtmin(n: i32) -> Signal {
        Signal(sys::sigrtmin() + n)
    }

    /// A raw signal number.
    pub fn from_number(n: i32) -> Signal {
        Signal(n)
    }

    /// The absolute number passed to the kernel.
    pub fn number(self) -> i32 {
        self.0
    }

    /// Whether the kernel module accepts this signal.
    pub fn allowed(self) -> bool {
        self.0 > 0 && uapi::signal_allowed(self.0 as u32)
    }

    /// Blocks this signal in the calling thread (do it before registering).
    pub fn block(self) -> std::io::Result<()> {
        SignalSet::of(&[self.0]).block().map(|_| ())
    }
}

/// The set of these signals.
///
/// ```
/// use pcmsig::{sys::SignalSet, Signal};
/// let set = SignalSet::from(&[Signal::USR1, Signal::rtmin(1)][..]);
/// assert!(set.contains(libc::SIGUSR1) && set.contains(pcmsig::sys::sigrtmin() + 1));
/// ```
impl From<&[Signal]> for SignalSet {
    fn from(signals: &[Signal]) -> Self {
        let mut set = SignalSet::empty();
        for s in signals {
            set.add(s.number());
        }
        set
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rtmin = sys::sigrtmin();
        match self.0 {
            libc::SIGUSR1 => write!(f, "SIGUSR1"),
            libc::SIGUSR2 => write!(f, "SIGUSR2"),
            n if n == rtmin => write!(f, "SIGRTMIN"),
            n if n > rtmin && n <= sys::sigrtmax() => write!(f, "SIGRTMIN+{}", n - rtmin),
            n => write!(f, "signal {n}"),
        }
    }
}

impl FromStr for Signal {
    type Err = Error;

    /// Accepts `usr1`, `usr2`, `rtmin`, `rtmin+N`, `rtmax-N` (with or without `SIG`, any case)
    /// or a number.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadSignal(s.to_string());
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("sig").unwrap_or(&lower);
        let sig = if let Ok(n) = name.parse::<i32>() {
            Signal(n)
        } else if name == "usr1" {
            Signal::USR1
        } else if name == "usr2" {
            Signal::USR2
        } else if let Some(rest) = name.strip_prefix("rtmin") {
            let off = if rest.is_empty() {
                0
            } else {
                rest.strip_prefix('+')
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?
            };
            Signal::rtmin(off)
        } else if let Some(rest) = name.strip_prefix("rtmax") {
            let off: i32 = if rest.is_empty() {
                0
            } else {
                rest.strip_prefix('-')
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?
            };
            Signal(sys::sigrtmax() - off)
        } else {
            return Err(bad());
        };
        if !sig.allowed() {
            return Err(bad());
        }
        Ok(sig)
    }
}

/// One received stream event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event kind, if the value decoded.
    pub kind: EventKind,
    /// The sequence number ([`uapi::SEQ_BITS`] bits).
    pub seq: u32,
    /// The signal it arrived on.
    pub signal: Signal,
    /// `si_code` (`SI_QUEUE` for the module).
    pub code: i32,
    /// The raw `si_int`.
    pub value: i32,
}

impl Event {
    /// Decodes a received signal; `None` if its value is not a pcmsig event.
    ///
    /// ```
    /// use pcmsig::{sys::SigInfo, Event, EventKind};
    /// let v = pcmsig_uapi::encode(EventKind::Started, 3);
    /// let e = Event::decode(&SigInfo { signo: 40, code: -1, value: v, pid: 0, uid: 0 }).unwrap();
    /// assert_eq!((e.kind, e.seq), (EventKind::Started, 3));
    /// ```
    pub fn decode(info: &SigInfo) -> Option<Event> {
        let (kind, seq) = uapi::decode(info.value)?;
        Some(Event {
            kind,
            seq,
            signal: Signal(info.signo),
            code: info.code,
            value: info.value,
        })
    }

    /// Plain words: "stream started", "period elapsed (seq 17)", "xrun".
    pub fn describe(&self) -> String {
        describe(self.kind, self.seq)
    }
}

/// Plain words for an event.
pub fn describe(kind: EventKind, seq: u32) -> String {
    match kind {
        EventKind::Prepared => "stream prepared".into(),
        EventKind::Started => "stream started".into(),
        EventKind::Stopped => "stream stopped".into(),
        EventKind::Paused => "stream paused".into(),
        EventKind::Resumed => "stream resumed".into(),
        EventKind::PeriodElapsed => format!("period elapsed (seq {seq})"),
        EventKind::Xrun => "xrun (a listener fell behind)".into(),
        EventKind::Draining => "stream draining".into(),
    }
}

/// What the gap detector concluded about one sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// The first number seen.
    First,
    /// The next number, as expected.
    InOrder,
    /// `missed` numbers were skipped (lost, e.g. coalesced standard signals or queue overflow).
    Gap {
        /// How many numbers were skipped.
        missed: u32,
    },
    /// A number at or before the last one: reordered or duplicated.
    Reordered,
}

/// Detects lost and reordered events from their sequence numbers (modulo 2^24).
///
/// ```
/// use pcmsig::{GapDetector, SeqCheck};
/// let mut g = GapDetector::default();
/// assert_eq!(g.check(5), SeqCheck::First);
/// assert_eq!(g.check(6), SeqCheck::InOrder);
/// assert_eq!(g.check(9), SeqCheck::Gap { missed: 2 });
/// assert_eq!(g.check(8), SeqCheck::Reordered);
/// assert_eq!((g.lost, g.reordered), (2, 1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct GapDetector {
    last: Option<u32>,
    /// Events known lost so far.
    pub lost: u64,
    /// Events seen out of order so far.
    pub reordered: u64,
}

impl GapDetector {
    /// Checks the next sequence number.
    pub fn check(&mut self, seq: u32) -> SeqCheck {
        let seq = seq & uapi::SEQ_MASK;
        let Some(last) = self.last else {
            self.last = Some(seq);
            return SeqCheck::First;
        };
        // Distance forward, modulo 2^24; more than half the space forward counts as backwards.
        let d = seq.wrapping_sub(last) & uapi::SEQ_MASK;
        if d == 0 || d > uapi::SEQ_MASK / 2 {
            self.reordered += 1;
            return SeqCheck::Reordered;
        }
        self.last = Some(seq);
        if d == 1 {
            SeqCheck::InOrder
        } else {
            self.lost += u64::from(d - 1);
            SeqCheck::Gap { missed: d - 1 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_detector_handles_wraparound() {
        let mut g = GapDetector::default();
        g.check(uapi::SEQ_MASK - 1);
        assert_eq!(g.check(uapi::SEQ_MASK), SeqCheck::InOrder);
        assert_eq!(g.check(0), SeqCheck::InOrder);
        assert_eq!(g.check(3), SeqCheck::Gap { missed: 2 });
        assert_eq!(g.check(3), SeqCheck::Reordered);
        // Half the sequence space ahead is still ahead (a gap); more is behind.
        let mut h = GapDetector::default();
        h.check(0);
        assert_eq!(
            h.check(uapi::SEQ_MASK / 2),
            SeqCheck::Gap {
                missed: uapi::SEQ_MASK / 2 - 1
            }
        );
        let mut h = GapDetector::default();
        h.check(0);
        assert_eq!(h.check(uapi::SEQ_MASK / 2 + 1), SeqCheck::Reordered);
        assert_eq!(g.lost, 2);
    }

    #[test]
    fn signal_names_parse_and_reject() {
        let rtmin = sys::sigrtmin();
        assert_eq!("SIGRTMIN".parse::<Signal>().unwrap().number(), rtmin);
        assert_eq!("rtmin+2".parse::<Signal>().unwrap().number(), rtmin + 2);
        assert_eq!(
            "RTMAX-1".parse::<Signal>().unwrap().number(),
            sys::sigrtmax() - 1
        );
        assert_eq!("sigusr2".parse::<Signal>().unwrap(), Signal::USR2);
        assert_eq!("40".parse::<Signal>().unwrap().number(), 40);
        for bad in ["int", "9", "rtmin+99", "rtmin-1", "", "usr3", "65"] {
            assert!(bad.parse::<Signal>().is_err(), "{bad} should be rejected");
        }
        assert_eq!(Signal::rtmin(2).to_string(), "SIGRTMIN+2");
        // Outside the real-time range: a number, not a made-up name.
        assert_eq!(Signal::from_number(2).to_string(), "signal 2");
        let past = sys::sigrtmax() + 1;
        assert_eq!(
            Signal::from_number(past).to_string(),
            format!("signal {past}")
        );
        assert_eq!(
            Signal::from_number(sys::sigrtmax()).to_string(),
            format!("SIGRTMIN+{}", sys::sigrtmax() - rtmin)
        );
    }

    #[test]
    fn every_event_kind_is_described_in_its_own_words() {
        let words: Vec<String> = EventKind::ALL.iter().map(|&k| describe(k, 7)).collect();
        assert_eq!(
            words,
            [
                "stream prepared",
                "stream started",
                "stream stopped",
                "stream paused",
                "stream resumed",
                "period elapsed (seq 7)",
                "xrun (a listener fell behind)",
                "stream draining",
            ]
        );
        assert_eq!(
            describe(EventKind::PeriodElapsed, uapi::SEQ_MASK),
            "period elapsed (seq 16777215)"
        );
    }

    #[test]
    fn decode_rejects_foreign_values() {
        let info = SigInfo {
            signo: 10,
            code: 0,
            value: 1234,
            pid: 0,
            uid: 0,
        };
        assert_eq!(
            Event::decode(&info),
            None,
            "the blog's si_int=1234 is not a pcmsig event"
        );
        let v = uapi::encode(EventKind::PeriodElapsed, 17);
        let e = Event::decode(&SigInfo {
            signo: 40,
            code: -1,
            value: v,
            pid: 0,
            uid: 0,
        })
        .unwrap();
        assert_eq!(e.describe(), "period elapsed (seq 17)");
    }
}
