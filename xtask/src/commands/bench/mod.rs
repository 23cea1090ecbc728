//! `cargo xtask bench`: the harness's speed and every delivery path's latency and throughput,
//! measured in one run on one machine. Never asserted anywhere: these are measurements.
//!
//! Writes a table to the terminal and `bench.json`, `bench.md` and `latency.svg` under
//! `target/pcmsig/bench/`.

mod peers;
mod scaling;
mod stats;

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub use crate::commands::bench::stats::{spread, time_run, Spread, Success};
use crate::image::{build_all, Built};
use crate::paths::{out_dir, project_root};
use crate::vm;
use pcmsig_contract::bench::{
    self as record, pct, Record, EVENTS as BENCH_EVENTS, FLOOD as BENCH_FLOOD, PATHS, PERCENTILES,
    RUNS as BENCH_RUNS,
};

/// Latency rows: every path at 1 ms periods and at 10 ms (`@10ms`), each beside its floor (a
/// `clock_nanosleep` loop, what no delivery path can beat), in the guest binary's names.
fn latency_rows() -> Vec<String> {
    ["", "@10ms"]
        .into_iter()
        .flat_map(|suffix| {
            std::iter::once(record::FLOOR)
                .chain(PATHS)
                .map(move |p| format!("{p}{suffix}"))
        })
        .collect()
}

/// Per-path results aggregated over runs.
#[derive(Debug, Default)]
pub struct PathResult {
    pub name: String,
    /// For each percentile in PCT_NAMES, the spread over runs (µs).
    pub pcts_us: Vec<Spread>,
    pub per_s: Spread,
    pub lost: u64,
    pub runs: usize,
}

/// Per path (of [`latency_rows`]), the runs' records aggregated; the burst; the guest's errors.
pub fn aggregate(records: &[Record]) -> (Vec<PathResult>, Option<(u64, u64)>, Vec<String>) {
    let errors = records
        .iter()
        .filter_map(|r| match r {
            Record::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let floors = record::signal_paths().map(|p| format!("{p}{}", record::SIGQUEUE));
    for row in latency_rows().into_iter().chain(floors) {
        let lat: Vec<[u64; PERCENTILES.len()]> = records
            .iter()
            .filter_map(|r| match r {
                Record::Latency { path, pcts_ns, .. } if *path == row => Some(*pcts_ns),
                _ => None,
            })
            .collect();
        let thr: Vec<(f64, u64)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Throughput {
                    path, per_s, lost, ..
                } if *path == row => Some((*per_s, *lost)),
                _ => None,
            })
            .collect();
        let pcts_us = (0..PERCENTILES.len())
            .map(|i| spread(&lat.iter().map(|v| v[i] as f64 / 1000.0).collect::<Vec<_>>()))
            .collect();
        out.push(PathResult {
            name: row,
            pcts_us,
            per_s: spread(&thr.iter().map(|t| t.0).collect::<Vec<_>>()),
            lost: thr.iter().map(|t| t.1).sum(),
            runs: lat.len(),
        });
    }
    let burst = records.iter().find_map(|r| match r {
        Record::Burst {
            queued,
            rlimit_sigpending,
        } => Some((*queued, *rlimit_sigpending)),
        _ => None,
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
    let (lo, hi) = crate::commands::bench::stats::log_decades(&vals, 1.0);
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
            x(m(pct::P1)),
            x(m(pct::P99))
        );
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"20\" fill=\"#9cf\" stroke=\"black\"/>",
            x(m(pct::P25)),
            y - 10.0,
            (x(m(pct::P75)) - x(m(pct::P25))).max(1.0)
        );
        let _ = writeln!(s, "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"red\" stroke-width=\"2\"/>", x(m(pct::P50)), y - 12.0, y + 12.0);
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"3\"/>",
            x(m(pct::MAX))
        );
    }
    s.push_str("</svg>\n");
    s
}

pub struct Opts {
    pub runs: usize,
    pub events: u32,
    pub flood: u32,
    pub cold: bool,
    pub peers: bool,
    /// The VM options, applied to the delivery VM and passed to every `cargo xtask test` and
    /// `exec` timed.
    pub vm: vm::Options,
}

