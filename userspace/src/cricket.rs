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
