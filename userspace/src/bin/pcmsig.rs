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

use pcmsig::sys::SigInfo;
use pcmsig::{
    cricket, describe, uapi, Device, Event, FdReceiver, GapDetector, HandlerReceiver, SeqCheck,
    Signal, Trigger, WaitReceiver,
};

/// How `listen` receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Wait,
    Signalfd,
    Handler,
}

/// A parsed command line.
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

const USAGE: &str = "usage:
  pcmsig listen [--signal rtmin+2] [--mode wait|signalfd|handler] [--count N] [--timeout-ms N]
  pcmsig stream start|stop|pause|resume|drain|xrun [--period-us N] [--periods N]
  pcmsig stats
  pcmsig demo [--period-us N] [--periods N]
  pcmsig scorer MANAGER_PID [SCORES]
  pcmsig manager [--count N] [--stream]";

fn num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let (sub, rest) = args.split_first().ok_or("missing command")?;
    let mut positional = Vec::new();
    let mut flags: HashMap<&str, Option<&String>> = HashMap::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--stream" => {
                flags.insert("--stream", None);
            }
            f @ ("--signal" | "--mode" | "--count" | "--timeout-ms" | "--period-us"
            | "--periods") => {
                flags.insert(
                    f,
                    Some(it.next().ok_or_else(|| format!("{f} needs a value"))?),
                );
            }
            f if f.starts_with("--") => return Err(format!("unknown flag {f}")),
            p => positional.push(p.to_string()),
        }
    }
    let get = |f: &str| flags.get(f).copied().flatten();
    let period_us = get("--period-us")
        .map(|_| num("--period-us", get("--period-us")))
        .transpose()?
        .unwrap_or(10_000);
    let periods = get("--periods")
        .map(|_| num("--periods", get("--periods")))
        .transpose()?;
    let cmd = match sub.as_str() {
        "listen" => {
            let signal = match get("--signal") {
                Some(s) => s.parse::<Signal>().map_err(|e| e.to_string())?,
                None => Signal::rtmin(0),
            };
            let mode = match get("--mode").map(String::as_str) {
                None | Some("wait") => Mode::Wait,
                Some("signalfd") => Mode::Signalfd,
                Some("handler") => Mode::Handler,
                Some(m) => return Err(format!("--mode {m:?}: use wait, signalfd or handler")),
            };
            let count = get("--count")
                .map(|_| num("--count", get("--count")))
                .transpose()?;
            let timeout_ms = get("--timeout-ms")
                .map(|_| num("--timeout-ms", get("--timeout-ms")))
                .transpose()?
                .unwrap_or(0);
            Cmd::Listen {
                signal,
                mode,
                count,
                timeout_ms,
            }
        }
        "stream" => {
            let action = match positional.first().map(String::as_str) {
                Some("start") => Trigger::Start,
                Some("stop") => Trigger::Stop,
                Some("pause") => Trigger::PausePush,
                Some("resume") => Trigger::PauseRelease,
                Some("drain") => Trigger::Drain,
                Some("xrun") => Trigger::Xrun,
                other => {
                    return Err(format!(
                        "stream {other:?}: use start, stop, pause, resume, drain or xrun"
                    ))
                }
            };
            Cmd::Stream {
                action,
                period_us,
                periods: periods.unwrap_or(0),
            }
        }
        "stats" => Cmd::Stats,
        "demo" => Cmd::Demo {
            period_us,
            periods: periods.unwrap_or(10),
        },
        "scorer" => {
            let manager = num("MANAGER_PID", positional.first())?;
            let scores = positional.get(1).cloned().unwrap_or_else(|| "46W".into());
            if let Some(c) = scores.chars().find(|c| !matches!(c, '4' | '6' | 'W')) {
                return Err(format!("score {c:?}: use 4, 6 or W"));
            }
            Cmd::Scorer { manager, scores }
        }
        "manager" => Cmd::Manager {
            count: get("--count")
                .map(|_| num("--count", get("--count")))
                .transpose()?
                .unwrap_or(3),
            stream: flags.contains_key("--stream"),
        },
        other => return Err(format!("unknown command {other:?}")),
    };
    if !positional.is_empty() && !matches!(cmd, Cmd::Stream { .. } | Cmd::Scorer { .. }) {
        return Err(format!("unexpected argument {:?}", positional[0]));
    }
    Ok(cmd)
}

fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Receives events and prints them with their latency (from the matching `read()` record).
fn listen(
    signal: Signal,
    mode: Mode,
    count: Option<u64>,
    timeout_ms: u64,
    quiet_until_ready: Option<std::sync::mpsc::Sender<()>>,
) -> pcmsig::Result<GapDetector> {
    enum Rx {
        Wait(WaitReceiver),
        Fd(FdReceiver),
        Handler(HandlerReceiver),
    }
    let rx = match mode {
        Mode::Wait => Rx::Wait(WaitReceiver::new(&[signal])?),
        Mode::Signalfd => Rx::Fd(FdReceiver::new(&[signal])?),
        Mode::Handler => Rx::Handler(HandlerReceiver::install(&[signal], true)?),
    };
    let dev = Device::open_nonblocking()?;
    dev.register(signal)?;
    println!(
        "listening on {signal} ({mode:?} mode), thread {}",
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
        let info: Option<SigInfo> = match &rx {
            Rx::Wait(r) => r.recv_timeout(timeout)?,
            Rx::Fd(r) => r.recv_timeout(timeout)?,
            Rx::Handler(r) => r.recv_timeout(timeout)?,
        };
        let Some(info) = info else {
            println!("no event for {} ms", timeout.as_millis());
            break;
        };
        let got = now_ns();
        while let Ok(recs) = dev.read_records(64) {
            if recs.is_empty() {
                break;
            }
            for r in recs {
                stamps.insert(r.seq & uapi::SEQ_MASK, r.timestamp_ns);
            }
        }
        n += 1;
        match Event::decode(&info) {
            Some(ev) => {
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
            None => println!("signal {} with foreign value {:#x}", info.signo, info.value),
        }
    }
    Ok(gaps)
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
        Cmd::Demo { period_us, periods } => {
            let signal = Signal::rtmin(2);
            signal.block()?;
            let dev = Device::open()?;
            let (tx, rx) = std::sync::mpsc::channel();
            let expected = u64::from(periods) + 3; // prepared, started, periods, stopped
            let listener = std::thread::spawn(move || {
                listen(signal, Mode::Wait, Some(expected), 5000, Some(tx))
            });
            let _ = rx.recv();
            println!("starting the stream: {periods} periods of {period_us} us");
            dev.configure(period_us, periods)?;
            dev.trigger(Trigger::Start)?;
            let gaps = listener
                .join()
                .map_err(|_| pcmsig::Error::Io(std::io::Error::other("listener panicked")))??;
            let s = dev.stats()?;
            print_stats(&s);
            println!(
                "lost {} / reordered {} (from sequence numbers)",
                gaps.lost, gaps.reordered
            );
            if gaps.lost != 0 || s.total.fired != s.total.delivered + s.total.dropped() {
                return Err(pcmsig::Error::Io(std::io::Error::other("events were lost")));
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") || args.is_empty() {
        println!("{USAGE}");
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let cmd = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pcmsig: {e}\n{USAGE}");
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
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
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
            .contains("not a valid number"));
        assert!(p("stream start --periods")
            .unwrap_err()
            .contains("needs a value"));
        assert!(p("stats --bogus").unwrap_err().contains("unknown flag"));
        assert!(p("scorer 12 45").unwrap_err().contains("use 4, 6 or W"));
        assert!(p("frobnicate").unwrap_err().contains("unknown command"));
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