impl crate::flags::Bench {
    pub(crate) fn run(self) -> Result<()> {
        run(
            &Opts {
                runs: self.runs.unwrap_or(BENCH_RUNS as usize).max(1),
                events: self.events.unwrap_or(BENCH_EVENTS).max(1),
                flood: self.flood.unwrap_or(BENCH_FLOOD).max(1),
                cold: self.cold,
                peers: self.peers,
                vm: self.vm_options()?,
            },
            self.quiet,
        )
    }
}

/// One harness figure: what was timed, its spread over runs, its unit.
type Figure = (String, Spread, &'static str);

/// What the delivery VM measured.
struct Delivery {
    /// The four paths (latency at 1 ms periods and throughput).
    paths: Vec<PathResult>,
    /// The floor and the 10 ms rows.
    rows: Vec<PathResult>,
    burst: Option<(u64, u64)>,
    /// The cost curves.
    scaling: Vec<crate::commands::bench::scaling::Point>,
    errors: Vec<String>,
}

pub fn run(o: &Opts, quiet: bool) -> Result<()> {
    let out = out_dir("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut harness: Vec<Figure> = Vec::new();
    if o.cold {
        harness.push(cold_build(&out, &o.vm)?);
    }
    harness.extend(no_change_test(o)?);
    harness.extend(edit_to_verdict(o)?);
    harness.extend(edit_to_first_verdict(o)?);
    let b = build_all(&o.vm, false, true)?;
    harness.push(module_rebuild(&b, o.runs)?);
    let trial = accel_trial(&b, o.runs);
    harness.extend(trial.clone());
    if o.peers {
        harness.extend(crate::commands::bench::peers::measure(
            &b.tools, &o.vm, o.runs,
        )?);
    }
    let d = delivery(&b, o, &out)?;
    let mut md = report_md(&machine(), o.runs, &harness, &d);
    goals_table(&mut md, &harness, trial.as_ref(), &d);
    if !quiet {
        println!("\n{md}");
    }
    let files = [
        ("bench.md", md.clone()),
        (
            "bench.json",
            report_json(&machine(), o.runs, &harness, &d) + "\n",
        ),
        ("latency.svg", svg(&d.paths)),
        (
            "scaling.svg",
            crate::commands::bench::scaling::svg(&d.scaling),
        ),
    ];
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "xtask: bench: {}/bench.md, bench.json, latency.svg, scaling.svg",
        out.display()
    );
    if !d.errors.is_empty() {
        bail!("{} benchmark run(s) failed in the guest", d.errors.len());
    }
    Ok(())
}

/// The host, for the report's first line.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let accel = crate::vm::accel::decided().map_or("accelerator not decided".to_string(), |d| {
        format!("QEMU {} ({})", d.engine.name(), d.why)
    });
    format!(
        "{} cores, {model}, {accel}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

/// A cold kernel build into an empty cache.
fn cold_build(out: &Path, opts: &vm::Options) -> Result<Figure> {
    let cold = out.join("cold-cache");
    let _ = std::fs::remove_dir_all(&cold);
    let mut c = Command::new("cargo");
    c.args(["xtask", "build"]);
    if let Some(src) = &opts.kernel_src {
        c.arg("--kernel-src").arg(src);
    }
    c.current_dir(project_root()).env("XDG_CACHE_HOME", &cold);
    // Reuse the installed bindgen rather than rebuilding it into the empty cache.
    c.env("BINDGEN", crate::tools::bindgen_path());
    println!("xtask: bench: cold kernel build (about 8 minutes)");
    let secs = time_run("a cold `cargo xtask build`", &mut c, Success::Status)?;
    let _ = std::fs::remove_dir_all(&cold);
    Ok((
        "cold build (extract, configure, kernel, module, guest)".into(),
        spread(&[secs]),
        "s",
    ))
}

/// `cargo xtask test --jobs JOBS` (with the bench's VM flags), timed end to end; with its
/// `summary.jsonl`.
fn timed_test(o: &Opts, jobs: usize) -> Result<(f64, Vec<crate::report::summary::VmSummary>)> {
    let mut c = Command::new("cargo");
    c.args(["xtask", "test", "--jobs", &jobs.to_string()])
        .args(o.vm.to_args())
        .current_dir(project_root());
    let secs = time_run("a timed `cargo xtask test`", &mut c, Success::Status)?;
    let summary =
        crate::report::summary::read(&out_dir("test").join(crate::report::summary::SUMMARY))?;
    Ok((secs, summary))
}

/// The suite split across this many VMs per configuration (`test --jobs`), timed beside the
/// default one VM per configuration.
const SPLIT_JOBS: usize = 2;

/// A no-change `cargo xtask test`, end to end, and boot to the first KTAP line; then the same
/// with the suite split (`--jobs 2`), run by run in turn with the first, so that a slow spell of
/// the machine hits both alike.
fn no_change_test(o: &Opts) -> Result<Vec<Figure>> {
    let (mut e2e, mut split, mut ktap, mut init) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..o.runs {
        println!(
            "xtask: bench: no-change `cargo xtask test` and `test --jobs {SPLIT_JOBS}` {}/{}",
            i + 1,
            o.runs
        );
        let (secs, summary) = timed_test(o, 1)?;
        e2e.push(secs);
        ktap.extend(summary.first().and_then(|s| s.first_ktap_s));
        init.extend(summary.first().and_then(|s| s.init_uptime_s));
        split.push(timed_test(o, SPLIT_JOBS)?.0);
    }
    Ok(vec![
        (
            "no-change `cargo xtask test`, end to end".into(),
            spread(&e2e),
            "s",
        ),
        (
            format!(
                "the same, `--jobs {SPLIT_JOBS}` (the suite split over {SPLIT_JOBS} VMs per configuration, {} cores)",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ),
            spread(&split),
            "s",
        ),
        ("QEMU start to first KTAP line".into(), spread(&ktap), "s"),
        ("guest uptime when init starts".into(), spread(&init), "s"),
    ])
}

/// A one-line edit of a source file, undone when dropped (also when the run fails).
struct Edit {
    path: PathBuf,
    original: Vec<u8>,
}

impl Edit {
    /// Appends the comment line `// pcmsig bench: edit N` (a different line every run, so each
    /// is a change to rebuild).
    fn append(rel: &str, n: usize) -> Result<Edit> {
        let path = project_root().join(rel);
        let original =
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut edited = original.clone();
        edited.extend_from_slice(format!("// pcmsig bench: edit {n}\n").as_bytes());
        std::fs::write(&path, edited).with_context(|| format!("writing {}", path.display()))?;
        Ok(Edit { path, original })
    }

    /// Inserts the comment line `// pcmsig bench: edit N` after the line holding `anchor`: an
    /// edit inside a function, which `test --edit-first` finds the tests of.
    fn insert_after(rel: &str, anchor: &str, n: usize) -> Result<Edit> {
        let path = project_root().join(rel);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let at = text
            .find(anchor)
            .and_then(|i| text[i..].find('\n').map(|j| i + j + 1))
            .with_context(|| format!("{rel} has no line holding {anchor:?}"))?;
        let edited = format!("{}// pcmsig bench: edit {n}\n{}", &text[..at], &text[at..]);
        std::fs::write(&path, edited).with_context(|| format!("writing {}", path.display()))?;
        Ok(Edit {
            path,
            original: text.into_bytes(),
        })
    }
}

impl Drop for Edit {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.original) {
            eprintln!("xtask: bench: restoring {}: {e}", self.path.display());
        }
    }
}

