//! What a `cargo xtask test` run measured, for people and for programs: the phases of a run
//! ([`Phase`], their labels for the log line and their keys for the file), and
//! `summary.jsonl`, one JSON object a VM ([`VmSummary`]), written by `test` and read by
//! `bench` (and scripts). Both sides are here, on `serde_json`, with a round-trip test.

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How `--edit-first`'s verdict of the first tests begins (after `xtask: `): the bench times it.
pub const FIRST_VERDICT: &str = "first verdict";

/// The run's `summary.jsonl` in its output directory ([`crate::report::summary`]).
pub const SUMMARY: &str = "summary.jsonl";

/// A timed phase of a booting command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The kernel, built now or found in the cache.
    Kernel {
        built: bool,
    },
    Module,
    /// The module's instrumented copy (`cargo xtask coverage`).
    CoverageBuild,
    GuestPrograms,
    Initramfs,
    /// Every VM of the run, boot to end.
    Vms,
    Total,
}

impl Phase {
    /// For the log line (`xtask: kernel (cached) 0.4 s, ...`).
    pub fn label(self) -> &'static str {
        match self {
            Phase::Kernel { built: true } => "kernel (built)",
            Phase::Kernel { built: false } => "kernel (cached)",
            Phase::Module => "module",
            Phase::CoverageBuild => "coverage build",
            Phase::GuestPrograms => "guest programs",
            Phase::Initramfs => "initramfs",
            Phase::Vms => "vms",
            Phase::Total => "total",
        }
    }

    /// Its key in `summary.jsonl` (seconds).
    pub fn key(self) -> &'static str {
        match self {
            Phase::Kernel { .. } => "kernel_s",
            Phase::Module => "module_s",
            Phase::CoverageBuild => "coverage_build_s",
            Phase::GuestPrograms => "guest_s",
            Phase::Initramfs => "initramfs_s",
            Phase::Vms => "vms_s",
            Phase::Total => "total_s",
        }
    }
}

/// Where a command's time went, in order.
pub type Times = Vec<(Phase, Duration)>;

