//! `cargo xtask mutants`: mutation analysis of the module and the host crates. A mutant is a
//! one-line wrong edit (an operator swapped, a function's body replaced by a constant); the
//! suite is worth the mutants it rejects. cargo-mutants (pinned, installed by
//! `ci/install-deps.sh`) generates them; this command runs them where they live:
//!
//! - **module mutants**: cargo-mutants lists them (`--list --json --diff`, no build) through a
//!   throwaway manifest whose library is a copy of `module/pcmsig.rs`. Each is applied to its own
//!   copy of the module (never to `module/`), built with Kbuild (a build failure is *unviable*),
//!   and booted with the guest tests whose coverage reaches its lines (`lines.txt` of the last
//!   `cargo xtask coverage`); one those tests do not kill boots the whole suite, in both VMs,
//!   before it is called *missed*. A mutant that hangs the guest is *timeout* (caught: the VM's
//!   limits and the runner's watchdog end it); one that panics it is caught by the verdict.
//! - **host mutants**: cargo-mutants runs them itself against `cargo test` (contract, uapi, and
//!   xtask's verdict code: KTAP, JUnit, the kunit.py cross-check, the seeded-bug rule, coverage's
//!   and this command's checks).
//!
//! A missed mutant fails the command unless `xtask/mutants/equivalent.txt` explains it (checked
//! like coverage's `unreached.txt`: an entry that names no mutant, or one a test kills, is
//! stale and fails too). Reports go to `target/pcmsig/mutants/`.
//!
//! This file is the command: it runs cargo-mutants, builds and boots the mutants, and writes
//! the reports. Its verdict code (the list's parse, the choice of mutants, a mutant's status,
//! the check against `equivalent.txt`, the files each part mutates) lives in
//! `analyses/mutants.rs`, a host file whose mutants `cargo test` must kill.

use anyhow::{bail, Context, Result};
use pcmsig_contract::env::{self, word};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::analyses::mutants::{
    check_equivalent, covering_tests, filter_files, filter_names, is_command_machinery, label,
    listed_in, parse_equivalent, parse_list, regex_escape, shard, status_of, Mutant, Status,
    EQUIVALENT, HOST_FILES, LIB_FILES,
};
use crate::paths::{out_dir, project_root};
use crate::tools::{cargo_mutants_path, check_cargo_mutants, CARGO_MUTANTS_VERSION};
use crate::{flags, report::ktap, vm};

/// The mutants of one part, with their outcomes, for the reports.
struct Outcome {
    mutant: Mutant,
    status: Status,
    seconds: f64,
    /// Which tests ran: the covering ones, or the whole suite.
    stage: &'static str,
}

impl Outcome {
    /// `m`'s outcome, its time counted from `started`.
    fn of(m: &Mutant, status: Status, stage: &'static str, started: Instant) -> Outcome {
        Outcome {
            mutant: m.clone(),
            status,
            seconds: started.elapsed().as_secs_f64(),
            stage,
        }
    }

    /// Prints its line of the run (`what` `i+1`/`n`: status, place, seconds, stage).
    fn printed(self, what: &str, i: usize, n: usize) -> Outcome {
        println!(
            "xtask: {what} {}/{n}: {} {} ({:.1} s, {})",
            i + 1,
            label(&self.status),
            self.mutant.place(),
            self.seconds,
            self.stage
        );
        self
    }
}