/// The edit-to-verdict figures' names begin so (then `the module (FILE)`, `the library (FILE)`).
const EDIT_TO_VERDICT: &str = "edit to verdict, one line of";

/// Edit to verdict: a one-line change to the module, then to the user-space library, each
/// followed by a full `cargo xtask test` (both VMs, the whole suite), timed end to end, with
/// where the time went (from the run's `summary.jsonl`).
fn edit_to_verdict(o: &Opts) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (what, file) in [
        ("module", "module/stream.rs"),
        ("library", "userspace/src/lib.rs"),
    ] {
        use crate::report::summary::Phase;
        let mut total = Vec::new();
        let mut phases = [Phase::Module, Phase::GuestPrograms, Phase::Vms].map(|p| (p, Vec::new()));
        for i in 0..o.runs {
            println!(
                "xtask: bench: one-line edit of {file}, then `cargo xtask test` {}/{}",
                i + 1,
                o.runs
            );
            let edit = Edit::append(file, i)?;
            let (secs, summary) = timed_test(o, 1)?;
            drop(edit);
            total.push(secs);
            for (p, v) in &mut phases {
                v.extend(summary.first().and_then(|s| s.phase(*p)));
            }
        }
        let total = spread(&total);
        let [module, guest, vms] = phases.map(|(_, v)| spread(&v));
        figures.push((format!("{EDIT_TO_VERDICT} the {what} ({file})"), total, "s"));
        for (part, s) in [
            ("module build", module),
            ("guest programs build", guest),
            ("both VMs, boot to verdict", vms),
        ] {
            figures.push((format!("- of which {part}"), s, "s"));
        }
    }
    Ok(figures)
}

