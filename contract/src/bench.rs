//! `cargo xtask bench`'s side of the contract: its defaults, the paths it measures, and the
//! records the guest's `pcmsig-bench` prints one a line (`BENCH {json}`) and xtask reads back
//! from the console ([`Record::to_line`], [`Record::from_line`]).

use serde_json::{json, Value};

/// Runs per figure unless `--runs` says otherwise (xtask's and the guest's default).
pub const RUNS: u32 = 5;
/// Timer periods per latency run unless `--events` says otherwise.
pub const EVENTS: u32 = 500;
/// Events per throughput run unless `--flood` says otherwise.
pub const FLOOD: u32 = 100_000;

/// The delivery paths the benchmark measures, by the names its records and report use: the
/// three signal receivers (`pcmsig::Mode`) and `read()` of the event records.
pub const PATHS: [&str; 4] = ["sigwaitinfo", "signalfd+epoll", "handler", "read"];

/// The latency row of no delivery path: a `clock_nanosleep` loop's lateness.
pub const FLOOR: &str = "floor";

/// The suffix of a signal path's throughput floor: the same receiving code fed by another
/// thread's `pthread_sigqueue()` as fast as it can, what no module can beat
/// (`sigwaitinfo@sigqueue`, ...).
pub const SIGQUEUE: &str = "@sigqueue";

/// The signal paths ([`PATHS`] but `read()`), which have a [`SIGQUEUE`] floor.
pub fn signal_paths() -> impl Iterator<Item = &'static str> {
    PATHS.into_iter().filter(|p| *p != "read")
}

/// The percentiles of a latency record, in its order: name and fraction.
pub const PERCENTILES: [(&str, f64); 8] = [
    ("p1", 0.01),
    ("p10", 0.10),
    ("p25", 0.25),
    ("p50", 0.50),
    ("p75", 0.75),
    ("p90", 0.90),
    ("p99", 0.99),
    ("max", 1.0),
];

/// Indices into [`PERCENTILES`] (and a record's `pcts_ns`) by name.
pub mod pct {
    pub const P1: usize = 0;
    pub const P25: usize = 2;
    pub const P50: usize = 3;
    pub const P75: usize = 4;
    pub const P99: usize = 6;
    pub const MAX: usize = 7;
}

/// Listener counts of the cost curve (`Scale` records of [`LISTENERS`]).
pub const LISTENER_COUNTS: [u32; 5] = [1, 4, 16, 64, 256];
/// Open-file counts of the cost curve (`Scale` records of [`FILES`]).
pub const FILE_COUNTS: [u32; 3] = [1, 100, 10_000];
/// Open-file counts of another user in the isolation curve (`Scale` records of [`OTHER_USER`]).
pub const OTHER_USER_FILE_COUNTS: [u32; 4] = [1, 100, 1_000, 10_000];
/// The isolation curve: one user's listener latency on a 1 ms stream ([`OTHER_USER_PERIOD_US`])
/// while another user keeps `n` open files of its own stream busy on the same CPU (its emitter
/// check and its delivery walk them, bursts injected back to back). Flat when no walk of one
/// user's files holds up another user's timer or delivery.
pub const OTHER_USER: &str = "other user's files";
/// The period of the isolation curve's stream (µs).
pub const OTHER_USER_PERIOD_US: u32 = 1_000;
/// Periods of each isolation run.
pub const OTHER_USER_PERIODS: u32 = 200;
/// A cost curve over registered listeners, one thread each (latency at every listener, and
/// the deliveries per second to all of them together).
pub const LISTENERS: &str = "listeners";
/// A cost curve over open files of the stream's user, one of them a listener (its latency, and
/// the time of one GET_STATS).
pub const FILES: &str = "files";
/// The period of the cost curves' latency runs (µs): 50 ms, so that the delivery of one period
/// to 256 listeners (about 10 ms under TCG) ends before the next period comes; at 10 ms the
/// stream's backlog grew until its xrun (seen on 2026-11-30).
pub const SCALE_PERIOD_US: u32 = 50_000;
/// Periods of each cost-curve latency run.
pub const SCALE_PERIODS: u32 = 20;

/// What starts a record's console line.
pub const PREFIX: &str = "BENCH ";

/// One measurement of the guest's benchmark.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// Kernel event to receipt, per period, as [`PERCENTILES`] in ns.
    Latency {
        /// A path of [`PATHS`] or [`FLOOR`], with `@10ms` for the 10 ms periods.
        path: String,
        run: u32,
        /// Periods measured.
        n: usize,
        pcts_ns: [u64; PERCENTILES.len()],
    },
    /// Events per second through a path, and how many were lost.
    Throughput {
        path: String,
        run: u32,
        n: u32,
        per_s: f64,
        lost: u64,
    },
    /// One point of a cost curve: `n` listeners or open files ([`LISTENERS`], [`FILES`]), or
    /// another user's open files ([`OTHER_USER`]).
    Scale {
        what: String,
        n: u32,
        run: u32,
        /// Kernel event to receipt, per period and listener, as [`PERCENTILES`] in ns.
        pcts_ns: [u64; PERCENTILES.len()],
        /// Deliveries per second to all listeners together ([`LISTENERS`] only).
        per_s: Option<f64>,
        /// One GET_STATS, in ns ([`FILES`] only).
        get_stats_ns: Option<u64>,
    },
    /// The largest burst queued without loss, and the limit it met.
    Burst { queued: u64, rlimit_sigpending: u64 },
    /// A run that failed in the guest.
    Error(String),
}