impl flags::Mutants {
    pub(crate) fn run(self) -> Result<()> {
        let total = Instant::now();
        let tool = cargo_mutants_path();
        check_cargo_mutants(&tool)?;
        let out = out_dir("mutants");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let in_diff = match &self.in_diff {
            Some(rev) => Some(write_diff(rev, &out)?),
            None => None,
        };
        let equivalent_path = project_root().join(EQUIVALENT);
        let equivalent = parse_equivalent(
            &std::fs::read_to_string(&equivalent_path)
                .with_context(|| format!("reading {}", equivalent_path.display()))?,
        )?;
        let (module, host, lib) = match (self.module, self.host, self.lib) {
            (false, false, false) => (true, true, true),
            other => other,
        };
        let mut problems = Vec::new();
        // Every part's full list, whichever parts run: an explanation is stale only if its
        // mutant is gone from all of them.
        let mut listed_all = list_module(&tool, &out, None)?;
        listed_all.extend(list_files(&tool, HOST_FILES, None)?);
        listed_all.extend(list_files(&tool, LIB_FILES, None)?);
        let mut missed_all: Vec<Mutant> = Vec::new();
        let mut killed_all: Vec<Mutant> = Vec::new();
        let mut summary = String::new();
        if module {
            let listed = list_module(&tool, &out, None)?.len();
            let chosen = self.choose(
                "module",
                listed,
                list_module(&tool, &out, in_diff.as_deref())?,
            )?;
            if !self.list && !chosen.is_empty() {
                let t = Instant::now();
                let explained: BTreeSet<String> =
                    equivalent.iter().map(|e| e.key.clone()).collect();
                let outcomes = self.run_module(&chosen, &out.join("module"), &explained)?;
                let line = write_reports(&out.join("module"), &outcomes, t.elapsed())?;
                println!("xtask: module mutants: {line}");
                summary += &format!("module: {line}\n");
                for o in outcomes {
                    match o.status {
                        Status::Missed => missed_all.push(o.mutant),
                        Status::Caught(_) | Status::Timeout(_) => killed_all.push(o.mutant),
                        Status::Unviable(_) => {}
                    }
                }
            }
        }
        if host {
            let listed = list_files(&tool, HOST_FILES, None)?.len();
            let chosen = self.choose(
                "host (contract, uapi, xtask's verdict code)",
                listed,
                list_files(&tool, HOST_FILES, in_diff.as_deref())?,
            )?;
            if !self.list && !chosen.is_empty() {
                let t = Instant::now();
                let (caught, missed) = self.run_host(&tool, &chosen, &out.join("host"))?;
                let line = format!(
                    "{} caught, {} missed, of {} in {:.0} s (report: {})",
                    caught.len(),
                    missed.len(),
                    chosen.len(),
                    t.elapsed().as_secs_f64(),
                    out.join("host").display()
                );
                println!("xtask: host mutants: {line}");
                summary += &format!("host: {line}\n");
                missed_all.extend(missed);
                killed_all.extend(caught);
            }
        }
        if lib {
            let listed = list_files(&tool, LIB_FILES, None)?.len();
            let chosen = self.choose(
                "library (and CLI)",
                listed,
                list_files(&tool, LIB_FILES, in_diff.as_deref())?,
            )?;
            if !self.list && !chosen.is_empty() {
                let t = Instant::now();
                let dir = out.join("lib");
                let _ = std::fs::remove_dir_all(dir.join("host"));
                // The host tests first (cheap); what they miss boots the guest suite.
                let (mut caught, survivors) =
                    self.cargo_mutants(&tool, &chosen, &dir.join("host"), &[])?;
                println!(
                    "xtask: library mutants: {} caught by the host tests, {} to boot",
                    caught.len(),
                    survivors.len()
                );
                let outcomes = self.run_lib_vm(&survivors, &dir)?;
                let line = write_reports(&dir, &outcomes, t.elapsed())?;
                let line = format!(
                    "{} caught by the host tests; of the rest: {line}",
                    caught.len()
                );
                println!("xtask: library mutants: {line}");
                summary += &format!("library: {line}\n");
                for o in outcomes {
                    match o.status {
                        Status::Missed => missed_all.push(o.mutant),
                        Status::Caught(_) | Status::Timeout(_) => caught.push(o.mutant),
                        Status::Unviable(_) => {}
                    }
                }
                killed_all.extend(caught);
            }
        }
        if self.list {
            return Ok(());
        }
        let missed: Vec<&Mutant> = missed_all.iter().collect();
        let killed: Vec<&Mutant> = killed_all.iter().collect();
        let (unexplained, stale) = check_equivalent(&missed, &killed, &listed_all, &equivalent);
        for m in &unexplained {
            problems.push(format!("missed, not explained: {}", m.place()));
        }
        for (e, why) in &stale {
            problems.push(format!("{EQUIVALENT}:{}: {} ({why})", e.at, e.key));
        }
        summary += &format!(
            "equivalent (explained in {EQUIVALENT}): {}\ntotal time {:.0} s\n",
            missed.len() - unexplained.len(),
            total.elapsed().as_secs_f64()
        );
        let p = out.join("summary.txt");
        std::fs::write(&p, &summary).with_context(|| format!("writing {}", p.display()))?;
        println!(
            "xtask: mutants: {:.0} s; summary in {}",
            total.elapsed().as_secs_f64(),
            p.display()
        );
        if !problems.is_empty() {
            bail!(
                "{} problem(s):\n  {}\n(kill each missed mutant with a test that fails on it, \
                 or explain it in {EQUIVALENT})",
                problems.len(),
                problems.join("\n  ")
            );
        }
        println!("xtask: PASS: every mutant run was caught, unviable or explained");
        Ok(())
    }

    /// The mutants of one part this run takes (`--file`, `--mutant`, `--shard`), said against
    /// the part's whole list; with `--list`, printed one a line.
    fn choose(&self, part: &str, listed: usize, list: Vec<Mutant>) -> Result<Vec<Mutant>> {
        let chosen = shard(
            filter_names(filter_files(list, &self.file), &self.mutant),
            self.shard.as_deref(),
        )?;
        println!(
            "xtask: {part} mutants: {} of {listed} (cargo-mutants {CARGO_MUTANTS_VERSION})",
            chosen.len()
        );
        if self.list {
            for m in &chosen {
                println!("{}", m.place());
            }
        }
        Ok(chosen)
    }