/// `kernel (cached) 0.4 s, module 0.1 s, ...`
pub fn fmt_times(times: &[(Phase, Duration)]) -> String {
    times
        .iter()
        .map(|(p, d)| format!("{} {:.1} s", p.label(), d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One VM's line of `summary.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub struct VmSummary {
    pub vm: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The VM's verdict.
    pub pass: bool,
    /// Host seconds from starting QEMU to its end.
    pub vm_s: f64,
    /// The guest's uptime when init started.
    pub init_uptime_s: Option<f64>,
    /// Host seconds from starting QEMU to the first KTAP line.
    pub first_ktap_s: Option<f64>,
    /// The whole run's phases (the same on every VM's line), by [`Phase::key`].
    pub phases: BTreeMap<String, f64>,
}

/// Seconds to the millisecond: the file's precision.
fn ms(s: f64) -> Value {
    Value::from((s * 1000.0).round() / 1000.0)
}

impl VmSummary {
    /// Its JSON line (without the newline).
    pub fn to_line(&self) -> String {
        let mut m = Map::new();
        m.insert("vm".into(), self.vm.clone().into());
        for (k, n) in [
            ("passed", self.passed),
            ("failed", self.failed),
            ("skipped", self.skipped),
        ] {
            m.insert(k.into(), n.into());
        }
        m.insert("pass".into(), self.pass.into());
        m.insert("vm_s".into(), ms(self.vm_s));
        for (k, v) in [
            ("init_uptime_s", self.init_uptime_s),
            ("first_ktap_s", self.first_ktap_s),
        ] {
            m.insert(k.into(), v.map_or(Value::Null, ms));
        }
        for (k, v) in &self.phases {
            m.insert(k.clone(), ms(*v));
        }
        Value::Object(m).to_string()
    }

    /// Reads a line [`to_line`](Self::to_line) wrote.
    pub fn from_line(line: &str) -> Result<VmSummary> {
        let v: Value = serde_json::from_str(line).context("a summary line that is not JSON")?;
        let m = v
            .as_object()
            .context("a summary line that is not an object")?;
        let count = |k: &str| {
            m.get(k)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .with_context(|| format!("summary line without {k:?}"))
        };
        let secs = |k: &str| m.get(k).and_then(Value::as_f64);
        let known = [
            "vm",
            "passed",
            "failed",
            "skipped",
            "pass",
            "vm_s",
            "init_uptime_s",
            "first_ktap_s",
        ];
        Ok(VmSummary {
            vm: m
                .get("vm")
                .and_then(Value::as_str)
                .context("summary line without \"vm\"")?
                .to_string(),
            passed: count("passed")?,
            failed: count("failed")?,
            skipped: count("skipped")?,
            pass: m
                .get("pass")
                .and_then(Value::as_bool)
                .context("summary line without \"pass\"")?,
            vm_s: secs("vm_s").context("summary line without \"vm_s\"")?,
            init_uptime_s: secs("init_uptime_s"),
            first_ktap_s: secs("first_ktap_s"),
            phases: m
                .iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect(),
        })
    }

    /// The seconds of phase `p`, if the run had it.
    pub fn phase(&self, p: Phase) -> Option<f64> {
        self.phases.get(p.key()).copied()
    }
}

/// The run's phases, as every VM's line carries them.
pub fn phases(times: &[(Phase, Duration)]) -> BTreeMap<String, f64> {
    times
        .iter()
        .map(|(p, d)| (p.key().to_string(), d.as_secs_f64()))
        .collect()
}

/// Writes `summary.jsonl` at `path`.
pub fn write(path: &Path, vms: &[VmSummary]) -> Result<()> {
    let text: String = vms.iter().map(|s| s.to_line() + "\n").collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Reads `summary.jsonl` at `path`.
pub fn read(path: &Path) -> Result<Vec<VmSummary>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(VmSummary::from_line)
        .collect::<Result<_>>()
        .with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_line_round_trips() {
        let times = vec![
            (Phase::Kernel { built: false }, Duration::from_millis(412)),
            (Phase::Module, Duration::from_millis(1234)),
            (Phase::GuestPrograms, Duration::from_millis(50)),
            (Phase::Vms, Duration::from_millis(9876)),
        ];
        let s = VmSummary {
            vm: "plain \"VM\"".into(),
            passed: 131,
            failed: 1,
            skipped: 9,
            pass: false,
            vm_s: 9.5,
            init_uptime_s: Some(0.71),
            first_ktap_s: None,
            phases: phases(&times),
        };
        let line = s.to_line();
        assert!(!line.contains('\n'), "{line}");
        let back = VmSummary::from_line(&line).unwrap();
        assert_eq!(back, s, "{line}");
        assert_eq!(back.phase(Phase::Module), Some(1.234));
        assert_eq!(back.phase(Phase::Kernel { built: true }), Some(0.412));
        assert_eq!(back.phase(Phase::Total), None);
    }

    #[test]
    fn a_line_without_its_counts_is_an_error() {
        assert!(VmSummary::from_line(r#"{"vm":"plain","passed":1}"#).is_err());
        assert!(VmSummary::from_line("plain: 1 passed").is_err());
    }

    #[test]
    fn phase_keys_are_distinct_and_labels_readable() {
        let all = [
            Phase::Kernel { built: true },
            Phase::Module,
            Phase::CoverageBuild,
            Phase::GuestPrograms,
            Phase::Initramfs,
            Phase::Vms,
            Phase::Total,
        ];
        let keys: std::collections::BTreeSet<_> = all.iter().map(|p| p.key()).collect();
        assert_eq!(keys.len(), all.len());
        assert_eq!(
            fmt_times(&[(Phase::Kernel { built: true }, Duration::from_secs(2))]),
            "kernel (built) 2.0 s"
        );
    }
}
