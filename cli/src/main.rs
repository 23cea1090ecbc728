//! `pcmsig`: listen to the pcmsig stream, drive it, show its statistics, and the cricket demo.
//!
//! ```text
//! pcmsig listen [--signal rtmin+2] [--mode wait|signalfd|handler] [--count N] [--timeout-ms N]
//! pcmsig stream start|stop|pause|resume|drain|xrun [--period-us N] [--periods N]
//! pcmsig stats
//! pcmsig demo [--period-us N] [--periods N]
//! pcmsig scorer MANAGER_PID [SCORES]     (SCORES of 4, 6, W; default "46W")
//! pcmsig manager [--count N] [--stream]
//! ```
//! The stream runs while some process has the device open: the last close stops it.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use pcmsig::sys::now_ns;
use pcmsig::{
    cricket, describe, Device, Event, GapDetector, Mode, Receiver, SeqCheck, Signal, Trigger,
};

mod flags {
    xflags::xflags! {
        /// Listen to the pcmsig stream, drive it, show its statistics, and the cricket demo.
        cmd pcmsig {
            /// Receive events as signals and print each with its latency.
            cmd listen {
                /// The signal: rtmin+N, rtmax-N, usr1, usr2 or a number (default rtmin).
                optional --signal signal: String
                /// How to receive: wait (sigwaitinfo), signalfd or handler (default wait).
                optional --mode mode: String
                /// Stop after this many events (default: never).
                optional --count n: u64
                /// Stop when no event came for this long (default 0: an hour).
                optional --timeout-ms ms: u64
            }
            /// Trigger the stream: start, stop, pause, resume, drain or xrun.
            cmd stream {
                required action: String
                /// Period length for `start` (default 10000).
                optional --period-us us: u32
                /// Periods before the stream drains by itself, for `start` (default 0: forever).
                optional --periods n: u32
            }
            /// Show the stream's state and the delivery counters.
            cmd stats {}
            /// Start a short stream and listen to it in this process.
            cmd demo {
                /// Period length (default 10000).
                optional --period-us us: u32
                /// Periods (default 10).
                optional --periods n: u32
                /// Give up on an event that does not come within this many ms (default 5000).
                optional --timeout-ms ms: u64
            }
            /// The tutorial's scorer: send SCORES (of 4, 6, W; default 46W) to MANAGER_PID.
            cmd scorer {
                required manager_pid: i32
                optional scores: String
            }
            /// The tutorial's manager: wait for signals, from scorers or (--stream) the stream.
            cmd manager {
                /// Signals to wait for (default 3).
                optional --count n: usize
                /// Register with the device and start a stream to send them.
                optional --stream
            }
        }
    }
}

/// A parsed and checked command line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cmd {
    Listen {
        signal: Signal,
        mode: Mode,
        count: Option<u64>,
        timeout_ms: u64,
    },
    Stream {
        action: Trigger,
        period_us: u32,
        periods: u32,
    },
    Stats,
    Demo {
        period_us: u32,
        periods: u32,
        timeout_ms: u64,
    },
    Scorer {
        manager: i32,
        scores: String,
    },
    Manager {
        count: usize,
        stream: bool,
    },
}

/// The default period length of `stream start` and `demo`.
const PERIOD_US: u32 = 10_000;

fn trigger(action: &str) -> Result<Trigger, String> {
    Ok(match action {
        "start" => Trigger::Start,
        "stop" => Trigger::Stop,
        "pause" => Trigger::PausePush,
        "resume" => Trigger::PauseRelease,
        "drain" => Trigger::Drain,
        "xrun" => Trigger::Xrun,
        other => {
            return Err(format!(
                "stream {other:?}: use start, stop, pause, resume, drain or xrun"
            ))
        }
    })
}