    /// Runs the module's mutants, `jobs` at a time (default: the host's cores), after a
    /// baseline: the unchanged module must pass the suite, or every mutant would look caught.
    fn run_module(
        &self,
        chosen: &[Mutant],
        out: &Path,
        explained: &BTreeSet<String>,
    ) -> Result<Vec<Outcome>> {
        let _ = std::fs::remove_dir_all(out);
        let opts = self.mutant_vm_options()?;
        let b = crate::image::build_all(&opts, false, true)?;
        let map = line_map()?;
        // The sources as they are now: an edit during the run cannot reach its mutants.
        let source = out.join("source");
        crate::kbuild::copy_sources(&source)?;
        let jobs = self
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        // The baseline: the shipped module, the whole suite, plain VM.
        let ko = snapshot_ko(&b.ko, out)?;
        let t = Instant::now();
        let base = boot_suite(
            &b,
            &opts,
            &ko,
            &b.guest_dir,
            None,
            &out.join("baseline"),
            false,
            jobs,
        )?;
        if let Status::Caught(by) | Status::Timeout(by) = status_of(&[("plain", &base)]) {
            bail!("the unchanged module fails the suite ({by}): fix that first (cargo xtask test)");
        }
        println!(
            "xtask: baseline (the unchanged module, whole suite) passed in {:.1} s; {} mutant(s), {jobs} at a time{}",
            t.elapsed().as_secs_f64(),
            chosen.len(),
            if map.is_empty() {
                " (no coverage map: each boots the whole suite; `cargo xtask coverage` writes one)"
            } else {
                ""
            }
        );
        let results = crate::vm::in_pool(chosen, jobs, |i, m| {
            let dir = out.join(format!("{i:04}"));
            let t = Instant::now();
            let (status, stage) = match one_module_mutant(&source, &b, &opts, m, &map, &dir, jobs) {
                Ok(r) => r,
                Err(e) => (Status::Unviable(format!("harness error: {e:#}")), "none"),
            };
            Ok(Outcome::of(m, status, stage, t).printed("mutant", i, chosen.len()))
        });
        let mut outcomes: Vec<Outcome> = results.into_iter().collect::<Result<_>>()?;
        // A harness error is not a verdict on the mutant.
        if let Some((o, e)) = outcomes.iter().find_map(|o| match &o.status {
            Status::Unviable(e) if e.starts_with("harness error") => Some((o, e)),
            _ => None,
        }) {
            bail!("{}: {e}", o.mutant.place());
        }
        if !self.debug_kernel && !self.no_debug_retry {
            for flavour in RETRY_KERNELS {
                self.retry_on_kernel(flavour, &mut outcomes, &source, out, explained)?;
            }
        }
        Ok(outcomes)
    }

    /// A survivor of the normal kernel may be a bug only the debug kernel's detectors see (a
    /// reference never put: kmemleak; a use after free: KASAN): each one `equivalent.txt` does
    /// not explain is built for the debug kernel and booted there with the whole suite (plain
    /// VM) before it is called missed.
    fn retry_on_kernel(
        &self,
        flavour: vm::Flavour,
        outcomes: &mut [Outcome],
        source: &Path,
        out: &Path,
        explained: &BTreeSet<String>,
    ) -> Result<()> {
        // Not those equivalent.txt explains: no detector can see what does not differ.
        let survivors: Vec<usize> = (0..outcomes.len())
            .filter(|&i| outcomes[i].status == Status::Missed)
            .filter(|&i| !explained.contains(&outcomes[i].mutant.key()))
            .collect();
        if survivors.is_empty() {
            return Ok(());
        }
        let opts = self.retry_options(flavour)?;
        let (name, what) = retry_kernel(flavour);
        println!(
            "xtask: {} survivor(s) so far: each booted on the {name} kernel ({what}; --no-debug-retry skips this)",
            survivors.len()
        );
        let b = crate::image::build_all(&opts, false, true)?;
        for (k, i) in survivors.into_iter().enumerate() {
            let t = Instant::now();
            let o = &mut outcomes[i];
            let dir = out.join(format!("{}-{k:04}", flavour.config().unwrap_or("normal")));
            let ko = crate::kbuild::build_variant_of(
                source,
                &b.tools,
                &b.kernel,
                &dir,
                &o.mutant.place(),
                |module_dir| apply_diff(&o.mutant.diff, module_dir.parent().unwrap_or(module_dir)),
            )?;
            let j = boot_suite(
                &b,
                &opts,
                &ko,
                &b.guest_dir,
                None,
                &dir.join("plain"),
                false,
                1,
            )?;
            let status = status_of(&[(&format!("{name} plain"), &j)]);
            o.seconds += t.elapsed().as_secs_f64();
            println!(
                "xtask: on the {name} kernel: {} {} ({:.1} s)",
                label(&status),
                o.mutant.place(),
                t.elapsed().as_secs_f64()
            );
            if status != Status::Missed {
                o.stage = match flavour {
                    vm::Flavour::Fault => "whole suite, fault-injection kernel",
                    _ => "whole suite, debug kernel",
                };
                o.status = status;
            }
        }
        Ok(())
    }