/// The figure names of `test --edit-first` after a one-line edit of the module.
const EDIT_TO_FIRST: &str = "edit to first verdict (`test --edit-first`)";

/// Where `--edit-first`'s bench edit goes: inside the edu driver's enabling of the device, a
/// line that few tests run (so that the first verdict is theirs, not nearly the whole suite's).
const EDIT_FIRST_AT: (&str, &str) = ("module/edu.rs", "pdev.set_master();");

/// Edit to first verdict: a one-line edit inside a function of the module, then `cargo xtask
/// test --edit-first`, timed to its `first verdict` line and to its end. Makes the coverage
/// map first if there is none (its time is not a figure).
fn edit_to_first_verdict(o: &Opts) -> Result<Vec<Figure>> {
    if let crate::analyses::edit::Found::NoMap(why) = crate::analyses::edit::of_module()? {
        println!("xtask: bench: {why}: `cargo xtask coverage` first");
        let mut c = Command::new("cargo");
        c.args(["xtask", "coverage"]).current_dir(project_root());
        // Of the VM flags, those `coverage` takes.
        if let Some(k) = &o.vm.kernel_src {
            c.arg("--kernel-src").arg(k);
        }
        if o.vm.accel != vm::Accel::Auto {
            c.args(["--accel", o.vm.accel.word()]);
        }
        time_run(
            "`cargo xtask coverage` for the map",
            &mut c,
            Success::Status,
        )?;
    }
    let (file, anchor) = EDIT_FIRST_AT;
    let (mut first, mut full, mut tests) = (Vec::new(), Vec::new(), String::new());
    for i in 0..o.runs {
        println!(
            "xtask: bench: one-line edit inside {file}, then `cargo xtask test --edit-first` {}/{}",
            i + 1,
            o.runs
        );
        let edit = Edit::insert_after(file, anchor, i)?;
        let mut c = Command::new("cargo");
        c.args(["xtask", "test", "--edit-first"])
            .args(o.vm.to_args())
            .current_dir(project_root());
        let run = first_verdict(&mut c);
        drop(edit);
        let (f, t, n) = run?;
        first.push(f);
        full.push(t);
        tests = n;
    }
    Ok(vec![
        (
            format!("{EDIT_TO_FIRST}, one line of {file} ({tests})"),
            spread(&first),
            "s",
        ),
        ("- the same runs' full verdict".into(), spread(&full), "s"),
    ])
}

/// Runs `c` (a `test --edit-first`), reading its output as it comes: the seconds to its
/// `first verdict` line and to its end, and that line's count of tests. Fails unless both
/// verdicts pass.
fn first_verdict(c: &mut Command) -> Result<(f64, f64, String)> {
    use std::io::BufRead;
    let t = Instant::now();
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting `cargo xtask test --edit-first`")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut first = None;
    let mut tail = Vec::new();
    let verdict = format!("xtask: {} (", crate::report::summary::FIRST_VERDICT);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading its output")?;
        if let Some(rest) = line.strip_prefix(verdict.as_str()) {
            if !line.contains(": PASS") {
                bail!("the first verdict failed: {line}");
            }
            let count = rest.split(" tests").next().unwrap_or("?");
            first = Some((t.elapsed().as_secs_f64(), format!("{count} tests run it")));
        }
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let status = child.wait().context("waiting for it")?;
    let total = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "`cargo xtask test --edit-first` failed ({status}):\n{}",
            tail.join("\n")
        );
    }
    let (f, n) = first.with_context(|| {
        format!(
            "`cargo xtask test --edit-first` printed no first verdict:\n{}",
            tail.join("\n")
        )
    })?;
    Ok((f, total, n))
}

