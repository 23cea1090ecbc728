//! `cargo xtask test`: both VMs, the guest suite, and the verdict with its reports (KTAP, JUnit,
//! dmesg), cross-checked by the kernel's own KTAP parser.

use anyhow::{bail, Context, Result};
use pcmsig_contract::env::{self, word};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::image::prepare;
use crate::paths::out_dir;
use crate::report::summary::{fmt_times, Phase, VmSummary};
use crate::{flags, report::junit, report::ktap, vm};

/// One VM configuration of the test run.
#[derive(Clone)]
struct VmConfig {
    name: String,
    /// Whether the VM has QEMU's `edu` device.
    edu: bool,
    /// The target whose suite runs (`--target`; `None`: pcmsig's, with its skip rule).
    target: Option<String>,
    dir: PathBuf,
    qemu: Vec<String>,
    env: Vec<String>,
}

/// A finished VM and its judgement.
struct Booted {
    run: vm::Finished,
    /// With kunit.py's disagreement, if any, among the failures.
    judged: ktap::Judgement,
}

/// What one VM's run contributed to the verdict.
struct VmOutcome {
    counts: ktap::Counts,
    failures: Vec<String>,
    blamed: Vec<String>,
    /// Its line of `summary.jsonl` (the run's phases added at the end).
    summary: VmSummary,
}

impl flags::Test {
    pub(crate) fn run(self) -> Result<()> {
        if self.kernel.as_deref() == Some(crate::kernel::ALL) {
            return self.run_all_kernels();
        }
        self.run_with(false)
    }