    /// Boots each library mutant the host tests missed: applied to one working copy of the
    /// repository (its guest build incremental), the guest programs rebuilt, the whole suite
    /// in the plain VM, then the edu VM; the file put back after each. One at a time.
    fn run_lib_vm(&self, chosen: &[Mutant], out: &Path) -> Result<Vec<Outcome>> {
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let opts = self.mutant_vm_options()?;
        let b = crate::image::build_all(&opts, false, true)?;
        // The module as built now: another command building module/ for another kernel
        // meanwhile (seen: a debug-kernel run beside this one) must not change what boots.
        let ko = snapshot_ko(&b.ko, out)?;
        let work = out.join("work");
        sync_tracked_files(&work)?;
        let t = Instant::now();
        let guest = crate::image::programs::build_guest_in(&work)?;
        let base = boot_suite(
            &b,
            &opts,
            &ko,
            &guest,
            None,
            &out.join("baseline"),
            false,
            1,
        )?;
        if let Status::Caught(by) | Status::Timeout(by) = status_of(&[("plain", &base)]) {
            bail!(
                "the unchanged library fails the suite ({by}): fix that first (cargo xtask test)"
            );
        }
        println!(
            "xtask: baseline (the unchanged library, whole suite) passed in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let mut outcomes = Vec::new();
        for (i, m) in chosen.iter().enumerate() {
            let t = Instant::now();
            let file = work.join(&m.file);
            let original = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            apply_diff(&m.diff, &work)?;
            let dir = out.join(format!("{i:04}"));
            let result = (|| -> Result<(Status, &'static str)> {
                let guest = match crate::image::programs::build_guest_in(&work) {
                    Ok(g) => g,
                    Err(e) => return Ok((Status::Unviable(format!("{e:#}")), "build")),
                };
                Ok((whole_suite(&b, &opts, &ko, &guest, &dir, 1)?, "whole suite"))
            })();
            std::fs::write(&file, &original)
                .with_context(|| format!("putting back {}", file.display()))?;
            let (status, stage) = result?;
            outcomes.push(Outcome::of(m, status, stage, t).printed(
                "library mutant",
                i,
                chosen.len(),
            ));
        }
        // The working copy's guest build back to the unchanged library.
        crate::image::programs::build_guest_in(&work)?;
        Ok(outcomes)
    }

    /// The VM options of every mutant's boot.
    fn mutant_vm_options(&self) -> Result<vm::Options> {
        let flavour = if self.debug_kernel {
            vm::Flavour::Debug
        } else {
            vm::Flavour::Normal
        };
        Ok(vm::Options {
            kernel_src: crate::kernel::source_of(self.kernel_src.clone(), self.kernel.as_deref())?,
            flavour,
            // The debug kernel keeps its own, far longer, limits.
            timeout: self
                .timeout
                .or((flavour == vm::Flavour::Normal).then_some(DEFAULT_TIMEOUT_S)),
            quiet: true,
            accel: self.accel.unwrap_or_default(),
            ..vm::Options::default()
        })
    }

    /// The VM options of a survivor's boot on the debug kernel: its own, far longer, limits
    /// unless `--timeout` sets one; the rest as every mutant's boot.
    fn retry_options(&self, flavour: vm::Flavour) -> Result<vm::Options> {
        Ok(vm::Options {
            flavour,
            timeout: self.timeout,
            ..self.mutant_vm_options()?
        })
    }

    /// Lets cargo-mutants run the host mutants with `cargo test`; (caught, missed).
    fn run_host(
        &self,
        tool: &Path,
        chosen: &[Mutant],
        out: &Path,
    ) -> Result<(Vec<Mutant>, Vec<Mutant>)> {
        let _ = std::fs::remove_dir_all(out);
        // xtask's mutants against xtask's own unit tests (its integration tests drive the
        // install scripts, no verdict code: 8 s a mutant for nothing); the crates' against all
        // of their tests.
        let (xtask, crates): (Vec<Mutant>, Vec<Mutant>) = chosen
            .iter()
            .cloned()
            .partition(|m| m.file.starts_with("xtask/"));
        let (mut caught, mut missed) = (Vec::new(), Vec::new());
        for (group, list, test_args) in [
            ("crates", crates, &[][..]),
            ("xtask", xtask, &["--cargo-test-arg=--bin=xtask"][..]),
        ] {
            if list.is_empty() {
                continue;
            }
            let (c, m) = self.cargo_mutants(tool, &list, &out.join(group), test_args)?;
            caught.extend(c);
            missed.extend(m);
        }
        Ok((caught, missed))
    }

    /// One cargo-mutants run of `chosen` (files and names), its results under `out`.
    fn cargo_mutants(
        &self,
        tool: &Path,
        chosen: &[Mutant],
        out: &Path,
        extra: &[&str],
    ) -> Result<(Vec<Mutant>, Vec<Mutant>)> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let mut cmd = std::process::Command::new(tool);
        cmd.current_dir(project_root())
            .arg("mutants")
            .arg("--output")
            .arg(out)
            .args(["--no-shuffle", "--baseline", "run", "--timeout", "120"])
            .arg(format!("--jobs={}", self.jobs.unwrap_or(2)))
            .args(extra);
        let files: BTreeSet<&str> = chosen.iter().map(|m| m.file.as_str()).collect();
        for f in files {
            cmd.args(["-f", f]);
        }
        // The chosen ones exactly: cargo-mutants takes them as regexes of their names.
        let names: BTreeSet<String> = chosen
            .iter()
            .map(|m| format!("{}$", regex_escape(&m.what)))
            .collect();
        for n in &names {
            cmd.args(["--re", n]);
        }
        println!(
            "xtask: host mutants: cargo-mutants runs {} (log: {})",
            chosen.len(),
            out.join("mutants.out/debug.log").display()
        );
        let status = cmd.status().context("running cargo-mutants")?;
        let read = |name: &str| {
            std::fs::read_to_string(out.join("mutants.out").join(name)).unwrap_or_default()
        };
        // Exit codes: 0 all caught, 2 some missed, 3 some timed out (caught for us), 4 the
        // baseline failed; anything else is the tool's failure.
        match status.code() {
            Some(0 | 2 | 3) => {}
            Some(4) => bail!("the host tests fail without a mutant: fix that first (cargo test)"),
            _ => bail!(
                "cargo-mutants failed ({status}); its log: {}",
                out.join("mutants.out/debug.log").display()
            ),
        }
        let missed = listed_in(&read("missed.txt"), chosen);
        let mut caught = listed_in(&read("caught.txt"), chosen);
        caught.extend(listed_in(&read("timeout.txt"), chosen));
        Ok((caught, missed))
    }
}