/// Parses (xflags: unknown, repeated or malformed flags are errors) and checks the values.
fn parse(args: Vec<std::ffi::OsString>) -> Result<Cmd, String> {
    use flags::PcmsigCmd as C;
    let f = flags::Pcmsig::from_vec(args).map_err(|e| e.to_string())?;
    Ok(match f.subcommand {
        C::Listen(l) => Cmd::Listen {
            signal: match l.signal {
                Some(s) => s.parse::<Signal>().map_err(|e| e.to_string())?,
                None => Signal::rtmin(0),
            },
            mode: match l.mode {
                Some(m) => m.parse()?,
                None => Mode::Wait,
            },
            count: l.count,
            timeout_ms: l.timeout_ms.unwrap_or(0),
        },
        C::Stream(st) => Cmd::Stream {
            action: trigger(&st.action)?,
            period_us: st.period_us.unwrap_or(PERIOD_US),
            periods: st.periods.unwrap_or(0),
        },
        C::Stats(_) => Cmd::Stats,
        C::Demo(d) => Cmd::Demo {
            period_us: d.period_us.unwrap_or(PERIOD_US),
            periods: d.periods.unwrap_or(10),
            timeout_ms: d.timeout_ms.unwrap_or(5000),
        },
        C::Scorer(sc) => {
            let scores = sc.scores.unwrap_or_else(|| "46W".into());
            if let Some(c) = scores.chars().find(|c| !matches!(c, '4' | '6' | 'W')) {
                return Err(format!("score {c:?}: use 4, 6 or W"));
            }
            Cmd::Scorer {
                manager: sc.manager_pid,
                scores,
            }
        }
        C::Manager(m) => Cmd::Manager {
            count: m.count.unwrap_or(3),
            stream: m.stream,
        },
    })
}

/// Receives events and prints them with their latency (from the matching `read()` record).
fn listen(
    signal: Signal,
    mode: Mode,
    count: Option<u64>,
    timeout_ms: u64,
    quiet_until_ready: Option<std::sync::mpsc::Sender<()>>,
) -> pcmsig::Result<(GapDetector, u64)> {
    let rx = Receiver::new(mode, &[signal])?;
    let dev = Device::open_nonblocking()?;
    dev.register(signal)?;
    println!(
        "listening on {signal} ({} mode), thread {}",
        mode.name(),
        pcmsig::sys::gettid()
    );
    if let Some(tx) = quiet_until_ready {
        let _ = tx.send(());
    }
    let timeout = if timeout_ms == 0 {
        Duration::from_secs(3600)
    } else {
        Duration::from_millis(timeout_ms)
    };
    let mut stamps: HashMap<u32, u64> = HashMap::new();
    let mut gaps = GapDetector::default();
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let Some(info) = rx.recv_timeout(timeout)? else {
            println!("no event for {} ms", timeout.as_millis());
            break;
        };
        let got = now_ns();
        dev.take_stamps(&mut stamps);
        n += 1;
        let Some(ev) = Event::decode(&info) else {
            println!("signal {} with foreign value {:#x}", info.signo, info.value);
            continue;
        };
        let latency = stamps
            .remove(&ev.seq)
            .map(|t| format!(" (latency {} us)", got.saturating_sub(t) / 1000))
            .unwrap_or_default();
        let gap = match gaps.check(ev.seq) {
            SeqCheck::Gap { missed } => format!(" [{missed} missed]"),
            SeqCheck::Reordered => " [out of order]".into(),
            _ => String::new(),
        };
        println!("{}{latency}{gap}", describe(ev.kind, ev.seq));
    }
    Ok((gaps, n))
}

fn print_stats(s: &pcmsig::Stats) {
    let state = pcmsig::State::from_u32(s.state).map_or("?", |st| st.name());
    println!(
        "state {state}, {} listener(s), {} events, {} periods this run",
        s.listeners, s.events, s.periods
    );
    for (name, l) in [("this file", &s.file), ("all listeners", &s.total)] {
        println!(
            "{name}: fired {} = delivered {} + dropped {} (queue full {}, exited {}, exec'd {}, no permission {})",
            l.fired, l.delivered, l.dropped(), l.dropped_queue_full, l.dropped_exited, l.dropped_execd, l.dropped_perm
        );
    }
}

