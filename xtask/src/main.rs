//! `cargo xtask`: pcmsig's harness.
//!
//! `cargo xtask test` checks (and if need be installs) the toolchain, builds a Rust-enabled
//! kernel into a shared cache, builds the module and the static guest programs, packs them into
//! an initramfs, boots QEMU, and turns the guest's KTAP output into the exit status.
//! See ARCHITECTURE.md for the code map.

mod flags;
mod header;
mod initramfs;
mod kernel;
mod ktap;
mod tools;
mod vm;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xshell::Shell;

/// The repository root, derived from this crate's manifest, never from the current directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn main() {
    if let Err(e) = try_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn try_main() -> Result<()> {
    let flags = flags::Xtask::from_env_or_exit();
    let sh = Shell::new()?;
    match flags.subcommand {
        flags::XtaskCmd::Test(f) => f.run(&sh),
        flags::XtaskCmd::Run(f) => f.run(&sh),
        flags::XtaskCmd::Build(f) => f.run(&sh).map(|_| ()),
        flags::XtaskCmd::Header(f) => header::run(f.check),
        flags::XtaskCmd::Selftest(f) => f.run(&sh),
        flags::XtaskCmd::Deps(_) => tools::install(),
    }
}

/// Everything a boot needs, with how long each part took.
struct Built {
    tools: tools::Tools,
    kernel: kernel::Kernel,
    ko: PathBuf,
    guest_dir: PathBuf,
    times: Vec<(&'static str, Duration)>,
}

fn build_all(sh: &Shell, kernel_src: Option<&Path>, clippy: bool) -> Result<Built> {
    let mut times = Vec::new();
    let t = Instant::now();
    let tools = tools::ensure()?;
    tools.print();
    let kernel = kernel::ensure(&tools, kernel_src)?;
    times.push((
        if kernel.built {
            "kernel (built)"
        } else {
            "kernel (cached)"
        },
        t.elapsed(),
    ));
    let t = Instant::now();
    let ko = vm::build_module(&tools, &kernel, false)?;
    if clippy {
        vm::build_module(&tools, &kernel, true)?;
        // Leave the normal build in place for the initramfs.
        vm::build_module(&tools, &kernel, false)?;
    }
    times.push(("module", t.elapsed()));
    let t = Instant::now();
    let guest_dir = vm::build_guest(sh)?;
    times.push(("guest programs", t.elapsed()));
    Ok(Built {
        tools,
        kernel,
        ko,
        guest_dir,
        times,
    })
}

fn out_dir(name: &str) -> PathBuf {
    project_root().join("target/pcmsig").join(name)
}

fn fmt_times(times: &[(&str, Duration)]) -> String {
    times
        .iter()
        .map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl flags::Build {
    fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(sh, self.kernel_src.as_deref(), self.clippy)?;
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out_dir("build"))?;
        println!(
            "xtask: kernel  {} ({})",
            b.kernel.bzimage.display(),
            b.kernel.version
        );
        println!("xtask: module  {}", b.ko.display());
        println!("xtask: initrd  {}", initrd.display());
        println!("xtask: built in {}", fmt_times(&b.times));
        Ok(())
    }
}