/// A mutant VM's time limit: a hang is ended here (the runner's watchdog usually ends it first).
const DEFAULT_TIMEOUT_S: u64 = 150;

/// The kernels a survivor of the normal kernel boots on, in order, before it is called missed:
/// the debug kernel (what the suite's assertions cannot see: a leaked reference, a lock
/// inversion) and the fault-injection kernel (the fault sweeps, which skip elsewhere: a
/// mutant of an error path or of an allocation's flags).
const RETRY_KERNELS: [vm::Flavour; 2] = [vm::Flavour::Debug, vm::Flavour::Fault];

/// A retry kernel's name in the reports, and what it adds.
fn retry_kernel(flavour: vm::Flavour) -> (&'static str, &'static str) {
    match flavour {
        vm::Flavour::Fault => (
            "fault-injection",
            "fail-nth and failslab sweeps; about 1 minute each",
        ),
        _ => ("debug", "KASAN, lockdep, kmemleak; about 5 minutes each"),
    }
}

/// The guest runner's per-test base limit for mutants (`PCMSIG_TEST_TIMEOUT`; the suite's
/// default is 30 s): the unchanged module's slowest test takes about 1.5 s, and the runner
/// multiplies the base by the VM's measured pace.
const MUTANT_TEST_TIMEOUT_S: u64 = 12;

/// Builds, boots and judges one module mutant: the covering tests first (plain VM), then, if
/// they did not kill it, the whole suite in both VMs.
fn one_module_mutant(
    source: &Path,
    b: &crate::image::Built,
    opts: &vm::Options,
    m: &Mutant,
    map: &BTreeMap<(String, u32), Vec<String>>,
    dir: &Path,
    vms: usize,
) -> Result<(Status, &'static str)> {
    let built = crate::kbuild::build_variant_of(
        source,
        &b.tools,
        &b.kernel,
        dir,
        &m.place(),
        |module_dir| apply_diff(&m.diff, module_dir.parent().unwrap_or(module_dir)),
    );
    let ko = match built {
        Ok(ko) => ko,
        Err(e) => {
            let msg = format!("{e:#}");
            let first = msg
                .lines()
                .find(|l| l.starts_with("error"))
                .unwrap_or_else(|| msg.lines().next().unwrap_or(""));
            return Ok((Status::Unviable(first.to_string()), "build"));
        }
    };
    let tests = covering_tests(m, map);
    if !tests.is_empty() {
        // In the edu VM when a covering test needs the device (it skips without it).
        let edu = tests.iter().any(|t| needs_edu(t));
        let vm = if edu { "edu" } else { "plain" };
        let j = boot_suite(
            b,
            opts,
            &ko,
            &b.guest_dir,
            Some(&tests),
            &dir.join("covering"),
            edu,
            vms,
        )?;
        let s = status_of(&[(vm, &j)]);
        if s != Status::Missed {
            return Ok((s, "covering tests"));
        }
    }
    Ok((
        whole_suite(b, opts, &ko, &b.guest_dir, dir, vms)?,
        "whole suite",
    ))
}

/// The whole suite on `ko` and the `guest` programs: the plain VM, then, if it found nothing,
/// the edu VM (logs in `dir/plain`, `dir/edu`).
fn whole_suite(
    b: &crate::image::Built,
    opts: &vm::Options,
    ko: &Path,
    guest: &Path,
    dir: &Path,
    vms: usize,
) -> Result<Status> {
    let plain = boot_suite(b, opts, ko, guest, None, &dir.join("plain"), false, vms)?;
    let s = status_of(&[("plain", &plain)]);
    if s != Status::Missed {
        return Ok(s);
    }
    let edu = boot_suite(b, opts, ko, guest, None, &dir.join("edu"), true, vms)?;
    Ok(status_of(&[("edu", &edu)]))
}

/// Whether guest test `name` runs only with QEMU's edu device.
fn needs_edu(name: &str) -> bool {
    pcmsig_contract::SKIPS
        .iter()
        .any(|(t, w)| *t == name && *w == pcmsig_contract::SkipWhen::NoEduDevice)
}