/// Kbuild's incremental rebuild of the module after touching one file.
fn module_rebuild(b: &Built, runs: usize) -> Result<Figure> {
    let mut rebuild = Vec::new();
    for _ in 0..runs {
        let f = project_root().join("module/stream.rs");
        // Defeat xtask's own no-change shortcut: measure Kbuild's incremental rebuild.
        let _ = std::fs::remove_file(
            project_root()
                .join("module")
                .join(crate::kbuild::MODULE_STAMP),
        );
        std::fs::File::options()
            .append(true)
            .open(&f)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()))
            .with_context(|| format!("touching {}", f.display()))?;
        let t = Instant::now();
        crate::kbuild::build_module(&b.tools, &b.kernel, false)?;
        rebuild.push(t.elapsed().as_secs_f64());
    }
    Ok((MODULE_REBUILD.into(), spread(&rebuild), "s"))
}

/// `--accel auto`'s trial boot, uncached, `runs` times: how long it takes to decide on a host
/// boot it has not seen (the figure's name says what it found). `None` without `/dev/kvm`.
fn accel_trial(b: &Built, runs: usize) -> Option<Figure> {
    let mut times = Vec::new();
    let mut found = String::new();
    for _ in 0..runs {
        let (t, answer) = vm::accel::timed_trial(&b.tools, &b.kernel)?;
        times.push(t.as_secs_f64());
        found = match answer {
            Ok(_) => "KVM works".into(),
            Err(_) => "KVM does not work: TCG".into(),
        };
    }
    Some((
        format!(
            "`--accel auto`: the uncached trial boot until it decides (limit {} s; {found})",
            vm::accel::TRIAL_LIMIT.as_secs()
        ),
        spread(&times),
        "s",
    ))
}

/// The module rebuild's figure name.
const MODULE_REBUILD: &str = "module rebuild after touching one file";

/// Edit to first verdict, as a multiple of the module's rebuild at most.
const FIRST_GOAL: f64 = 2.0;

/// Where a one-line edit of the module must reach its verdict within (`cargo xtask test`).
const EDIT_GOAL_S: f64 = 4.0;

/// The goals this run's figures are judged against: each with its figure and whether it is met.
fn goals_table(md: &mut String, harness: &[Figure], trial: Option<&Figure>, d: &Delivery) {
    let find = |prefix: &str| harness.iter().find(|(n, _, _)| n.starts_with(prefix));
    let yes = |met: bool| if met { "yes" } else { "no" };
    let _ = writeln!(md, "\n| goal | this run | met? |\n|---|---|---|");
    if let Some((_, s, _)) = trial {
        let _ = writeln!(
            md,
            "| `--accel auto` decides within its limit ({} s) | {:.2} s (max {:.2} s) | {} |",
            vm::accel::TRIAL_LIMIT.as_secs(),
            s.median,
            s.max,
            yes(s.max < vm::accel::TRIAL_LIMIT.as_secs_f64())
        );
    }
    for (name, p, f) in against_floor(d) {
        let r = ratio(p.per_s.median, f.per_s.median);
        let _ = writeln!(
            md,
            "| {name}: module-fed throughput at least {FLOOR_GOAL}x its sigqueue floor | {r:.2}x | {} |",
            yes(r >= FLOOR_GOAL)
        );
    }
    if let Some((_, s, _)) = find(&format!("{EDIT_TO_VERDICT} the module")) {
        let _ = writeln!(
            md,
            "| edit to verdict under {EDIT_GOAL_S} s after a one-line module change | {:.2} s | {} |",
            s.median,
            yes(s.median < EDIT_GOAL_S)
        );
    }
    if let (Some((_, first, _)), Some((_, rebuild, _))) =
        (find(EDIT_TO_FIRST), find(MODULE_REBUILD))
    {
        let r = ratio(first.median, rebuild.median);
        let _ = writeln!(
            md,
            "| edit to first verdict within {FIRST_GOAL}x the module's own rebuild | {r:.2}x ({:.2} s against {:.2} s) | {} |",
            first.median,
            rebuild.median,
            yes(r <= FIRST_GOAL)
        );
    }
    if let Some((_, s, _)) = find(crate::commands::bench::peers::EXEC_RATIO) {
        let goal = crate::commands::bench::peers::EXEC_RATIO_GOAL;
        let _ = writeln!(
            md,
            "| boot a VM and run `true` at {goal}x of virtme-ng or better | {:.2}x | {} |",
            s.median,
            yes(s.median <= goal)
        );
    }
}

/// The delivery VM's time limits unless `--timeout`/`--silence` say otherwise.
const DELIVERY_TIMEOUT_S: u64 = 1200;
const DELIVERY_SILENCE_S: u64 = 120;

