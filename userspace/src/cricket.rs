//! The cricket example of the POSIX real-time signals tutorial, in Rust.
//!
//! A `scorer` process `sigqueue`s '4', '6' or 'W' (as `si_int`) to a `manager` process, which
//! takes them with `sigwaitinfo` and announces each. The same manager can be fed by the pcmsig
//! kernel stream instead: then each event is announced in plain words.

use std::io;

use crate::sys::{self, SigInfo, SignalSet};
use crate::{Event, Signal};

/// What the manager says for one received signal.
///
/// ```
/// use pcmsig::{cricket::announce, sys::SigInfo};
/// let four = SigInfo { signo: 34, code: -1, value: '4' as i32, pid: 42, uid: 0 };
/// assert_eq!(announce(&four), "Four runs scored.");
/// ```
pub fn announce(info: &SigInfo) -> String {
    // From the scorer: a user-space sigqueue (si_pid set) carrying a character.
    if info.pid != 0 {
        return match u8::try_from(info.value).map(char::from) {
            Ok('4') => "Four runs scored.".into(),
            Ok('6') => "Six runs scored.".into(),
            Ok('W') => "Wicket!".into(),
            _ => format!("Unknown score {:#x}.", info.value),
        };
    }
    match Event::decode(info) {
        Some(ev) => format!("From the stream: {}.", ev.describe()),
        None => format!("Unknown signal value {:#x}.", info.value),
    }
}

/// The scorer: queues each score in `scores` to `manager` on `sig`.
pub fn scorer(manager: i32, sig: Signal, scores: &str) -> io::Result<()> {
    for c in scores.chars() {
        sys::sigqueue(manager, sig.number(), c as i32)?;
    }
    Ok(())
}

/// The manager: takes `count` signals on `sig` (which must be blocked in every thread) and
/// returns what it announced, printing each line as it goes.
pub fn manager(sig: Signal, count: usize) -> io::Result<Vec<String>> {
    let set = SignalSet::of(&[sig.number()]);
    let mut said = Vec::new();
    for _ in 0..count {
        let info = sys::sigwaitinfo(&set)?;
        let line = announce(&info);
        println!("{line}");
        said.push(line);
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::{self, EventKind};

    fn info(pid: i32, value: i32) -> SigInfo {
        SigInfo {
            signo: Signal::rtmin(0).number(),
            code: -1,
            value,
            pid,
            uid: 0,
        }
    }

    #[test]
    fn each_score_and_each_stream_event_is_announced_in_words() {
        // From the scorer (a process: si_pid set): the three scores and anything else.
        for (c, said) in [
            ('4', "Four runs scored."),
            ('6', "Six runs scored."),
            ('W', "Wicket!"),
        ] {
            assert_eq!(announce(&info(42, c as i32)), said);
        }
        assert_eq!(announce(&info(42, '5' as i32)), "Unknown score 0x35.");
        assert_eq!(announce(&info(42, 0x1_0000)), "Unknown score 0x10000.");
        // From the kernel (si_pid 0): the event in plain words, or the value it cannot decode.
        let period = uapi::encode(EventKind::PeriodElapsed, 17);
        assert_eq!(
            announce(&info(0, period)),
            format!(
                "From the stream: {}.",
                crate::describe(EventKind::PeriodElapsed, 17)
            )
        );
        // '4' from the kernel is no score, and no event (kind 0): its value is said.
        assert_eq!(announce(&info(0, '4' as i32)), "Unknown signal value 0x34.");
    }
}
