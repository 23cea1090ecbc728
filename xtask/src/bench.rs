//! `cargo xtask bench`: the harness's speed and every delivery path's latency and throughput,
//! measured in one run on one machine. Never asserted anywhere: these are measurements.
//!
//! Writes a table to the terminal and `bench.json`, `bench.md` and `latency.svg` under
//! `target/pcmsig/bench/`.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};
use xshell::Shell;

use crate::build::build_all;
pub use crate::stats::{spread, Spread};
use crate::{out_dir, project_root, vm};
use pcmsig_uapi::harness::{BENCH_EVENTS, BENCH_FLOOD, BENCH_RUNS};

const PATHS: [&str; 4] = ["sigwaitinfo", "signalfd+epoll", "handler", "read"];
/// Latency rows: at 1 ms periods and at 10 ms (`@10ms`), each beside its floor (a
/// `clock_nanosleep` loop, what no delivery path can beat).
const LATENCY_ROWS: [&str; 10] = [
    "floor",
    "sigwaitinfo",
    "signalfd+epoll",
    "handler",
    "read",
    "floor@10ms",
    "sigwaitinfo@10ms",
    "signalfd+epoll@10ms",
    "handler@10ms",
    "read@10ms",
];
const PCT_NAMES: [&str; 8] = ["p1", "p10", "p25", "p50", "p75", "p90", "p99", "max"];

/// The value of `"key":` in a flat JSON object line (numbers, strings, arrays of numbers).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let i = line.find(&pat)? + pat.len();
    let rest = &line[i..];
    let end = if rest.starts_with('[') {
        rest.find(']')? + 1
    } else if let Some(r) = rest.strip_prefix('"') {
        r.find('"')? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim_matches('"'))
}

fn num(line: &str, key: &str) -> Option<f64> {
    field(line, key)?.parse().ok()
}

fn nums(line: &str, key: &str) -> Vec<f64> {
    field(line, key)
        .map(|a| {
            a.trim_matches(['[', ']'])
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Per-path results aggregated over runs.
#[derive(Debug, Default)]
pub struct PathResult {
    pub name: &'static str,
    /// For each percentile in PCT_NAMES, the spread over runs (µs).
    pub pcts_us: Vec<Spread>,
    pub per_s: Spread,
    pub lost: u64,
    pub runs: usize,
}

pub fn aggregate(lines: &[&str]) -> (Vec<PathResult>, Option<(u64, u64)>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for l in lines {
        if let Some(e) = field(l, "error") {
            errors.push(e.to_string());
        }
    }
    for path in LATENCY_ROWS {
        let lat: Vec<Vec<f64>> = lines
            .iter()
            .filter(|l| field(l, "kind") == Some("latency") && field(l, "path") == Some(path))
            .map(|l| {
                nums(l, "pcts_ns")
                    .into_iter()
                    .map(|ns| ns / 1000.0)
                    .collect::<Vec<_>>()
            })
            .filter(|v| v.len() == PCT_NAMES.len())
            .collect();
        let thr: Vec<&&str> = lines
            .iter()
            .filter(|l| field(l, "kind") == Some("throughput") && field(l, "path") == Some(path))
            .collect();
        let pcts_us = (0..PCT_NAMES.len())
            .map(|i| spread(&lat.iter().map(|v| v[i]).collect::<Vec<_>>()))
            .collect();
        out.push(PathResult {
            name: path,
            pcts_us,
            per_s: spread(
                &thr.iter()
                    .filter_map(|l| num(l, "per_s"))
                    .collect::<Vec<_>>(),
            ),
            lost: thr
                .iter()
                .filter_map(|l| num(l, "lost"))
                .map(|x| x as u64)
                .sum(),
            runs: lat.len(),
        });
    }
    let burst = lines
        .iter()
        .find(|l| field(l, "kind") == Some("burst"))
        .and_then(|l| {
            Some((
                num(l, "queued")? as u64,
                num(l, "rlimit_sigpending")? as u64,
            ))
        });
    (out, burst, errors)
}

/// Draws the latency distributions: per path, whiskers p1-p99, box p25-p75, a line at p50 and a
/// dot at the max, on a log scale (medians over runs).
pub fn svg(paths: &[PathResult]) -> String {
    let (w, row, left, top) = (760.0, 60.0, 150.0, 40.0);
    let h = top + row * paths.len() as f64 + 50.0;
    let vals: Vec<f64> = paths
        .iter()
        .flat_map(|p| p.pcts_us.iter().map(|s| s.median))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = vals
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let hi = vals
        .iter()
        .copied()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let x = |us: f64| left + (us.max(1.0).log10() - lo) / (hi - lo) * (w - left - 30.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">pcmsig delivery latency, kernel event to receipt (µs, log scale)</text>\n"
    );
    for d in (lo as i32)..=(hi as i32) {
        let us = 10f64.powi(d);
        let xx = x(us);
        let _ = writeln!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{us}</text>",
            h - 40.0,
            h - 25.0
        );
    }
    for (i, p) in paths.iter().enumerate() {
        let m = |k: usize| p.pcts_us.get(k).map_or(0.0, |s| s.median);
        let y = top + row * i as f64 + row / 2.0;
        let _ = writeln!(s, "<text x=\"10\" y=\"{:.1}\">{}</text>", y + 4.0, p.name);
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"black\"/>",
            x(m(0)),
            x(m(6))
        );
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"20\" fill=\"#9cf\" stroke=\"black\"/>",
            x(m(2)),
            y - 10.0,
            (x(m(4)) - x(m(2))).max(1.0)
        );
        let _ = writeln!(s, "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"red\" stroke-width=\"2\"/>", x(m(3)), y - 12.0, y + 12.0);
        let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"3\"/>", x(m(7)));
    }
    s.push_str("</svg>\n");
    s
}