/// Latency, throughput and burst of the delivery paths, in one VM.
fn delivery(b: &Built, o: &Opts, out: &Path) -> Result<Delivery> {
    println!(
        "xtask: bench: delivery paths in the guest ({} runs)",
        o.runs
    );
    let initrd = crate::image::initramfs::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], out)?;
    // The delivery VM's own defaults: its runs print one line each, several seconds apart.
    let opts = vm::Options {
        timeout: o.vm.timeout.or(Some(DELIVERY_TIMEOUT_S)),
        silence: o.vm.silence.or(Some(DELIVERY_SILENCE_S)),
        ..o.vm.clone()
    };
    let boot = vm::Boot {
        env: vec![
            format!("pcmsig_runs={}", o.runs),
            format!("pcmsig_events={}", o.events),
            format!("pcmsig_flood={}", o.flood),
        ],
        ..opts.boot(vm::Mode::Bench, out, 1)
    };
    let run = vm::boot(&b.tools, &b.kernel, &initrd, &boot)?;
    if let Some(p) = crate::report::ktap::kernel_problem(&run.console) {
        bail!(
            "kernel problem during the benchmark: {p} (console: {})",
            run.console_log.display()
        );
    }
    let mut records = Vec::new();
    for r in run.console.lines().filter_map(Record::from_line) {
        match r {
            Ok(r) => records.push(r),
            Err(e) => records.push(Record::Error(format!("an unreadable record: {e}"))),
        }
    }
    let (all, burst, errors) = aggregate(&records);
    for e in &errors {
        println!("xtask: bench: guest error: {e}");
    }
    let (paths, rows) = all
        .into_iter()
        .partition(|p| PATHS.contains(&p.name.as_str()));
    Ok(Delivery {
        paths,
        rows,
        burst,
        scaling: crate::commands::bench::scaling::aggregate(&records),
        errors,
    })
}

/// The report in Markdown: the harness figures, the paths, latency against the floor.
fn report_md(machine: &str, runs: usize, harness: &[Figure], d: &Delivery) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {machine}. {runs} runs per figure: median (min to max).\n"
    );
    let _ = writeln!(md, "| harness | median | spread |\n|---|---|---|");
    for (name, s, unit) in harness {
        let _ = writeln!(
            md,
            "| {name} | {:.2} {unit} | {:.2} to {:.2} |",
            s.median, s.min, s.max
        );
    }
    paths_table(&mut md, &d.paths);
    floor_table(&mut md, d);
    latency_table(&mut md, d);
    crate::commands::bench::scaling::table(&mut md, &d.scaling);
    if let Some((q, lim)) = d.burst {
        let _ = writeln!(
            md,
            "\nLargest burst queued without loss: {q} signals (RLIMIT_SIGPENDING {lim})."
        );
    }
    md
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Each path's latency at 1 ms periods and its throughput, beside `read()`'s.
fn paths_table(md: &mut String, paths: &[PathResult]) {
    let read = paths
        .iter()
        .find(|p| p.name == "read")
        .map_or((0.0, 0.0), |p| (p.pcts_us[pct::P50].median, p.per_s.median));
    let _ = writeln!(
        md,
        "\n| path | p50 µs | p99 µs | max µs | p50 vs read() | events/s | vs read() | lost |\n|---|---|---|---|---|---|---|---|"
    );
    for p in paths {
        let (p50, p99, max) = (
            p.pcts_us[pct::P50],
            p.pcts_us[pct::P99],
            p.pcts_us[pct::MAX],
        );
        let _ = writeln!(
            md,
            "| {} | {:.0} ({:.0} to {:.0}) | {:.0} | {:.0} | {:.2}x | {:.0} ({:.0} to {:.0}) | {:.2}x | {} |",
            p.name,
            p50.median,
            p50.min,
            p50.max,
            p99.median,
            max.median,
            ratio(p50.median, read.0),
            p.per_s.median,
            p.per_s.min,
            p.per_s.max,
            ratio(p.per_s.median, read.1),
            p.lost
        );
    }
}

/// The goal of a signal path's module-fed throughput, as a fraction of its `sigqueue` floor.
pub const FLOOR_GOAL: f64 = 0.9;