    /// `--kernel all`: the suite once per series the module supports (pcmsig's
    /// [`crate::image::PCMSIG_KERNELS`], a target's `kernels`), each in `test-SERIES/`; then one
    /// line per series, and a failure if any series failed.
    fn run_all_kernels(self) -> Result<()> {
        if self.kernel_src.is_some() {
            bail!("--kernel all and --kernel-src: choose one");
        }
        let target = self.target()?;
        let series: Vec<String> = match &target {
            Some(t) if !t.kernels.is_empty() => t.kernels.clone(),
            Some(t) => bail!(
                "--kernel all: {} lists no `kernels` in its harness.toml",
                t.dir.join("harness.toml").display()
            ),
            None => crate::image::PCMSIG_KERNELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let mut lines = Vec::new();
        let mut one = self;
        for s in &series {
            println!("xtask: --kernel all: series {s}");
            let t = Instant::now();
            one.kernel = Some(s.clone());
            let out = one.out_dir(false, target.as_ref());
            // A run that fails before its verdict must not be read as the last one's.
            let _ = std::fs::remove_file(out.join(crate::report::summary::SUMMARY));
            let result = one.run_with(false);
            let counts = crate::report::summary::read(&out.join(crate::report::summary::SUMMARY))
                .map(|vms| {
                    let sum = |f: fn(&VmSummary) -> usize| vms.iter().map(f).sum::<usize>();
                    format!(
                        "{} passed, {} failed, {} skipped",
                        sum(|v| v.passed),
                        sum(|v| v.failed),
                        sum(|v| v.skipped)
                    )
                })
                .unwrap_or_else(|_| "no verdict".to_string());
            lines.push(match &result {
                Ok(()) => format!(
                    "kernel {s}: PASS, {counts}, {:.1} s",
                    t.elapsed().as_secs_f64()
                ),
                Err(e) => format!(
                    "kernel {s}: FAIL, {counts}, {:.1} s: {}",
                    t.elapsed().as_secs_f64(),
                    format!("{e:#}").lines().next().unwrap_or("")
                ),
            });
        }
        for l in &lines {
            println!("xtask: {l}");
        }
        let failed = lines.iter().filter(|l| l.contains(": FAIL")).count();
        if failed > 0 {
            bail!("{failed} of {} kernel series failed", lines.len());
        }
        Ok(())
    }

    /// The run's output directory: `test` (`target`'s under `targets/NAME/`; `coverage` for a
    /// coverage run), `test-SERIES` when `--kernel SERIES` chose the kernel.
    fn out_dir(&self, coverage: bool, target: Option<&crate::target::Target>) -> PathBuf {
        let command = match (&self.kernel, coverage) {
            (Some(series), false) => format!("test-{series}"),
            (_, true) => "coverage".to_string(),
            (None, false) => "test".to_string(),
        };
        match target {
            Some(t) => t.out_dir(&command),
            None => out_dir(&command),
        }
    }

    /// The test run; with `coverage`, of the module's coverage build, with the report
    /// (`cargo xtask coverage`).
    pub(crate) fn run_with(&self, coverage: bool) -> Result<()> {
        let total = Instant::now();
        let opts = self.vm_options()?;
        let opts = match self.slow {
            Some(factor) => crate::vm::slow::scaled_limits(&opts, factor),
            None => opts,
        };
        let target = self.target()?;
        self.check_edit_first(coverage || target.is_some())?;
        let out = self.out_dir(coverage, target.as_ref());
        let (mut b, mut initrd) = match &target {
            Some(t) => t.prepare(&opts, None, &[], &out)?,
            None => prepare(&opts, &[], &out)?,
        };
        let instrumented = if coverage {
            let t = Instant::now();
            let (ko, copy) = crate::kbuild::build_coverage_module(
                &b.tools,
                &b.kernel,
                &crate::analyses::coverage::build_dir(&out),
            )?;
            initrd =
                crate::image::initramfs::build_initramfs(&b.tools, &ko, &b.guest_dir, &[], &out)?;
            b.times.push((Phase::CoverageBuild, t.elapsed()));
            Some((ko, copy))
        } else {
            None
        };
        let mut configs = match &target {
            Some(t) => self.target_configs(t, &opts, &b.guest_dir, &out)?,
            None => self.configs(&opts, &b.guest_dir, &out)?,
        };
        if coverage {
            for c in &mut configs {
                c.env
                    .push(word(env::COVERAGE, pcmsig_contract::COVERAGE_DEVICE));
            }
        }
        let _slowed = self.slow.map(crate::vm::slow::enter).transpose()?;
        let cpus = opts.cpus(configs.len());
        let timeout = opts.limits().timeout;
        if !self.quiet {
            let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
            println!(
                "xtask: booting {} VM(s): {}, {cpus} vCPU(s) each (timeout {} s)",
                names.len(),
                names.join(", "),
                timeout.as_secs()
            );
        }
        if self.edit_first {
            let outcomes = self.edit_first(&opts, &mut b, &initrd, &configs, &out, total)?;
            b.times.push((Phase::Total, total.elapsed()));
            if !self.quiet {
                println!("xtask: {}", fmt_times(&b.times));
            }
            return conclude(&out, &outcomes, &b.times);
        }
        let t = Instant::now();
        let runs = self.boot_all(&opts, &b, &initrd, &configs)?;
        b.times.push((Phase::Vms, t.elapsed()));
        let mut outcomes = Vec::new();
        let mut ports = Vec::new();
        for (c, booted) in configs.iter().zip(runs) {
            ports.push(booted.run.coverage_log.clone());
            outcomes.push(self.evaluate(c, booted)?);
        }
        if let Some((ko, copy)) = &instrumented {
            let failed = outcomes.iter().any(|o| !o.failures.is_empty());
            match crate::analyses::coverage::report(
                ko,
                copy,
                &ports,
                &out,
                opts.flavour.kernel_has().fault_injection,
            ) {
                Ok(head) => {
                    print!("{head}");
                    println!(
                        "xtask: coverage report in {} (lcov.info, summary.txt, tests.txt)",
                        out.display()
                    );
                }
                // A failed suite may have cut a table short: its own failure says why.
                Err(e) if failed => println!("xtask: no coverage report: {e:#}"),
                Err(e) => return Err(e.context("the coverage report")),
            }
        }
        b.times.push((Phase::Total, total.elapsed()));
        if !self.quiet {
            println!("xtask: {}", fmt_times(&b.times));
        }
        conclude(&out, &outcomes, &b.times)
    }

    /// Boots every VM of `configs` (in parallel unless the consoles are streamed or a debugger
    /// waits), each judged, and kunit.py's reading of its KTAP compared.
    fn boot_all(
        &self,
        opts: &vm::Options,
        b: &crate::image::Built,
        initrd: &Path,
        configs: &[VmConfig],
    ) -> Result<Vec<Booted>> {
        let boot_one = |c: &VmConfig| {
            let boot = vm::Boot {
                env: c.env.clone(),
                qemu_args: &c.qemu,
                ..opts.boot(vm::Mode::Test, &c.dir, configs.len())
            };
            let run = vm::boot(&b.tools, &b.kernel, initrd, &boot)
                .with_context(|| format!("booting the {} VM", c.name))?;
            let mut judged = match c.target {
                Some(_) => crate::target::judge(&run),
                None => ktap::judge(&run, c.edu, opts.flavour.kernel_has()),
            };
            // The kernel's own KTAP parser must read our KTAP as we do. A Python start per VM:
            // done here, in the VM's thread, so the VMs' checks overlap.
            if let Some(d) =
                crate::report::kunit::parse_disagrees(&b.kernel.src, &run.ktap_log, &judged.report)?
            {
                judged.failures.push(ktap::Failure::ParserDisagrees(d));
            }
            Ok(Booted { run, judged })
        };
        let runs: Vec<Result<Booted>> = if self.verbose || self.gdb {
            configs.iter().map(boot_one).collect()
        } else {
            vm::in_parallel(configs, boot_one)
        };
        runs.into_iter().collect()
    }

    /// `--edit-first`: the tests that run the module's changed lines ([`crate::analyses::edit`]) in every
    /// VM, with their verdict; if it passes, the rest of the suite. Without a coverage map or an
    /// edit, the whole suite at once.
    fn edit_first(
        &self,
        opts: &vm::Options,
        b: &mut crate::image::Built,
        initrd: &Path,
        configs: &[VmConfig],
        out: &Path,
        since: Instant,
    ) -> Result<Vec<VmOutcome>> {
        let names = crate::image::programs::list_of(&b.guest_dir.join("pcmsig-tests"))?;
        let first: Vec<String> = match crate::analyses::edit::of_module()? {
            crate::analyses::edit::Found::NoMap(why) => {
                println!("xtask: edit-first: {why}: the whole suite at once");
                Vec::new()
            }
            crate::analyses::edit::Found::Map {
                selection: sel,
                made,
            } => {
                let first: Vec<String> = sel
                    .tests
                    .iter()
                    .filter(|t| names.contains(t))
                    .cloned()
                    .collect();
                if !sel.is_edit() {
                    println!(
                        "xtask: edit-first: module/ is as the coverage map ({made}) measured it: \
                         the whole suite at once"
                    );
                } else {
                    println!(
                        "xtask: edit-first: module/ differs from the coverage map's copy ({made}; \
                         `cargo xtask coverage` makes it again) in {}",
                        sel.changed
                            .iter()
                            .chain(&sel.unknown)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if !sel.unknown.is_empty() {
                        println!(
                            "xtask: edit-first: no test is known to run {}",
                            sel.unknown.join(", ")
                        );
                    }
                    println!(
                        "xtask: edit-first: {} of {} tests run the changed lines",
                        first.len(),
                        names.len()
                    );
                }
                first
            }
        };
        let mut outcomes = Vec::new();
        let t = Instant::now();
        let rest = if first.is_empty() {
            None
        } else {
            let dir = out.join("first");
            let filter = crate::image::initramfs::filter_file(&dir, &first.join(","))?;
            let initrd = crate::image::initramfs::build_initramfs(
                &b.tools,
                &b.ko,
                &b.guest_dir,
                &[filter],
                &dir,
            )?;
            let configs: Vec<VmConfig> = configs
                .iter()
                .map(|c| {
                    // The first failure is the answer: reported at once.
                    let mut env = c.env.clone();
                    env.push(format!("{}=1", pcmsig_contract::FAIL_FAST_ENV));
                    VmConfig {
                        name: format!("{}-first", c.name),
                        dir: dir.join(&c.name),
                        env,
                        ..c.clone()
                    }
                })
                .collect();
            for (c, booted) in configs
                .iter()
                .zip(self.boot_all(opts, b, &initrd, &configs)?)
            {
                outcomes.push(self.evaluate(c, booted)?);
            }
            let failed = outcomes.iter().any(|o| !o.failures.is_empty());
            println!(
                "xtask: {} ({} tests that run the edit, {} VM(s)): {} after {:.1} s",
                crate::report::summary::FIRST_VERDICT,
                first.len(),
                configs.len(),
                if failed { "FAIL" } else { "PASS" },
                since.elapsed().as_secs_f64()
            );
            if failed {
                println!(
                    "xtask: the rest of the suite did not run: the edit broke a test that runs it"
                );
                b.times.push((Phase::Vms, t.elapsed()));
                return Ok(outcomes);
            }
            let rest: Vec<String> = names
                .iter()
                .filter(|n| !first.contains(n))
                .cloned()
                .collect();
            if rest.is_empty() {
                b.times.push((Phase::Vms, t.elapsed()));
                return Ok(outcomes);
            }
            println!("xtask: edit-first: now the other {} tests", rest.len());
            Some(
                first
                    .iter()
                    .map(|t| format!("!{t}"))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        };
        let initrd = match &rest {
            Some(f) => {
                let filter = crate::image::initramfs::filter_file(out, f)?;
                crate::image::initramfs::build_initramfs(
                    &b.tools,
                    &b.ko,
                    &b.guest_dir,
                    &[filter],
                    out,
                )?
            }
            None => initrd.to_path_buf(),
        };
        for (c, booted) in configs
            .iter()
            .zip(self.boot_all(opts, b, &initrd, configs)?)
        {
            outcomes.push(self.evaluate(c, booted)?);
        }
        b.times.push((Phase::Vms, t.elapsed()));
        Ok(outcomes)
    }

    /// `--edit-first` chooses the tests itself, of pcmsig's module, outside a coverage run
    /// (`other`: a coverage run or a `--target`): it refuses the flags that choose otherwise.
    fn check_edit_first(&self, other: bool) -> Result<()> {
        if !self.edit_first {
            return Ok(());
        }
        for (given, flag) in [
            (other, "--target or coverage"),
            (self.filter.is_some(), "--filter"),
            (self.jobs.is_some(), "--jobs"),
            (self.gdb, "--gdb"),
        ] {
            if given {
                bail!("--edit-first chooses the tests itself: not with {flag}");
            }
        }
        Ok(())
    }

    /// The `--target`, if any, refusing the flags that only pcmsig's suite understands.
    fn target(&self) -> Result<Option<crate::target::Target>> {
        let Some(spec) = &self.target else {
            return Ok(None);
        };
        for (given, flag) in [
            (self.seed.is_some(), "--seed"),
            (self.model_steps.is_some(), "--model-steps"),
            (self.no_edu, "--no-edu"),
            (self.jobs.is_some(), "--jobs"),
            (self.fail_fast, "--fail-fast"),
        ] {
            if given {
                bail!("{flag} is a flag of pcmsig's suite: not with --target");
            }
        }
        crate::target::Target::find(spec).map(Some)
    }

    /// A target's VMs: one per `[[vm]]` of its harness.toml, their files under `out`.
    fn target_configs(
        &self,
        t: &crate::target::Target,
        opts: &vm::Options,
        guest_dir: &Path,
        out: &Path,
    ) -> Result<Vec<VmConfig>> {
        let mut env = vm::port_env();
        if let Some(f) = &self.filter {
            check_filter(&guest_dir.join(&t.suite), f)?;
            env.push(word(env::FILTER, f));
        }
        Ok(t.vm
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut qemu = opts.qemu_args.clone();
                qemu.extend(v.qemu.iter().cloned());
                VmConfig {
                    name: v.name.clone(),
                    edu: false,
                    target: Some(t.name.clone()),
                    // The first VM's files at the top, as for pcmsig's plain VM.
                    dir: if i == 0 {
                        out.to_path_buf()
                    } else {
                        out.join(&v.name)
                    },
                    qemu,
                    env: env.clone(),
                }
            })
            .collect())
    }

    /// The VMs to boot: the plain one (periods from the timer) and, unless `--no-edu`, one with
    /// QEMU's `edu` PCI device (periods from its interrupts). Both run the whole suite.
    fn configs(&self, opts: &vm::Options, guest_dir: &Path, out: &Path) -> Result<Vec<VmConfig>> {
        let mut env = vm::test_env(opts.flavour);
        if let Some(f) = &self.filter {
            check_filter(&guest_dir.join("pcmsig-tests"), f)?;
            env.push(word(env::FILTER, f));
        }
        if self.fail_fast {
            env.push(format!("{}=1", pcmsig_contract::FAIL_FAST_ENV));
        }
        if let Some(seed) = self.seed {
            env.push(word(env::SEED, seed));
        }
        if let Some(steps) = self.model_steps {
            env.push(word(env::MODEL_STEPS, steps));
            // Far below the model's pace (200,000 steps in about 22 s under TCG, 2026-11-29):
            // a hang guard, below the VM's own time limit for the CI's run.
            let base = if opts.flavour == vm::Flavour::Debug {
                vm::TEST_TIMEOUT_S.1
            } else {
                vm::TEST_TIMEOUT_S.0
            };
            let limit = base + steps / 1000;
            let limit_word = word(env::TEST_TIMEOUT, limit);
            env.retain(|w| w.split('=').next() != Some(env::TEST_TIMEOUT));
            env.push(limit_word);
        }
        let jobs = self.jobs.unwrap_or(1);
        if jobs == 0 {
            bail!("--jobs must be at least 1");
        }
        let mut configs = Vec::new();
        for index in 0..jobs {
            // Shard 0 keeps the names and directories of an unsplit run.
            let (suffix, mut env) = (
                if index == 0 {
                    String::new()
                } else {
                    format!("-{index}")
                },
                env.clone(),
            );
            if jobs > 1 {
                let shard = pcmsig_contract::Shard { index, count: jobs };
                env.push(format!("{}={shard}", pcmsig_contract::SHARD_ENV));
            }
            let plain = format!("plain{suffix}");
            configs.push(VmConfig {
                dir: if index == 0 {
                    out.to_path_buf()
                } else {
                    out.join(&plain)
                },
                name: plain,
                edu: false,
                target: None,
                qemu: opts.qemu_args.clone(),
                env: env.clone(),
            });
            if !self.no_edu {
                let mut qemu = opts.qemu_args.clone();
                qemu.extend(pcmsig_contract::EDU_QEMU_ARGS.map(String::from));
                env.push(word(env::EDU, 1));
                let name = format!("edu{suffix}");
                configs.push(VmConfig {
                    dir: out.join(&name),
                    name,
                    edu: true,
                    target: None,
                    qemu,
                    env,
                });
            }
        }
        Ok(configs)
    }

    /// One VM's verdict, cross-checked by kunit.py, with its reports written and printed.
    fn evaluate(&self, c: &VmConfig, booted: Booted) -> Result<VmOutcome> {
        let name = c.name.as_str();
        let Booted { run, judged } = booted;
        let junit_path = c.dir.join("junit.xml");
        std::fs::write(
            &junit_path,
            junit::of_run(
                &format!("{}.{name}", c.target.as_deref().unwrap_or("pcmsig")),
                &run,
                &judged,
            ),
        )
        .with_context(|| format!("writing {}", junit_path.display()))?;
        let ktap::Judgement {
            report,
            failures,
            blamed,
        } = judged;
        let dmesg_path = &run.dmesg_log;
        let counts = report.counts();
        let boot = vm::init_uptime(&run.console);
        let summary = VmSummary {
            vm: name.to_string(),
            passed: counts.passed,
            failed: counts.failed,
            skipped: counts.skipped,
            pass: failures.is_empty(),
            vm_s: run.wall.as_secs_f64(),
            init_uptime_s: boot,
            first_ktap_s: run.first_ktap.map(|d| d.as_secs_f64()),
            phases: Default::default(),
        };
        if !self.quiet {
            print_results(&report);
            println!(
                "xtask: {name} VM: {} passed, {} failed, {} skipped; VM {:.1} s (init at {} guest uptime, first KTAP line after {})",
                counts.passed,
                counts.failed,
                counts.skipped,
                run.wall.as_secs_f64(),
                boot.map_or("?".to_string(), |u| format!("{u:.2} s")),
                run.first_ktap.map_or("?".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
            );
            if let Some(slowest) = report.slowest(SLOWEST_SHOWN) {
                println!("xtask: {name} VM: slowest tests: {slowest}");
            }
            println!("xtask: {name} VM: console {}", run.console_log.display());
            println!(
                "xtask: {name} VM: KTAP {}, JUnit {}, dmesg {}",
                run.ktap_log.display(),
                junit_path.display(),
                dmesg_path.display()
            );
        }
        if !failures.is_empty() && !self.verbose {
            print_console_tail(&run.console, 40);
        }
        Ok(VmOutcome {
            counts,
            blamed: blamed
                .into_iter()
                .map(|(test, class)| format!("{name}:{test}:{class}"))
                .collect(),
            failures: failures.iter().map(|f| format!("{name} VM: {f}")).collect(),
            summary,
        })
    }
}

/// How many of each VM's slowest tests the run names (their times are in the JUnit report).
const SLOWEST_SHOWN: usize = 3;

/// Writes `summary.jsonl`, prints the totals and the blamed tests, and turns the VMs' failures
/// into the command's result.
fn conclude(out: &Path, outcomes: &[VmOutcome], times: &[(Phase, Duration)]) -> Result<()> {
    // Where the run's time went, on every VM's line.
    let summary: Vec<VmSummary> = outcomes
        .iter()
        .map(|o| VmSummary {
            phases: crate::report::summary::phases(times),
            ..o.summary.clone()
        })
        .collect();
    crate::report::summary::write(&out.join(crate::report::summary::SUMMARY), &summary)?;
    let sum = |f: fn(&ktap::Counts) -> usize| outcomes.iter().map(|o| f(&o.counts)).sum::<usize>();
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        sum(|c| c.passed),
        sum(|c| c.failed),
        sum(|c| c.skipped)
    );
    let every = |of: fn(&VmOutcome) -> &[String]| -> Vec<&str> {
        outcomes
            .iter()
            .flat_map(|o| of(o).iter().map(String::as_str))
            .collect()
    };
    // One machine-readable line for scripts: VM:test:detector.
    let blamed = every(|o| &o.blamed);
    if !blamed.is_empty() {
        println!("xtask: blamed {}", blamed.join(" "));
    }
    let failures = every(|o| &o.failures);
    if !failures.is_empty() {
        bail!("FAIL:\n  {}", failures.join("\n  "));
    }
    println!("xtask: PASS");
    Ok(())
}

/// Refuses a `--filter` that matches no test, naming the tests (asks the suite's guest program
/// itself, which runs on the host: `SUITE --list`).
fn check_filter(suite: &Path, filter: &str) -> Result<()> {
    if filter.is_empty()
        || filter
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        bail!("--filter must be non-empty globs (comma-separated) without spaces or quotes");
    }
    let names = crate::image::programs::list_of(suite)?;
    // Each of its globs must match: a typo in one of several must not pass either.
    for g in filter.split(',') {
        let g = g.strip_prefix('!').unwrap_or(g);
        if !names.iter().any(|n| pcmsig_contract::glob(g, n)) {
            bail!(
                "--filter {filter:?}: {g:?} matches no test; the tests are:\n  {}",
                names.join("\n  ")
            );
        }
    }
    Ok(())
}

