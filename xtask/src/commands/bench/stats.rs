//! Timing a command and the sample statistics of the timings, shared by the benchmarks
//! (`bench.rs`) and the peers' timings (`peers.rs`).

use anyhow::{bail, Context, Result};
use std::process::Command;
use std::time::Instant;

/// How a run shows it did the job: exit status 0, or (virtme-ng, see below) a line of its log.
#[derive(Clone, Copy)]
pub enum Success {
    Status,
    Says(&'static str),
}

/// Runs `cmd` once (`what` names it in errors); its wall time in seconds. Fails with its output
/// when it fails: the one timing of a whole command, for `bench` and its peers.
pub fn time_run(what: &str, cmd: &mut Command, success: Success) -> Result<f64> {
    let t = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("running {what}: {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    let ok = match success {
        Success::Status => out.status.success(),
        Success::Says(line) => {
            String::from_utf8_lossy(&out.stdout).contains(line)
                || String::from_utf8_lossy(&out.stderr).contains(line)
        }
    };
    if !ok {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

/// The decades a log-scaled axis spans for the positive values in `vals`: (lowest, highest)
/// powers of ten, at least one apart, the lowest never under `floor`.
pub fn log_decades(vals: &[f64], floor: f64) -> (f64, f64) {
    let lo = vals
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(floor)
        .log10()
        .floor();
    let hi = vals
        .iter()
        .copied()
        .fold(floor, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    (lo, hi)
}

/// Median, min and max of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn spread(v: &[f64]) -> Spread {
    if v.is_empty() {
        return Spread::default();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Spread {
        median,
        min: s[0],
        max: s[n - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_min_max() {
        let s = spread(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!(
            s,
            Spread {
                median: 2.5,
                min: 1.0,
                max: 10.0
            }
        );
        assert_eq!(spread(&[4.0]).median, 4.0);
        assert_eq!(spread(&[]), Spread::default());
    }
}