/// Each signal path measured in the run, with its module-fed result and its `sigqueue` floor.
fn against_floor(d: &Delivery) -> impl Iterator<Item = (&str, &PathResult, &PathResult)> {
    record::signal_paths().filter_map(|name| {
        let p = d.paths.iter().find(|p| p.name == name)?;
        let floor_name = format!("{name}{}", record::SIGQUEUE);
        let f = d.rows.iter().find(|r| r.name == floor_name)?;
        Some((name, p, f))
    })
}

/// Each signal path's throughput fed by the module beside the same receiver fed by another
/// thread's `pthread_sigqueue()` (its floor), and `read()`'s.
fn floor_table(md: &mut String, d: &Delivery) {
    let read = d.paths.iter().find(|p| p.name == "read");
    let _ = writeln!(
        md,
        "\n| signal path | module events/s | sigqueue floor events/s | module / floor (goal {FLOOR_GOAL}) | read() events/s |\n|---|---|---|---|---|"
    );
    for (name, p, f) in against_floor(d) {
        let r = ratio(p.per_s.median, f.per_s.median);
        let _ = writeln!(
            md,
            "| {name} | {:.0} ({:.0} to {:.0}) | {:.0} ({:.0} to {:.0}) | {r:.2}x ({}) | {:.0} |",
            p.per_s.median,
            p.per_s.min,
            p.per_s.max,
            f.per_s.median,
            f.per_s.min,
            f.per_s.max,
            if r >= FLOOR_GOAL { "met" } else { "not met" },
            read.map_or(0.0, |r| r.per_s.median),
        );
    }
}

/// Every path at 1 ms and at 10 ms periods, as a ratio to the floor of the same period.
fn latency_table(md: &mut String, d: &Delivery) {
    let _ = writeln!(
        md,
        "\n| latency at | p50 µs | p99 µs | p50 / floor | p99 / floor |\n|---|---|---|---|---|"
    );
    for name in latency_rows() {
        let Some(p) = d.rows.iter().chain(&d.paths).find(|p| p.name == name) else {
            continue;
        };
        let (base, period, floor_name) = match p.name.strip_suffix("@10ms") {
            Some(base) => (base, "10 ms", "floor@10ms"),
            None => (p.name.as_str(), "1 ms", "floor"),
        };
        let Some(f) = d.rows.iter().find(|r| r.name == floor_name) else {
            continue;
        };
        let (p50, p99) = (p.pcts_us[pct::P50], p.pcts_us[pct::P99]);
        let _ = writeln!(
            md,
            "| {base}, {period} periods | {:.0} ({:.0} to {:.0}) | {:.0} ({:.0} to {:.0}) | {:.2}x | {:.2}x |",
            p50.median,
            p50.min,
            p50.max,
            p99.median,
            p99.min,
            p99.max,
            ratio(p50.median, f.pcts_us[pct::P50].median),
            ratio(p99.median, f.pcts_us[pct::P99].median),
        );
    }
}