fn print_results(report: &ktap::Report) {
    for t in &report.tests {
        match &t.status {
            ktap::Status::Ok => {}
            ktap::Status::Skip(r) => println!("xtask: skip {} ({r})", t.name),
            ktap::Status::NotOk => {
                println!("xtask: FAILED {}", t.name);
                for d in &t.diagnostics {
                    println!("xtask:     # {d}");
                }
            }
        }
    }
}

fn print_console_tail(console: &str, n: usize) {
    let lines: Vec<&str> = console.lines().collect();
    eprintln!("xtask: last {n} console lines:");
    for l in &lines[lines.len().saturating_sub(n)..] {
        eprintln!("  | {}", l.trim_end_matches('\r'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_flags(args: &[&str]) -> flags::Test {
        let argv = std::iter::once("test")
            .chain(args.iter().copied())
            .map(std::ffi::OsString::from)
            .collect();
        match flags::Xtask::from_vec(argv).unwrap().subcommand {
            flags::XtaskCmd::Test(f) => f,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_runs_directory_names_its_series_and_target() {
        let dir = |args: &[&str], coverage: bool| {
            let f = test_flags(args);
            let d = f.out_dir(coverage, f.target().unwrap().as_ref());
            d.strip_prefix(crate::paths::out_dir(""))
                .unwrap()
                .display()
                .to_string()
        };
        assert_eq!(dir(&[], false), "test");
        assert_eq!(dir(&[], true), "coverage");
        assert_eq!(dir(&["--kernel", "7.2"], false), "test-7.2");
        assert_eq!(dir(&["--kernel", "7.2"], true), "coverage");
        assert_eq!(
            dir(&["--target", "ringbuf", "--kernel", "7.2"], false),
            "targets/ringbuf/test-7.2"
        );
        assert_eq!(dir(&["--target", "ringbuf"], false), "targets/ringbuf/test");
    }

    #[test]
    fn kernel_all_is_tests_alone_and_not_with_a_source() {
        let e = test_flags(&["--kernel", "all", "--kernel-src", "/x"])
            .run()
            .unwrap_err();
        assert!(e.to_string().contains("choose one"), "{e}");
        let e = crate::kernel::source_of(None, Some("all")).unwrap_err();
        assert!(e.to_string().contains("not this command"), "{e}");
    }

    #[test]
    fn edit_first_refuses_the_flags_that_choose_tests_otherwise() {
        assert!(test_flags(&["--edit-first"])
            .check_edit_first(false)
            .is_ok());
        assert!(test_flags(&[]).check_edit_first(true).is_ok());
        let refused = |args: &[&str], other: bool| {
            let e = test_flags(args).check_edit_first(other).unwrap_err();
            assert!(e.to_string().contains("--edit-first"), "{e}");
        };
        refused(&["--edit-first"], true);
        refused(&["--edit-first", "--filter", "x"], false);
        refused(&["--edit-first", "--jobs", "2"], false);
        refused(&["--edit-first", "--gdb"], false);
    }

    #[test]
    fn a_targets_vms_are_its_own_with_the_port_words_and_no_pcmsig_flag() {
        let t = crate::target::Target::find("ringbuf").unwrap();
        let f = test_flags(&["--target", "ringbuf", "--qemu-arg", "-no-hpet"]);
        let out = Path::new("/out");
        let c = f
            .target_configs(&t, &f.vm_options().unwrap(), Path::new("/guest"), out)
            .unwrap();
        assert_eq!(c.len(), t.vm.len());
        assert_eq!(
            (c[0].name.as_str(), c[0].dir.as_path()),
            (t.vm[0].name.as_str(), out)
        );
        assert_eq!(c[0].target.as_deref(), Some("ringbuf"));
        assert!(!c[0].edu);
        assert_eq!(c[0].env, vm::port_env());
        let mut qemu = vec!["-no-hpet".to_string()];
        qemu.extend(t.vm[0].qemu.iter().cloned());
        assert_eq!(c[0].qemu, qemu);
        for flag in [
            &["--seed", "1"][..],
            &["--jobs", "2"],
            &["--no-edu"],
            &["--fail-fast"],
            &["--model-steps", "9"],
        ] {
            let mut args = vec!["--target", "ringbuf"];
            args.extend(flag);
            let e = test_flags(&args).target().unwrap_err().to_string();
            assert!(
                e.contains(flag[0]) && e.contains("not with --target"),
                "{e}"
            );
        }
    }

    #[test]
    fn zero_cpus_is_refused_by_name() {
        let e = test_flags(&["--cpus", "0"]).vm_options().unwrap_err();
        assert!(e.to_string().contains("--cpus"), "{e}");
        assert_eq!(
            test_flags(&["--cpus", "1"]).vm_options().unwrap().cpus,
            Some(1)
        );
    }

    #[test]
    fn fail_fast_reaches_the_guest() {
        let f = test_flags(&["--fail-fast"]);
        let configs = f
            .configs(
                &f.vm_options().unwrap(),
                Path::new("/nonexistent"),
                Path::new("/tmp"),
            )
            .unwrap();
        let word = format!("{}=1", pcmsig_contract::FAIL_FAST_ENV);
        assert!(configs.iter().all(|c| c.env.contains(&word)));
        let f = test_flags(&[]);
        let configs = f
            .configs(
                &f.vm_options().unwrap(),
                Path::new("/nonexistent"),
                Path::new("/tmp"),
            )
            .unwrap();
        assert!(configs.iter().all(|c| !c.env.contains(&word)));
    }

    #[test]
    fn configs_split_the_suite_and_give_the_edu_vm_its_device() {
        let f = test_flags(&["--jobs", "2", "--seed", "7", "--model-steps", "5000"]);
        let opts = f.vm_options().unwrap();
        let out = Path::new("/out");
        let c = f.configs(&opts, Path::new("/guest"), out).unwrap();
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["plain", "edu", "plain-1", "edu-1"]);
        let dirs: Vec<PathBuf> = c.iter().map(|c| c.dir.clone()).collect();
        assert_eq!(
            dirs,
            [
                out.into(),
                out.join("edu"),
                out.join("plain-1"),
                out.join("edu-1")
            ]
        );
        assert_eq!(
            c.iter().map(|c| c.edu).collect::<Vec<_>>(),
            [false, true, false, true]
        );
        for c in &c {
            let has = |w: &str| c.env.iter().any(|e| e == w);
            assert!(
                has("PCMSIG_SEED=7") && has("PCMSIG_MODEL_STEPS=5000"),
                "{:?}",
                c.env
            );
            // The model's hang guard grows with its steps, once.
            assert_eq!(
                c.env
                    .iter()
                    .filter(|e| e.starts_with("PCMSIG_TEST_TIMEOUT="))
                    .collect::<Vec<_>>(),
                ["PCMSIG_TEST_TIMEOUT=35"]
            );
            assert_eq!(has("PCMSIG_EDU=1"), c.edu, "{:?}", c.env);
            assert_eq!(
                c.qemu
                    .ends_with(&["-device".to_string(), "edu".to_string()]),
                c.edu
            );
            let shard = if c.name.ends_with("-1") {
                "pcmsig_shard=1/2"
            } else {
                "pcmsig_shard=0/2"
            };
            assert!(has(shard), "{}: {:?}", c.name, c.env);
        }
        // On the debug kernel the model's limit replaces the kernel's longer one.
        let d = test_flags(&["--debug-kernel", "--no-edu", "--model-steps", "5000"]);
        let c = d
            .configs(&d.vm_options().unwrap(), Path::new("/guest"), out)
            .unwrap();
        let limits: Vec<&String> = c[0]
            .env
            .iter()
            .filter(|e| e.starts_with("PCMSIG_TEST_TIMEOUT="))
            .collect();
        assert_eq!(limits, ["PCMSIG_TEST_TIMEOUT=245"]);
        let one = test_flags(&["--no-edu"]);
        let c = one
            .configs(&one.vm_options().unwrap(), Path::new("/guest"), out)
            .unwrap();
        assert_eq!(c.len(), 1);
        assert!(
            !c[0].env.iter().any(|e| e.starts_with("pcmsig_shard")),
            "{:?}",
            c[0].env
        );
        let none = test_flags(&["--jobs", "0"]);
        assert!(none.configs(&opts, Path::new("/guest"), out).is_err());
    }
}
