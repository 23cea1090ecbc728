//! Receive pcmsig stream events in user space.
//!
//! The pcmsig kernel module turns each event of a fake PCM stream (started, period elapsed,
//! xrun, ...) into a signal queued to the thread that registered, with `si_code = SI_QUEUE` and
//! `si_int` = kind << 24 | sequence number. This crate opens the device ([`Device`]), names
//! signals ([`Signal`], real-time ones resolved at run time), receives them three ways
//! ([`WaitReceiver`], [`FdReceiver`], [`HandlerReceiver`]), decodes them ([`Event`]) and checks
//! their sequence ([`GapDetector`]).
//!
//! ```no_run
//! use pcmsig::{Device, Event, Signal, Trigger, WaitReceiver};
//! use std::time::Duration;
//! let sig = Signal::rtmin(0);
//! let rx = WaitReceiver::new(&[sig])?; // blocks the signal in this thread
//! let dev = Device::open()?;
//! dev.register(sig)?;
//! dev.configure(10_000, 3)?;
//! dev.trigger(Trigger::Start)?;
//! while let Some(info) = rx.recv_timeout(Duration::from_secs(1))? {
//!     if let Some(ev) = Event::decode(&info) { println!("{}", ev.describe()); }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod cricket;
pub mod device;
pub mod event;
pub mod receive;
pub mod sys;

pub use device::{Device, EventKind, EventRecord, State, Stats, Trigger};
pub use event::{describe, Event, GapDetector, SeqCheck, Signal};
pub use pcmsig_uapi as uapi;
pub use receive::{FdReceiver, HandlerReceiver, Mode, Receiver, WaitReceiver};

use std::fmt;

/// Errors of this crate, each saying what was being done.
#[derive(Debug)]
pub enum Error {
    /// The device could not be opened (is the module loaded?).
    Open {
        /// The path tried.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// An ioctl failed with this errno.
    Ioctl {
        /// Which call (register, configure, ...).
        what: &'static str,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
    /// A signal name that is not `usr1`, `usr2`, `rtmin+N`, `rtmax-N` or an allowed number.
    BadSignal(String),
    /// Another I/O error.
    Io(std::io::Error),
}

impl Error {
    fn ioctl(what: &'static str, errno: nix::errno::Errno) -> Self {
        Error::Ioctl { what, errno }
    }

    /// The errno of a failed ioctl or I/O call.
    ///
    /// ```
    /// let e = pcmsig::Error::Io(std::io::Error::from_raw_os_error(22));
    /// assert_eq!(e.errno(), Some(22));
    /// ```
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Ioctl { errno, .. } => Some(*errno as i32),
            Error::Open { source, .. } | Error::Io(source) => source.raw_os_error(),
            Error::BadSignal(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open { path, source } => {
                write!(f, "cannot open {path}: {source} (is the pcmsig module loaded?)")
            }
            Error::Ioctl { what, errno } => write!(f, "{what} ioctl failed: {} ({})", errno.desc(), errno),
            Error::BadSignal(s) => write!(
                f,
                "bad signal {s:?}: use usr1, usr2, rtmin, rtmin+N, rtmax-N or a number in the kernel's real-time range"
            ),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open { source, .. } | Error::Io(source) => Some(source),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_io_cause_stays_reachable_for_error_reports() {
        // anyhow and friends print the chain: "cannot open /dev/pcmsig: ...", then its cause.
        let open = Error::Open {
            path: "/dev/pcmsig".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let cause = open.source().map(ToString::to_string);
        assert_eq!(
            cause,
            Some(std::io::Error::from_raw_os_error(libc::ENOENT).to_string())
        );
        let io = Error::Io(std::io::Error::other("gone"));
        assert_eq!(io.source().map(ToString::to_string), Some("gone".into()));
        assert!(Error::BadSignal("x".into()).source().is_none());
    }
}