/// The report as one JSON object (`bench.json`).
fn report_json(machine: &str, runs: usize, harness: &[Figure], d: &Delivery) -> String {
    use serde_json::{json, Map, Value};
    let harness: Vec<Value> = harness
        .iter()
        .map(|(n, s, u)| {
            json!({"name": n.replace('`', ""), "unit": u,
                   "median": s.median, "min": s.min, "max": s.max})
        })
        .collect();
    let paths: Vec<Value> = d
        .paths
        .iter()
        .chain(&d.rows)
        .map(|p| {
            let mut m = Map::new();
            m.insert("path".into(), p.name.clone().into());
            for ((n, _), s) in PERCENTILES.iter().zip(&p.pcts_us) {
                m.insert(format!("{n}_us"), s.median.into());
            }
            for (k, v) in [
                ("events_per_s", p.per_s.median),
                ("events_per_s_min", p.per_s.min),
                ("events_per_s_max", p.per_s.max),
            ] {
                m.insert(k.into(), v.round().into());
            }
            m.insert("lost".into(), p.lost.into());
            m.insert("runs".into(), p.runs.into());
            Value::Object(m)
        })
        .collect();
    let burst = d
        .burst
        .map(|(q, l)| json!({"queued": q, "rlimit_sigpending": l}));
    json!({"machine": machine, "runs": runs, "harness": harness, "paths": paths, "burst": burst,
           "scaling": crate::commands::bench::scaling::json(&d.scaling)})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_verdict_is_timed_from_its_line_and_a_failed_one_fails() {
        let sh = |script: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            first_verdict(&mut c)
        };
        let (first, total, tests) = sh(
            "echo 'xtask: first verdict (3 tests that run the edit, 2 VM(s)): PASS after 1.0 s'; \
             sleep 0.3; echo 'xtask: PASS'",
        )
        .unwrap();
        assert_eq!(tests, "3 tests run it");
        assert!(first < total && total >= 0.3, "{first} {total}");
        let failed = sh(
            "echo 'xtask: first verdict (3 tests that run the edit, 2 VM(s)): FAIL after 1.0 s'",
        );
        assert!(failed
            .unwrap_err()
            .to_string()
            .contains("first verdict failed"));
        let none = sh("echo 'xtask: PASS'").unwrap_err().to_string();
        assert!(none.contains("no first verdict"), "{none}");
        let exit =
            sh("echo 'xtask: first verdict (1 tests that run the edit, 2 VM(s)): PASS'; exit 1");
        assert!(exit.unwrap_err().to_string().contains("failed"));
    }

    #[test]
    fn spread_is_the_median_and_range() {
        assert_eq!(
            spread(&[3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(spread(&[1.0, 2.0, 3.0, 10.0]).median, 2.5);
    }

    #[test]
    fn aggregate_takes_medians_over_runs() {
        let lat = |run, p50| Record::Latency {
            path: "read".into(),
            run,
            n: 3,
            pcts_ns: [1000, 2000, 3000, p50, 5000, 6000, 7000, 8000],
        };
        let records = [
            lat(1, 4000),
            lat(2, 6000),
            Record::Throughput {
                path: "read".into(),
                run: 1,
                n: 100,
                per_s: 5000.0,
                lost: 2,
            },
            Record::Burst {
                queued: 1972,
                rlimit_sigpending: 1972,
            },
            Record::Error("boom".into()),
        ];
        let (paths, bu, errs) = aggregate(&records);
        let read = paths.iter().find(|p| p.name == "read").unwrap();
        assert_eq!(read.runs, 2);
        assert_eq!(
            read.pcts_us[pct::P50],
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

    #[test]
    fn the_goals_are_judged_from_the_runs_figures() {
        let s = |median: f64| Spread {
            median,
            min: median,
            max: median,
        };
        let path = |name: &str, per_s: f64| PathResult {
            name: name.into(),
            per_s: s(per_s),
            ..Default::default()
        };
        let d = Delivery {
            paths: vec![path("sigwaitinfo", 95.0), path("handler", 80.0)],
            rows: vec![
                path(&format!("sigwaitinfo{}", record::SIGQUEUE), 100.0),
                path(&format!("handler{}", record::SIGQUEUE), 100.0),
            ],
            burst: None,
            scaling: Vec::new(),
            errors: Vec::new(),
        };
        let harness: Vec<Figure> = vec![
            (
                format!("{EDIT_TO_VERDICT} the module (module/stream.rs)"),
                s(19.2),
                "s",
            ),
            (
                format!("{EDIT_TO_VERDICT} the library (userspace/src/lib.rs)"),
                s(3.0),
                "s",
            ),
            (
                format!("{} (goal 0.3)", crate::commands::bench::peers::EXEC_RATIO),
                s(0.28),
                "x",
            ),
        ];
        let trial: Figure = ("trial".into(), s(0.06), "s");
        let mut md = String::new();
        goals_table(&mut md, &harness, Some(&trial), &d);
        assert!(
            md.contains(
                "| `--accel auto` decides within its limit (10 s) | 0.06 s (max 0.06 s) | yes |"
            ),
            "{md}"
        );
        assert!(md.contains("| sigwaitinfo: module-fed throughput at least 0.9x its sigqueue floor | 0.95x | yes |"), "{md}");
        assert!(
            md.contains(
                "| handler: module-fed throughput at least 0.9x its sigqueue floor | 0.80x | no |"
            ),
            "{md}"
        );
        assert!(md.contains("module change | 19.20 s | no |"), "{md}");
        assert!(md.contains("virtme-ng or better | 0.28x | yes |"), "{md}");
        // Without the peers, no exec row; without /dev/kvm, no trial row.
        let mut md = String::new();
        goals_table(&mut md, &harness[..2], None, &d);
        assert!(!md.contains("virtme-ng") && !md.contains("--accel"), "{md}");
    }
}