fn run(cmd: Cmd) -> pcmsig::Result<()> {
    match cmd {
        Cmd::Listen {
            signal,
            mode,
            count,
            timeout_ms,
        } => listen(signal, mode, count, timeout_ms, None).map(|_| ()),
        Cmd::Stream {
            action,
            period_us,
            periods,
        } => {
            let dev = Device::open()?;
            if action == Trigger::Start {
                dev.configure(period_us, periods)?;
            }
            dev.trigger(action)?;
            print_stats(&dev.stats()?);
            Ok(())
        }
        Cmd::Stats => {
            print_stats(&Device::open()?.stats()?);
            Ok(())
        }
        Cmd::Demo {
            period_us,
            periods,
            timeout_ms,
        } => {
            let signal = Signal::rtmin(2);
            signal.block()?;
            let dev = Device::open()?;
            let (tx, rx) = std::sync::mpsc::channel();
            let expected = u64::from(periods) + 3; // prepared, started, periods, stopped
            let listener = std::thread::spawn(move || {
                listen(signal, Mode::Wait, Some(expected), timeout_ms, Some(tx))
            });
            let _ = rx.recv();
            println!("starting the stream: {periods} periods of {period_us} us");
            dev.configure(period_us, periods)?;
            dev.trigger(Trigger::Start)?;
            let (gaps, received) = listener
                .join()
                .map_err(|_| pcmsig::Error::Io(std::io::Error::other("listener panicked")))??;
            let s = dev.stats()?;
            print_stats(&s);
            println!(
                "lost {} / reordered {} (from sequence numbers)",
                gaps.lost, gaps.reordered
            );
            // What the listener received decides (the counters balance even when the kernel
            // dropped every signal: drops are counted).
            if received != expected || gaps.lost != 0 {
                return Err(pcmsig::Error::Io(std::io::Error::other(format!(
                    "events were lost: {received} of {expected} received"
                ))));
            }
            Ok(())
        }
        Cmd::Scorer { manager, scores } => Ok(cricket::scorer(manager, Signal::rtmin(0), &scores)?),
        Cmd::Manager { count, stream } => {
            let sig = Signal::rtmin(0);
            sig.block()?;
            println!(
                "manager {} waiting for {count} signals on {sig}",
                std::process::id()
            );
            if stream {
                let dev = Device::open()?;
                dev.register(sig)?;
                dev.configure(100_000, count.saturating_sub(3) as u32)?;
                dev.trigger(Trigger::Start)?;
                cricket::manager(sig, count)?;
            } else {
                cricket::manager(sig, count)?;
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cmd = match parse(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pcmsig: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcmsig: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Cmd, String> {
        parse(s.split_whitespace().map(Into::into).collect())
    }

    #[test]
    fn listen_defaults_and_flags() {
        assert_eq!(
            p("listen").unwrap(),
            Cmd::Listen {
                signal: Signal::rtmin(0),
                mode: Mode::Wait,
                count: None,
                timeout_ms: 0
            }
        );
        assert_eq!(
            p("listen --signal rtmin+2 --mode signalfd --count 5").unwrap(),
            Cmd::Listen {
                signal: Signal::rtmin(2),
                mode: Mode::Signalfd,
                count: Some(5),
                timeout_ms: 0
            }
        );
        assert_eq!(
            p("listen --signal usr1 --mode handler").unwrap(),
            Cmd::Listen {
                signal: Signal::USR1,
                mode: Mode::Handler,
                count: None,
                timeout_ms: 0
            }
        );
    }

    #[test]
    fn stream_actions_and_numbers() {
        assert_eq!(
            p("stream start --period-us 500 --periods 4").unwrap(),
            Cmd::Stream {
                action: Trigger::Start,
                period_us: 500,
                periods: 4
            }
        );
        assert_eq!(
            p("stream pause").unwrap(),
            Cmd::Stream {
                action: Trigger::PausePush,
                period_us: 10_000,
                periods: 0
            }
        );
        assert_eq!(
            p("stream resume").unwrap(),
            Cmd::Stream {
                action: Trigger::PauseRelease,
                period_us: 10_000,
                periods: 0
            }
        );
    }

    #[test]
    fn bad_input_is_explained() {
        assert!(p("listen --signal int").unwrap_err().contains("bad signal"));
        assert!(p("listen --mode poll")
            .unwrap_err()
            .contains("use wait, signalfd or handler"));
        assert!(p("stream jump").unwrap_err().contains("use start"));
        assert!(p("stream start --period-us x")
            .unwrap_err()
            .contains("can't parse `--period-us`"));
        assert!(p("stream start --periods")
            .unwrap_err()
            .contains("expected a value for `--periods`"));
        assert!(p("stats --bogus").unwrap_err().contains("unexpected flag"));
        assert!(p("listen --count 1 --count 2")
            .unwrap_err()
            .contains("more than once"));
        assert!(p("scorer 12 45").unwrap_err().contains("use 4, 6 or W"));
        assert!(p("frobnicate").unwrap_err().contains("unexpected argument"));
        assert!(p("stats extra")
            .unwrap_err()
            .contains("unexpected argument"));
    }

    #[test]
    fn scorer_and_manager() {
        assert_eq!(
            p("scorer 42").unwrap(),
            Cmd::Scorer {
                manager: 42,
                scores: "46W".into()
            }
        );
        assert_eq!(
            p("manager --count 5 --stream").unwrap(),
            Cmd::Manager {
                count: 5,
                stream: true
            }
        );
    }
}