impl flags::Test {
    fn run(self, sh: &Shell) -> Result<()> {
        let total = Instant::now();
        let mut b = build_all(sh, self.kernel_src.as_deref(), false)?;
        let out = out_dir("test");
        let t = Instant::now();
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out)?;
        b.times.push(("initramfs", t.elapsed()));
        let mut env = Vec::new();
        if let Some(f) = &self.filter {
            if f.chars().any(char::is_whitespace) {
                bail!("--filter must not contain spaces");
            }
            env.push(format!("pcmsig_filter={f}"));
        }
        let timeout = Duration::from_secs(self.timeout.unwrap_or(300));
        println!("xtask: booting the VM (timeout {} s)", timeout.as_secs());
        let run = vm::boot(
            &b.tools,
            &b.kernel,
            &initrd,
            &vm::Boot {
                mode: "test",
                env,
                timeout,
                qemu_args: &self.qemu_arg,
                stream: self.verbose,
                out_dir: &out,
            },
        )?;
        let report = ktap::parse(&run.console);
        let ktap_path = out.join("ktap.txt");
        std::fs::write(&ktap_path, ktap_text(&run.console)).context("writing ktap.txt")?;
        let failures = ktap::verdict(&run.console, &report, &run.ending);
        print_results(&report);
        let boot = vm::init_uptime(&run.console);
        println!(
            "xtask: build {}; VM {:.1} s (init at {} guest uptime); total {:.1} s",
            fmt_times(&b.times),
            run.wall.as_secs_f64(),
            boot.map_or("?".to_string(), |u| format!("{u:.2} s")),
            total.elapsed().as_secs_f64()
        );
        println!("xtask: console log: {}", run.console_log.display());
        println!("xtask: KTAP: {}", ktap_path.display());
        let c = report.counts();
        println!(
            "xtask: {} passed, {} failed, {} skipped",
            c.passed, c.failed, c.skipped
        );
        if !failures.is_empty() {
            if !self.verbose {
                print_console_tail(&run.console, 40);
            }
            let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
            bail!("FAIL:\n  {}", reasons.join("\n  "));
        }
        println!("xtask: PASS");
        Ok(())
    }
}

impl flags::Run {
    fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(sh, self.kernel_src.as_deref(), false)?;
        let out = out_dir("run");
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out)?;
        let timeout = Duration::from_secs(self.timeout.unwrap_or(120));
        let run = vm::boot(
            &b.tools,
            &b.kernel,
            &initrd,
            &vm::Boot {
                mode: "run",
                env: Vec::new(),
                timeout,
                qemu_args: &self.qemu_arg,
                stream: true,
                out_dir: &out,
            },
        )?;
        println!("xtask: console log: {}", run.console_log.display());
        let problem = ktap::kernel_problem(&run.console);
        match (vm::guest_exit(&run.console), problem, run.ending) {
            (Some(0), None, ktap::Ending::Exited(Some(0))) => Ok(()),
            (_, Some(p), _) => bail!("kernel problem: {p}"),
            (code, None, ending) => bail!("the demo failed (guest exit {code:?}, VM {ending:?})"),
        }
    }
}

impl flags::Selftest {
    /// Boots the real kernel twice with a broken guest and checks the verdict catches each.
    fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(sh, self.kernel_src.as_deref(), false)?;
        let out = out_dir("selftest");
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out)?;
        let mut passed = 0;
        let mut failed = 0;
        for (mode, timeout) in [("panic", 60), ("hang", 5)] {
            let dir = out.join(mode);
            let run = vm::boot(
                &b.tools,
                &b.kernel,
                &initrd,
                &vm::Boot {
                    mode,
                    env: Vec::new(),
                    timeout: Duration::from_secs(timeout),
                    qemu_args: &[],
                    stream: false,
                    out_dir: &dir,
                },
            )?;
            let report = ktap::parse(&run.console);
            let failures = ktap::verdict(&run.console, &report, &run.ending);
            let caught = match mode {
                "panic" => failures.iter().any(
                    |f| matches!(f, ktap::Failure::KernelProblem(l) if l.contains("Kernel panic")),
                ) && matches!(run.ending, ktap::Ending::Exited(_)),
                _ => failures.contains(&ktap::Failure::TimedOut(timeout)),
            };
            let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
            println!(
                "xtask: {mode}: VM ended after {:.1} s; verdict: {}",
                run.wall.as_secs_f64(),
                reasons.join("; ")
            );
            if caught {
                passed += 1;
            } else {
                failed += 1;
                println!(
                    "xtask: {mode}: NOT caught; console: {}",
                    run.console_log.display()
                );
            }
        }
        println!("xtask: selftest: {passed} passed, {failed} failed");
        if failed > 0 {
            bail!("the harness missed a broken guest");
        }
        Ok(())
    }
}

/// The KTAP lines of a console (kernel messages removed), for `target/pcmsig/test/ktap.txt`.
fn ktap_text(console: &str) -> String {
    let start = console.find("KTAP version").unwrap_or(console.len());
    console[start..]
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("ok ")
                || t.starts_with("not ok ")
                || t.starts_with('#')
                || t.starts_with("1..")
                || t.starts_with("KTAP version")
                || t.starts_with("Bail out!")
        })
        .map(|l| format!("{l}\n"))
        .collect()
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