/// Boots `ko` with the suite (or only `tests`), in the plain VM or the `edu` one; its judgement.
#[allow(clippy::too_many_arguments)]
fn boot_suite(
    b: &crate::image::Built,
    opts: &vm::Options,
    ko: &Path,
    guest: &Path,
    tests: Option<&[String]>,
    dir: &Path,
    edu: bool,
    vms: usize,
) -> Result<ktap::Judgement> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut extra = Vec::new();
    if let Some(tests) = tests {
        extra.push(crate::image::initramfs::filter_file(dir, &tests.join(","))?);
    }
    let initrd = crate::image::initramfs::build_initramfs(&b.tools, ko, guest, &extra, dir)?;
    let mut env = crate::vm::test_env(opts.flavour);
    // One failure is the whole answer; and a mutant that makes a test wait forever is ended
    // by the runner's watchdog well before the VM's limit (the baseline passes with the same).
    env.push(format!("{}=1", pcmsig_contract::FAIL_FAST_ENV));
    if opts.flavour == vm::Flavour::Normal {
        env.push(word(env::TEST_TIMEOUT, MUTANT_TEST_TIMEOUT_S));
    }
    let mut qemu = opts.qemu_args.clone();
    if edu {
        qemu.extend(pcmsig_contract::EDU_QEMU_ARGS.map(String::from));
        env.push(word(env::EDU, 1));
    }
    let boot = vm::Boot {
        env,
        qemu_args: &qemu,
        ..opts.boot(vm::Mode::Test, dir, vms)
    };
    let run = vm::boot(&b.tools, &b.kernel, &initrd, &boot)?;
    Ok(ktap::judge(&run, edu, opts.flavour.kernel_has()))
}

/// A copy of the built module under `out`, for a long run to boot.
fn snapshot_ko(ko: &Path, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let copy = out.join("pcmsig.ko");
    std::fs::copy(ko, &copy)
        .with_context(|| format!("copying {} to {}", ko.display(), copy.display()))?;
    Ok(copy)
}

/// Applies a cargo-mutants diff (`--- module/x.rs`, then hunks) under `root`.
pub fn apply_diff(diff: &str, root: &Path) -> Result<()> {
    let file = diff
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("--- "))
        .context("a mutant's diff without its `--- file` line")?;
    // cargo-mutants names a file reached by `#[path]` through the module folder.
    let target = root.join(file.trim());
    let original = std::fs::read_to_string(&target)
        .with_context(|| format!("reading {}", target.display()))?;
    // cargo-mutants puts the mutant's description where the new file's name goes (`+++
    // replace f -> &str with "xyzzy"`), which diffy reads as a file name and may refuse:
    // the hunks alone, under plain names.
    let hunks = diff.splitn(3, '\n').nth(2).unwrap_or("");
    let normalized = format!("--- a\n+++ b\n{hunks}");
    let patch = diffy::Patch::from_str(&normalized).context("parsing a mutant's diff")?;
    let patched = diffy::apply(&original, &patch)
        .map_err(|e| anyhow::anyhow!("a mutant's diff does not apply to {file}: {e}"))?;
    std::fs::write(&target, patched).with_context(|| format!("writing {}", target.display()))
}

/// Coverage's per-line map of the last `cargo xtask coverage` (empty if there is none).
fn line_map() -> Result<BTreeMap<(String, u32), Vec<String>>> {
    let p = out_dir("coverage").join("lines.txt");
    match std::fs::read_to_string(&p) {
        Ok(text) => crate::analyses::coverage::parse_per_line(&text)
            .with_context(|| format!("reading {}", p.display())),
        Err(_) => Ok(BTreeMap::new()),
    }
}