impl Record {
    /// The console line (without the newline).
    pub fn to_line(&self) -> String {
        let v = match self {
            Record::Latency {
                path,
                run,
                n,
                pcts_ns,
            } => json!({"kind": "latency", "path": path, "run": run, "n": n, "pcts_ns": pcts_ns}),
            Record::Throughput {
                path,
                run,
                n,
                per_s,
                lost,
            } => json!({"kind": "throughput", "path": path, "run": run, "n": n,
                        "per_s": per_s.round(), "lost": lost}),
            Record::Scale {
                what,
                n,
                run,
                pcts_ns,
                per_s,
                get_stats_ns,
            } => json!({"kind": "scale", "what": what, "n": n, "run": run, "pcts_ns": pcts_ns,
                        "per_s": per_s.map(f64::round), "get_stats_ns": get_stats_ns}),
            Record::Burst {
                queued,
                rlimit_sigpending,
            } => json!({"kind": "burst", "queued": queued, "rlimit_sigpending": rlimit_sigpending}),
            Record::Error(e) => json!({ "error": e }),
        };
        format!("{PREFIX}{v}")
    }

    /// The record on a console line, if the line has one (anywhere: the kernel may have
    /// written on the same line first); an error names what is wrong with it.
    pub fn from_line(line: &str) -> Option<Result<Record, String>> {
        let (_, text) = line.split_once(PREFIX)?;
        Some(Self::parse(text.trim_end()).map_err(|e| format!("{e}: {text}")))
    }

    fn parse(text: &str) -> Result<Record, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(format!("no {k:?}"))
        };
        let u = |k: &str| v.get(k).and_then(Value::as_u64).ok_or(format!("no {k:?}"));
        if let Ok(e) = s("error") {
            return Ok(Record::Error(e));
        }
        let small = |k: &str| u(k).and_then(|n| u32::try_from(n).map_err(|e| e.to_string()));
        let pcts = || -> Result<[u64; PERCENTILES.len()], String> {
            let pcts: Vec<u64> = v
                .get("pcts_ns")
                .and_then(Value::as_array)
                .ok_or("no \"pcts_ns\"")?
                .iter()
                .map(|x| x.as_u64().ok_or("a percentile that is not a count of ns"))
                .collect::<Result<_, _>>()?;
            pcts.try_into()
                .map_err(|p: Vec<u64>| format!("{} percentiles", p.len()))
        };
        match s("kind")?.as_str() {
            "latency" => Ok(Record::Latency {
                path: s("path")?,
                run: small("run")?,
                n: u("n")? as usize,
                pcts_ns: pcts()?,
            }),
            "scale" => Ok(Record::Scale {
                what: s("what")?,
                n: small("n")?,
                run: small("run")?,
                pcts_ns: pcts()?,
                per_s: v.get("per_s").and_then(Value::as_f64),
                get_stats_ns: v.get("get_stats_ns").and_then(Value::as_u64),
            }),
            "throughput" => Ok(Record::Throughput {
                path: s("path")?,
                run: small("run")?,
                n: small("n")?,
                per_s: v
                    .get("per_s")
                    .and_then(Value::as_f64)
                    .ok_or("no \"per_s\"")?,
                lost: u("lost")?,
            }),
            "burst" => Ok(Record::Burst {
                queued: u("queued")?,
                rlimit_sigpending: u("rlimit_sigpending")?,
            }),
            k => Err(format!("unknown kind {k:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_paths_are_every_path_but_read() {
        let paths: Vec<&str> = signal_paths().collect();
        assert_eq!(paths, ["sigwaitinfo", "signalfd+epoll", "handler"]);
    }

    #[test]
    fn every_record_round_trips_through_a_console_line() {
        let records = [
            Record::Latency {
                path: "signalfd+epoll@10ms".into(),
                run: 3,
                n: 500,
                pcts_ns: [1, 2, 3, 4, 5, 6, 7, u64::MAX / 2],
            },
            Record::Throughput {
                path: "read".into(),
                run: 1,
                n: 100_000,
                per_s: 412_345.0,
                lost: 2,
            },
            Record::Burst {
                queued: 1972,
                rlimit_sigpending: 1972,
            },
            Record::Scale {
                what: LISTENERS.into(),
                n: 256,
                run: 2,
                pcts_ns: [9, 8, 7, 6, 5, 4, 3, 2],
                per_s: Some(81_234.0),
                get_stats_ns: None,
            },
            Record::Scale {
                what: FILES.into(),
                n: 10_000,
                run: 1,
                pcts_ns: [1; 8],
                per_s: None,
                get_stats_ns: Some(4_567),
            },
            Record::Error("handler: \"silence\" after 3 periods\n".into()),
        ];
        for r in records {
            let line = r.to_line();
            assert!(!line.contains('\n'), "{line}");
            // As the console shows it: after a kernel message, with a carriage return.
            let console = format!("[    3.1] pcmsig: x{line}\r");
            assert_eq!(Record::from_line(&console), Some(Ok(r)), "{line}");
        }
    }

    #[test]
    fn other_lines_are_not_records_and_broken_records_say_why() {
        assert_eq!(Record::from_line("pcmsig-init: up 0.7 s"), None);
        let short = r#"BENCH {"kind":"latency","path":"read","run":1,"n":3,"pcts_ns":[1,2]}"#;
        let e = Record::from_line(short).unwrap().unwrap_err();
        assert!(e.contains("2 percentiles"), "{e}");
        assert!(Record::from_line("BENCH {\"kind\":\"x\"}")
            .unwrap()
            .is_err());
        assert!(Record::from_line("BENCH not json").unwrap().is_err());
    }

    #[test]
    fn percentile_indices_name_their_percentiles() {
        for (i, name) in [
            (pct::P1, "p1"),
            (pct::P25, "p25"),
            (pct::P50, "p50"),
            (pct::P75, "p75"),
            (pct::P99, "p99"),
            (pct::MAX, "max"),
        ] {
            assert_eq!(PERCENTILES[i].0, name);
        }
    }
}