fn timed(mut c: Command) -> Result<(Duration, String)> {
    let t = Instant::now();
    let out = c.output().context("running a benchmark command")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "benchmark command failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((t.elapsed(), text))
}

pub struct Opts {
    pub runs: usize,
    pub events: u32,
    pub flood: u32,
    pub cold: bool,
    pub peers: bool,
}

impl crate::flags::Bench {
    pub(crate) fn run(self, sh: &Shell) -> Result<()> {
        run(
            sh,
            &Opts {
                runs: self.runs.unwrap_or(BENCH_RUNS as usize).max(1),
                events: self.events.unwrap_or(BENCH_EVENTS).max(1),
                flood: self.flood.unwrap_or(BENCH_FLOOD).max(1),
                cold: self.cold,
                peers: self.peers,
            },
        )
    }
}

pub fn run(sh: &Shell, o: &Opts) -> Result<()> {
    let out = out_dir("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let machine = format!(
        "{} cores, {}, QEMU TCG (no KVM)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    let mut harness: Vec<(String, Spread, &str)> = Vec::new();
    if o.cold {
        let cold = out.join("cold-cache");
        let _ = std::fs::remove_dir_all(&cold);
        let mut c = Command::new("cargo");
        c.args(["xtask", "build"])
            .current_dir(project_root())
            .env("XDG_CACHE_HOME", &cold);
        // Reuse the installed bindgen rather than rebuilding it into the empty cache.
        c.env(
            "BINDGEN",
            crate::tools::cache_dir().join("tools/bin/bindgen"),
        );
        println!("xtask: bench: cold kernel build (about 8 minutes)");
        let (d, _) = timed(c)?;
        let _ = std::fs::remove_dir_all(&cold);
        harness.push((
            "cold build (extract, configure, kernel, module, guest)".into(),
            spread(&[d.as_secs_f64()]),
            "s",
        ));
    }
    // A no-change `cargo xtask test`, end to end, and boot to the first KTAP line.
    let (mut e2e, mut ktap, mut init) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..o.runs {
        println!(
            "xtask: bench: no-change `cargo xtask test` {}/{}",
            i + 1,
            o.runs
        );
        let mut c = Command::new("cargo");
        c.args(["xtask", "test"]).current_dir(project_root());
        let (d, _) = timed(c)?;
        e2e.push(d.as_secs_f64());
        // The plain VM's line of the run's machine-readable summary.
        let path = out_dir("test").join("summary.jsonl");
        let summary = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let plain = summary.lines().next().unwrap_or_default();
        let num = |key: &str| field(plain, key).and_then(|v| v.parse::<f64>().ok());
        ktap.extend(num("first_ktap_s"));
        init.extend(num("init_uptime_s"));
    }
    harness.push((
        "no-change `cargo xtask test`, end to end".into(),
        spread(&e2e),
        "s",
    ));
    harness.push(("QEMU start to first KTAP line".into(), spread(&ktap), "s"));
    harness.push(("guest uptime when init starts".into(), spread(&init), "s"));
    // Module rebuild after touching one file.
    let b = build_all(sh, None, false, true, false)?;
    let mut rebuild = Vec::new();
    for _ in 0..o.runs {
        let f = project_root().join("module/stream.rs");
        // Defeat xtask's own no-change shortcut: measure Kbuild's incremental rebuild.
        let _ = std::fs::remove_file(project_root().join("module/.pcmsig-stamp"));
        std::fs::File::options()
            .append(true)
            .open(&f)?
            .set_modified(std::time::SystemTime::now())?;
        let t = Instant::now();
        crate::guest::build_module(&b.tools, &b.kernel, false)?;
        rebuild.push(t.elapsed().as_secs_f64());
    }
    harness.push((
        "module rebuild after touching one file".into(),
        spread(&rebuild),
        "s",
    ));
    if o.peers {
        harness.extend(crate::peers::measure(&b.tools, o.runs)?);
    }
    // Delivery, in the guest.
    println!(
        "xtask: bench: delivery paths in the guest ({} runs)",
        o.runs
    );
    let initrd = crate::guest::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out)?;
    let env = vec![
        format!("pcmsig_runs={}", o.runs),
        format!("pcmsig_events={}", o.events),
        format!("pcmsig_flood={}", o.flood),
    ];
    let boot = vm::Boot {
        env,
        silence: Some(Duration::from_secs(120)),
        ..vm::Boot::new("bench", &out, Duration::from_secs(1200))
    };
    let run = vm::boot(&b.tools, &b.kernel, &initrd, &boot)?;
    if let Some(p) = crate::ktap::kernel_problem(&run.console) {
        bail!(
            "kernel problem during the benchmark: {p} (console: {})",
            run.console_log.display()
        );
    }
    let lines: Vec<&str> = run
        .console
        .lines()
        .filter_map(|l| l.split("BENCH ").nth(1))
        .collect();
    let (paths, burst, errors) = aggregate(&lines);
    for e in &errors {
        println!("xtask: bench: guest error: {e}");
    }
    let (paths, rows): (Vec<PathResult>, Vec<PathResult>) =
        paths.into_iter().partition(|p| PATHS.contains(&p.name));
    let read = paths
        .iter()
        .find(|p| p.name == "read")
        .map(|p| (p.pcts_us[3].median, p.per_s.median))
        .unwrap_or((0.0, 0.0));

    // Report.
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {machine}. {} runs per figure: median (min to max).\n",
        o.runs
    );
    let _ = writeln!(md, "| harness | median | spread |\n|---|---|---|");
    for (name, s, unit) in &harness {
        let _ = writeln!(
            md,
            "| {name} | {:.2} {unit} | {:.2} to {:.2} |",
            s.median, s.min, s.max
        );
    }
    let _ = writeln!(
        md,
        "\n| path | p50 µs | p99 µs | max µs | p50 vs read() | events/s | vs read() | lost |\n|---|---|---|---|---|---|---|---|"
    );
    for p in &paths {
        let (p50, p99, max) = (p.pcts_us[3], p.pcts_us[6], p.pcts_us[7]);
        let _ = writeln!(
            md,
            "| {} | {:.0} ({:.0} to {:.0}) | {:.0} | {:.0} | {:.2}x | {:.0} ({:.0} to {:.0}) | {:.2}x | {} |",
            p.name,
            p50.median,
            p50.min,
            p50.max,
            p99.median,
            max.median,
            if read.0 > 0.0 { p50.median / read.0 } else { 0.0 },
            p.per_s.median,
            p.per_s.min,
            p.per_s.max,
            if read.1 > 0.0 { p.per_s.median / read.1 } else { 0.0 },
            p.lost
        );
    }
    let _ = writeln!(
        md,
        "\n| latency at | p50 µs | p99 µs | p50 / floor | p99 / floor |\n|---|---|---|---|---|"
    );
    for name in LATENCY_ROWS {
        let Some(p) = rows.iter().chain(&paths).find(|p| p.name == name) else {
            continue;
        };
        let floor_name = if p.name.ends_with("@10ms") {
            "floor@10ms"
        } else {
            "floor"
        };
        let Some(f) = rows.iter().find(|r| r.name == floor_name) else {
            continue;
        };
        let period = if p.name.ends_with("@10ms") {
            "10 ms"
        } else {
            "1 ms"
        };
        let base = p.name.trim_end_matches("@10ms");
        let (p50, p99) = (p.pcts_us[3], p.pcts_us[6]);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let _ = writeln!(
            md,
            "| {base}, {period} periods | {:.0} ({:.0} to {:.0}) | {:.0} ({:.0} to {:.0}) | {:.2}x | {:.2}x |",
            p50.median,
            p50.min,
            p50.max,
            p99.median,
            p99.min,
            p99.max,
            ratio(p50.median, f.pcts_us[3].median),
            ratio(p99.median, f.pcts_us[6].median),
        );
    }
    if let Some((q, lim)) = burst {
        let _ = writeln!(
            md,
            "\nLargest burst queued without loss: {q} signals (RLIMIT_SIGPENDING {lim})."
        );
    }
    println!("\n{md}");
    let mut json = format!(
        "{{\"machine\":\"{machine}\",\"runs\":{},\"harness\":[",
        o.runs
    );
    json.push_str(
        &harness
            .iter()
            .map(|(n, s, u)| format!("{{\"name\":\"{}\",\"unit\":\"{u}\",\"median\":{:.4},\"min\":{:.4},\"max\":{:.4}}}", n.replace('`', ""), s.median, s.min, s.max))
            .collect::<Vec<_>>()
            .join(","),
    );
    json.push_str("],\"paths\":[");
    json.push_str(
        &paths
            .iter()
            .chain(&rows)
            .map(|p| {
                let pct: Vec<String> = PCT_NAMES.iter().zip(&p.pcts_us).map(|(n, s)| format!("\"{n}_us\":{:.1}", s.median)).collect();
                format!(
                    "{{\"path\":\"{}\",{},\"events_per_s\":{:.0},\"events_per_s_min\":{:.0},\"events_per_s_max\":{:.0},\"lost\":{},\"runs\":{}}}",
                    p.name,
                    pct.join(","),
                    p.per_s.median,
                    p.per_s.min,
                    p.per_s.max,
                    p.lost,
                    p.runs
                )
            })
            .collect::<Vec<_>>()
            .join(","),
    );
    let _ = write!(
        json,
        "],\"burst\":{}}}",
        burst.map_or("null".into(), |(q, l)| format!(
            "{{\"queued\":{q},\"rlimit_sigpending\":{l}}}"
        ))
    );
    std::fs::write(out.join("bench.md"), &md)?;
    std::fs::write(out.join("bench.json"), json + "\n")?;
    std::fs::write(out.join("latency.svg"), svg(&paths))?;
    println!(
        "xtask: bench: {}/bench.md, bench.json, latency.svg",
        out.display()
    );
    if !errors.is_empty() {
        bail!("{} benchmark run(s) failed in the guest", errors.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_fields() {
        assert_eq!(
            spread(&[3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(spread(&[1.0, 2.0, 3.0, 10.0]).median, 2.5);
        let l = r#"{"kind":"latency","path":"read","run":1,"n":3,"pcts_ns":[1000,2000,3000,4000,5000,6000,7000,8000]}"#;
        assert_eq!(field(l, "kind"), Some("latency"));
        assert_eq!(num(l, "n"), Some(3.0));
        assert_eq!(nums(l, "pcts_ns").len(), 8);
    }

    #[test]
    fn aggregate_takes_medians_over_runs() {
        let a = r#"{"kind":"latency","path":"read","run":1,"n":3,"pcts_ns":[1000,2000,3000,4000,5000,6000,7000,8000]}"#;
        let b = r#"{"kind":"latency","path":"read","run":2,"n":3,"pcts_ns":[1000,2000,3000,6000,5000,6000,7000,9000]}"#;
        let t = r#"{"kind":"throughput","path":"read","run":1,"n":100,"per_s":5000,"lost":2}"#;
        let burst = r#"{"kind":"burst","queued":1972,"rlimit_sigpending":1972}"#;
        let (paths, bu, errs) = aggregate(&[a, b, t, burst, r#"{"error":"boom"}"#]);
        let read = paths.iter().find(|p| p.name == "read").unwrap();
        assert_eq!(read.runs, 2);
        assert_eq!(
            read.pcts_us[3],
            Spread {
                median: 5.0,
                min: 4.0,
                max: 6.0
            }
        );
        assert_eq!(read.per_s.median, 5000.0);
        assert_eq!(read.lost, 2);
        assert_eq!(bu, Some((1972, 1972)));
        assert_eq!(errs, vec!["boom".to_string()]);
        assert!(svg(&paths).contains("<svg"));
    }
}