/// `git diff REV` of the working tree, written for cargo-mutants' `--in-diff`.
fn write_diff(rev: &str, out: &Path) -> Result<PathBuf> {
    let o = std::process::Command::new("git")
        .current_dir(project_root())
        .args(["diff", rev, "--"])
        .output()
        .context("running git diff")?;
    if !o.status.success() {
        bail!(
            "git diff {rev}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let p = out.join("in-diff.patch");
    std::fs::write(&p, &o.stdout).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// cargo-mutants' list of the module: a throwaway manifest over a copy of `module/` (the
/// repository's layout, so that the UAPI file its `#[path]` names is there too). The KUnit
/// tests and the shared UAPI (a host crate, mutated there) are left out.
fn list_module(tool: &Path, out: &Path, in_diff: Option<&Path>) -> Result<Vec<Mutant>> {
    let dir = out.join("module-crate");
    let _ = std::fs::remove_dir_all(&dir);
    crate::kbuild::copy_sources(&dir)?;
    std::fs::write(
        dir.join("Cargo.toml"),
        "# Written by cargo xtask mutants: the module as a crate cargo-mutants can list.\n\
         [package]\nname = \"pcmsig-module\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         publish = false\n\n[lib]\npath = \"module/pcmsig.rs\"\n\n[workspace]\n",
    )
    .context("writing the module's throwaway manifest")?;
    let mut cmd = std::process::Command::new(tool);
    cmd.args(["mutants", "--list", "--json", "--diff", "--dir"])
        .arg(&dir)
        .args(["-e", "uapi.rs", "--exclude-re", "tests::"]);
    if let Some(d) = in_diff {
        cmd.arg("--in-diff").arg(d);
    }
    let mut list = parse_list(&run_listing(cmd)?)?;
    for m in &mut list {
        // As the repository names it (the copy has the same layout).
        m.file = m.file.trim_start_matches("./").to_string();
    }
    Ok(list)
}

/// cargo-mutants' list of the mutants in `files` (globs, relative to the repository).
fn list_files(tool: &Path, files: &[&str], in_diff: Option<&Path>) -> Result<Vec<Mutant>> {
    let mut cmd = std::process::Command::new(tool);
    cmd.current_dir(project_root())
        .args(["mutants", "--list", "--json", "--diff"]);
    for f in files {
        cmd.args(["-f", f]);
    }
    cmd.args(["--exclude-re", "tests::"]);
    if let Some(d) = in_diff {
        cmd.arg("--in-diff").arg(d);
    }
    let mut list = parse_list(&run_listing(cmd)?)?;
    list.retain(|m| !is_command_machinery(m));
    Ok(list)
}

/// Makes `work` a copy of the repository's tracked files as they are now (its `target/`, the
/// incremental build, is kept).
fn sync_tracked_files(work: &Path) -> Result<()> {
    let root = project_root();
    let o = std::process::Command::new("git")
        .current_dir(&root)
        .args(["ls-files", "-z"])
        .output()
        .context("running git ls-files")?;
    if !o.status.success() {
        bail!(
            "git ls-files: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    for name in o.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).to_string();
        let (from, to) = (root.join(&name), work.join(&name));
        let Ok(text) = std::fs::read(&from) else {
            continue; // deleted in the working tree
        };
        if std::fs::read(&to).ok().as_deref() == Some(text.as_slice()) {
            continue;
        }
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&to, &text).with_context(|| format!("writing {}", to.display()))?;
    }
    Ok(())
}

fn run_listing(mut cmd: std::process::Command) -> Result<String> {
    let o = cmd.output().context("running cargo-mutants --list")?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    // `--in-diff` with nothing to mutate exits non-zero with no list.
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        if err.contains("No mutants")
            || err.contains("no mutants")
            || text.trim().is_empty() && err.contains("diff")
        {
            return Ok("[]".to_string());
        }
        bail!("cargo-mutants --list failed ({}): {}", o.status, err.trim());
    }
    Ok(if text.trim().is_empty() {
        "[]".to_string()
    } else {
        text
    })
}

/// Writes `caught.txt`, `timeout.txt`, `missed.txt`, `unviable.txt` (each mutant with its
/// diff and what killed it) under `out`; returns the summary line.
fn write_reports(out: &Path, outcomes: &[Outcome], took: Duration) -> Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut lists: BTreeMap<&str, String> = ["caught", "timeout", "missed", "unviable"]
        .into_iter()
        .map(|k| (k, String::new()))
        .collect();
    for o in outcomes {
        let (list, detail) = match &o.status {
            Status::Caught(by) => ("caught", format!("killed by {by}")),
            Status::Timeout(by) => ("timeout", format!("ended by {by}")),
            Status::Missed => (
                "missed",
                "no test failed, whole suite in both VMs".to_string(),
            ),
            Status::Unviable(e) => ("unviable", format!("does not build: {e}")),
        };
        if let Some(text) = lists.get_mut(list) {
            *text += &format!(
                "{}\n    {detail} ({}, {:.1} s)\n{}\n",
                o.mutant.place(),
                o.stage,
                o.seconds,
                o.mutant
                    .diff
                    .lines()
                    .map(|l| format!("    {l}\n"))
                    .collect::<String>()
            );
        }
    }
    for (k, text) in &lists {
        let p = out.join(format!("{k}.txt"));
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let n = |k: &str| {
        outcomes
            .iter()
            .filter(|o| label(&o.status).eq_ignore_ascii_case(k))
            .count()
    };
    let viable = outcomes.len() - n("unviable");
    let killed = n("caught") + n("timeout");
    Ok(format!(
        "{} caught, {} timeout, {} missed, {} unviable, of {}: {:.1}% of the viable ones killed, in {:.0} s (report: {})",
        n("caught"),
        n("timeout"),
        n("missed"),
        n("unviable"),
        outcomes.len(),
        if viable == 0 { 100.0 } else { killed as f64 * 100.0 / viable as f64 },
        took.as_secs_f64(),
        out.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyses::mutants::fixtures::mutants;

    #[test]
    fn a_diff_applies_to_the_copy() {
        let dir = std::env::temp_dir().join(format!("pcmsig-mutants-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("module")).unwrap();
        std::fs::write(dir.join("module/pcmsig.rs"), "x\na < b\ny\n").unwrap();
        let diff = "--- module/pcmsig.rs\n+++ replace < with <=\n@@ -1,3 +1,3 @@\n x\n-a < b\n+a <= b\n y\n";
        apply_diff(diff, &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("module/pcmsig.rs")).unwrap(),
            "x\na <= b\ny\n"
        );
        // Applied again, its context no longer matches.
        assert!(apply_diff(diff, &dir).is_err());
        // A description with quotes where the new file's name goes.
        let quoted = "--- module/pcmsig.rs\n+++ replace name -> &str with \"xyzzy\"\n@@ -1,3 +1,3 @@\n x\n-a <= b\n+\"xyzzy\"\n y\n";
        apply_diff(quoted, &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("module/pcmsig.rs")).unwrap(),
            "x\n\"xyzzy\"\ny\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_edu_tests_boot_the_edu_vm() {
        assert!(needs_edu("edu_periods_come_from_device_interrupts"));
        assert!(!needs_edu("read_records_match_the_signals"));
    }

    #[test]
    fn the_guest_init_reads_the_filter_file() {
        let init = include_str!("../../../vm/init");
        assert!(init.contains(pcmsig_contract::FILTER_FILE));
    }

    #[test]
    fn the_install_script_pins_this_version() {
        let script = include_str!("../../../ci/install-deps.sh");
        assert!(script.contains(&format!("CARGO_MUTANTS_VERSION={CARGO_MUTANTS_VERSION}")));
    }

    /// `cargo xtask mutants ARGS`' flags.
    fn flags_of(args: &[&str]) -> flags::Mutants {
        let args = std::iter::once("mutants").chain(args.iter().copied());
        match flags::Xtask::from_vec(args.map(Into::into).collect())
            .unwrap()
            .subcommand
        {
            flags::XtaskCmd::Mutants(f) => f,
            other => panic!("not mutants: {other:?}"),
        }
    }

    #[test]
    fn choose_takes_the_files_and_names_asked_for() {
        let all = mutants();
        assert_eq!(flags_of(&[]).choose("module", 2, all.clone()).unwrap(), all);
        let f = flags_of(&["--file", "module/pcmsig*"]);
        assert_eq!(
            f.choose("module", 2, all.clone()).unwrap(),
            [all[1].clone()]
        );
        let f = flags_of(&["--mutant", "stream.rs:12:", "--shard", "0/1"]);
        assert_eq!(
            f.choose("module", 2, all.clone()).unwrap(),
            [all[0].clone()]
        );
        assert!(flags_of(&["--shard", "2/2"])
            .choose("module", 2, all)
            .is_err());
    }

    #[test]
    fn a_mutant_boots_quietly_with_the_mutants_limit_and_a_survivor_again_on_the_debug_kernel() {
        let opts = |args: &[&str]| flags_of(args).mutant_vm_options().unwrap();
        assert_eq!(
            opts(&["--kernel-src", "/k/linux", "--accel", "tcg"]),
            vm::Options {
                kernel_src: Some(PathBuf::from("/k/linux")),
                flavour: vm::Flavour::Normal,
                timeout: Some(DEFAULT_TIMEOUT_S),
                quiet: true,
                accel: vm::Accel::Tcg,
                ..vm::Options::default()
            }
        );
        assert_eq!(opts(&["--timeout", "40"]).timeout, Some(40));
        // The debug kernel keeps its own limits unless --timeout sets one.
        let debug = opts(&["--debug-kernel", "--accel", "kvm"]);
        assert_eq!(
            (debug.flavour, debug.timeout, debug.quiet, debug.accel),
            (vm::Flavour::Debug, None, true, vm::Accel::Kvm)
        );
        let retry = |args: &[&str]| flags_of(args).retry_options(vm::Flavour::Debug).unwrap();
        assert_eq!(
            retry(&["--kernel-src", "/k/linux", "--accel", "tcg"]),
            vm::Options {
                flavour: vm::Flavour::Debug,
                timeout: None,
                ..opts(&["--kernel-src", "/k/linux", "--accel", "tcg"])
            }
        );
        assert_eq!(retry(&["--timeout", "600"]).timeout, Some(600));
        let fault = flags_of(&["--accel", "tcg"])
            .retry_options(vm::Flavour::Fault)
            .unwrap();
        assert_eq!(
            (fault.flavour, fault.accel),
            (vm::Flavour::Fault, vm::Accel::Tcg)
        );
        assert_eq!(
            RETRY_KERNELS.map(|f| retry_kernel(f).0),
            ["debug", "fault-injection"]
        );
    }

    #[test]
    fn each_outcome_is_labelled_and_counted_by_its_status() {
        assert_eq!(label(&Status::Caught("t".into())), "caught");
        assert_eq!(label(&Status::Timeout("the VM's limit".into())), "timeout");
        assert_eq!(label(&Status::Missed), "MISSED");
        assert_eq!(label(&Status::Unviable("E0308".into())), "unviable");
        let dir = crate::kernel::testing::scratch("mutants-reports");
        let m = mutants();
        let o = |status: Status| Outcome {
            mutant: m[0].clone(),
            status,
            seconds: 1.0,
            stage: "whole suite",
        };
        let outcomes = [
            o(Status::Caught("a".into())),
            o(Status::Caught("b".into())),
            o(Status::Timeout("the runner's watchdog".into())),
            o(Status::Missed),
            o(Status::Unviable("E0308".into())),
        ];
        let line = write_reports(&dir, &outcomes, Duration::from_secs(9)).unwrap();
        assert_eq!(
            line,
            format!(
                "2 caught, 1 timeout, 1 missed, 1 unviable, of 5: 75.0% of the viable ones killed, in 9 s (report: {})",
                dir.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
