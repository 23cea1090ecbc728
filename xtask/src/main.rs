//! `cargo xtask`: pcmsig's harness.
//!
//! `cargo xtask test` checks (and if need be installs) the toolchain, builds a Rust-enabled
//! kernel into a shared cache, builds the module and the static guest programs, packs them into
//! an initramfs, boots QEMU, and turns the guest's KTAP output into the exit status.
//! See ARCHITECTURE.md for the code map.

mod bench;
mod bugs;
mod flags;
mod header;
mod initramfs;
mod junit;
mod kernel;
mod ktap;
mod layout;
mod peers;
mod selftest;
mod tidy;
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
    match try_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn try_main() -> Result<i32> {
    let flags = flags::Xtask::from_env_or_exit();
    let sh = Shell::new()?;
    match flags.subcommand {
        flags::XtaskCmd::Test(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Run(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Shell(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Exec(f) => f.run(&sh),
        flags::XtaskCmd::Build(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Selftest(f) if f.bugs || !f.bug.is_empty() => {
            bugs::run(&sh, f.kernel_src.as_deref(), f.debug_kernel, &f.bug).map(|()| 0)
        }
        flags::XtaskCmd::Selftest(f) => selftest::run(&sh, f.kernel_src.as_deref()).map(|()| 0),
        flags::XtaskCmd::Header(f) => header::run(f.check).map(|()| 0),
        flags::XtaskCmd::Deps(_) => tools::install().map(|()| 0),
        flags::XtaskCmd::Bench(f) => bench::run(
            &sh,
            &bench::Opts {
                runs: f.runs.unwrap_or(5).max(1),
                events: f.events.unwrap_or(500).max(1),
                flood: f.flood.unwrap_or(100_000).max(1),
                cold: f.cold,
                peers: f.peers,
            },
        )
        .map(|()| 0),
    }
}

/// Everything a boot needs, with how long each part took.
pub struct Built {
    pub tools: tools::Tools,
    pub kernel: kernel::Kernel,
    pub ko: PathBuf,
    pub guest_dir: PathBuf,
    pub times: Vec<(&'static str, Duration)>,
}

pub fn build_all(
    sh: &Shell,
    kernel_src: Option<&Path>,
    clippy: bool,
    quiet: bool,
    debug: bool,
) -> Result<Built> {
    let mut times = Vec::new();
    let t = Instant::now();
    let tools = tools::ensure()?;
    if !quiet {
        tools.print();
    }
    let kernel = kernel::ensure(&tools, kernel_src, quiet, debug.then_some("debug"))?;
    layout::check(&kernel)?;
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
        vm::check_module_style(&kernel)?;
        println!("xtask: the module follows the kernel's .rustfmt.toml, lines within 100 columns");
        vm::build_module(&tools, &kernel, true)?;
        println!("xtask: the module's CLIPPY=1 build is clean");
        // Leave the normal build in place for the initramfs.
        vm::build_module(&tools, &kernel, false)?;
    }
    vm::check_vermagic(&ko, &kernel)?;
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

/// Kernel command-line words (init's environment) of every test boot: where the suite writes
/// its KTAP, and for the debug kernel a longer per-test alarm.
pub fn test_env(debug_kernel: bool) -> Vec<String> {
    let mut env = vec![format!("pcmsig_ktap={}", pcmsig_uapi::harness::KTAP_DEVICE)];
    if debug_kernel {
        // KASAN, lockdep and kmemleak make the guest several times slower under TCG: a test
        // that takes 5 s on the normal kernel may take a minute here on a busy machine.
        env.push("PCMSIG_TEST_TIMEOUT=240".to_string());
        // The debug kernel has kmemleak: its scan test must run, never skip.
        env.push("PCMSIG_KMEMLEAK=1".to_string());
    }
    env
}

/// Runs `f` on every item, each in its own thread (one VM each), and returns the results in
/// the items' order.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items.iter().map(|i| scope.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("VM thread panicked")))
            })
            .collect()
    })
}

pub fn out_dir(name: &str) -> PathBuf {
    project_root().join("target/pcmsig").join(name)
}

fn fmt_times(times: &[(&str, Duration)]) -> String {
    times
        .iter()
        .map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Copies the VM's inputs next to its logs (`--keep`).
fn keep(b: &Built, initrd: &Path, out: &Path) -> Result<()> {
    for (src, name) in [(&b.kernel.bzimage, "bzImage"), (&b.ko, "pcmsig.ko")] {
        std::fs::copy(src, out.join(name)).with_context(|| format!("copying {}", src.display()))?;
    }
    println!(
        "xtask: kept bzImage, pcmsig.ko and {} in {}",
        initrd.display(),
        out.display()
    );
    Ok(())
}

impl flags::Build {
    fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(sh, self.kernel_src.as_deref(), self.clippy, false, false)?;
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
        let mut b = build_all(
            sh,
            self.kernel_src.as_deref(),
            false,
            self.quiet,
            self.debug_kernel,
        )?;
        let out = out_dir("test");
        let t = Instant::now();
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out)?;
        b.times.push(("initramfs", t.elapsed()));
        if self.keep {
            keep(&b, &initrd, &out)?;
        }
        let mut env = vec![format!("pcmsig_ktap={}", pcmsig_uapi::harness::KTAP_DEVICE)];
        if let Some(f) = &self.filter {
            check_filter(&b.guest_dir, f)?;
            env.push(format!("pcmsig_filter={f}"));
        }
        if let Some(seed) = self.seed {
            env.push(format!("PCMSIG_SEED={seed}"));
        }
        let timeout = Duration::from_secs(self.timeout.unwrap_or(300));
        // Two VM configurations: the plain one (periods from the timer) and one with QEMU's
        // `edu` PCI device (periods from its interrupts). Both run the whole suite.
        let mut configs = vec![("plain", out.clone(), self.qemu_arg.clone(), env.clone())];
        if !self.no_edu {
            let mut qemu = self.qemu_arg.clone();
            qemu.extend(["-device".to_string(), "edu".to_string()]);
            let mut edu_env = env.clone();
            edu_env.push("PCMSIG_EDU=1".to_string());
            configs.push(("edu", out.join("edu"), qemu, edu_env));
        }
        // Never more virtual CPUs than host cores: a vCPU thread descheduled while its guest
        // holds a spinlock stalls the other vCPUs (measured on 2 cores: two VMs of 2 vCPUs took
        // 10-11 s, two of 1 vCPU 5.7-6.1 s). The debug kernel keeps 2 per VM: finding SMP races
        // is its job, speed is not.
        let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let cpus = self.cpus.unwrap_or(if self.debug_kernel {
            vm::DEFAULT_CPUS
        } else {
            (host_cores / configs.len() as u32).clamp(1, vm::DEFAULT_CPUS)
        });
        if !self.quiet {
            let names: Vec<&str> = configs.iter().map(|c| c.0).collect();
            println!(
                "xtask: booting {} VM(s): {}, {cpus} vCPU(s) each (timeout {} s)",
                names.len(),
                names.join(", "),
                timeout.as_secs()
            );
        }
        let silence = Some(Duration::from_secs(self.silence.unwrap_or(60)));
        let boot_one = |(name, dir, qemu, env): &(&str, PathBuf, Vec<String>, Vec<String>)| {
            let boot = vm::Boot {
                mode: "test",
                env: env.clone(),
                timeout,
                qemu_args: qemu,
                stream: self.verbose,
                gdb: self.gdb,
                silence,
                out_dir: dir,
                cpus,
            };
            vm::boot(&b.tools, &b.kernel, &initrd, &boot)
                .with_context(|| format!("booting the {name} VM"))
        };
        // In parallel unless the consoles are streamed (or a debugger waits).
        let runs: Vec<Result<vm::Run>> = if self.verbose || self.gdb {
            configs.iter().map(boot_one).collect()
        } else {
            in_parallel(&configs, boot_one)
        };
        let mut all_failures = Vec::new();
        let mut blamed = Vec::new();
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for ((name, dir, _, _), run) in configs.iter().zip(runs) {
            let run = run?;
            let report = ktap::parse(&run.ktap);
            let mut failures = ktap::verdict(&run.console, &report, &run.ending);
            // The kernel's own KTAP parser must read our KTAP as we do.
            if let Some(disagreement) =
                kunit_parse_disagrees(&b.kernel.src, &run.ktap_log, &report)?
            {
                failures.push(ktap::Failure::BailOut(disagreement));
            }
            let ktap_path = &run.ktap_log;
            let junit_path = dir.join("junit.xml");
            std::fs::write(
                &junit_path,
                junit::render(
                    &format!("pcmsig.{name}"),
                    &report,
                    &failures,
                    &ktap::splats(&run.console),
                    run.wall.as_secs_f64(),
                ),
            )
            .with_context(|| format!("writing {}", junit_path.display()))?;
            let dmesg_path = dir.join("dmesg.txt");
            std::fs::write(&dmesg_path, vm::dmesg(&run.console).unwrap_or_default())
                .with_context(|| format!("writing {}", dmesg_path.display()))?;
            let c = report.counts();
            if !self.quiet {
                print_results(&report);
                let boot = vm::init_uptime(&run.console);
                println!(
                    "xtask: {name} VM: {} passed, {} failed, {} skipped; VM {:.1} s (init at {} guest uptime, first KTAP line after {})",
                    c.passed,
                    c.failed,
                    c.skipped,
                    run.wall.as_secs_f64(),
                    boot.map_or("?".to_string(), |u| format!("{u:.2} s")),
                    run.first_ktap.map_or("?".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
                );
                println!("xtask: {name} VM: console {}", run.console_log.display());
                println!(
                    "xtask: {name} VM: KTAP {}, JUnit {}, dmesg {}",
                    ktap_path.display(),
                    junit_path.display(),
                    dmesg_path.display()
                );
            }
            if !failures.is_empty() && !self.verbose {
                print_console_tail(&run.console, 40);
            }
            all_failures.extend(failures.iter().map(|f| format!("{name} VM: {f}")));
            for (test, class) in ktap::blamed(&report, &failures) {
                blamed.push(format!("{name}:{test}:{class}"));
            }
            passed += c.passed;
            failed += c.failed;
            skipped += c.skipped;
        }
        if !self.quiet {
            println!(
                "xtask: build {}; total {:.1} s",
                fmt_times(&b.times),
                total.elapsed().as_secs_f64()
            );
        }
        println!("xtask: {passed} passed, {failed} failed, {skipped} skipped");
        // One machine-readable line for `selftest --bugs` and scripts: VM:test:detector.
        if !blamed.is_empty() {
            println!("xtask: blamed {}", blamed.join(" "));
        }
        if !all_failures.is_empty() {
            bail!("FAIL:\n  {}", all_failures.join("\n  "));
        }
        println!("xtask: PASS");
        Ok(())
    }
}

impl flags::Run {
    fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(sh, self.kernel_src.as_deref(), false, false, false)?;
        let out = out_dir("run");
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out)?;
        if self.keep {
            keep(&b, &initrd, &out)?;
        }
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
                gdb: self.gdb,
                silence: Some(Duration::from_secs(60)),
                out_dir: &out,
                cpus: vm::DEFAULT_CPUS,
            },
        )?;
        println!("xtask: console {}", run.console_log.display());
        let problem = ktap::kernel_problem(&run.console);
        match (vm::guest_exit(&run.console), problem, run.ending) {
            (Some(0), None, ktap::Ending::Exited(Some(0))) => Ok(()),
            (_, Some(p), _) => bail!("kernel problem: {p}"),
            (code, None, ending) => bail!("the demo failed (guest exit {code:?}, VM {ending:?})"),
        }
    }
}

impl flags::Shell {
    fn run(self, sh: &Shell) -> Result<()> {
        let b = build_all(sh, self.kernel_src.as_deref(), false, false, false)?;
        let extra = self
            .add
            .iter()
            .map(|a| vm::parse_add(a))
            .collect::<Result<Vec<_>>>()?;
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &extra, &out_dir("shell"))?;
        println!("xtask: starting a shell in the VM; the pcmsig CLI is on the PATH.");
        println!("xtask: leave with `exit`, or Ctrl-A X to kill the VM.");
        vm::interactive(vm::shell_command(
            &b.tools,
            &b.kernel,
            &initrd,
            &self.qemu_arg,
            self.gdb,
        ))
    }
}

impl flags::Exec {
    /// Returns the command's exit code.
    fn run(self, sh: &Shell) -> Result<i32> {
        if self.cmd.is_empty() {
            bail!("usage: cargo xtask exec [--add HOST_FILE[:GUEST_PATH]]... -- CMD ARGS...");
        }
        let b = build_all(sh, self.kernel_src.as_deref(), false, true, false)?;
        let out = out_dir("exec");
        std::fs::create_dir_all(&out)?;
        let mut extra = self
            .add
            .iter()
            .map(|a| vm::parse_add(a))
            .collect::<Result<Vec<_>>>()?;
        let script = out.join("pcmsig-exec");
        std::fs::write(&script, vm::exec_script(&self.cmd))?;
        extra.push((script, "/pcmsig-exec".to_string()));
        let initrd = vm::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &extra, &out)?;
        if self.keep {
            keep(&b, &initrd, &out)?;
        }
        let timeout = Duration::from_secs(self.timeout.unwrap_or(300));
        let run = vm::boot(
            &b.tools,
            &b.kernel,
            &initrd,
            &vm::Boot {
                mode: "exec",
                env: Vec::new(),
                timeout,
                qemu_args: &self.qemu_arg,
                stream: true,
                gdb: self.gdb,
                silence: self.silence.map(Duration::from_secs),
                out_dir: &out,
                cpus: vm::DEFAULT_CPUS,
            },
        )?;
        if let Some(p) = ktap::kernel_problem(&run.console) {
            bail!(
                "kernel problem: {p} (console: {})",
                run.console_log.display()
            );
        }
        if let ktap::Ending::TimedOut(s) = run.ending {
            bail!(
                "the command did not finish within {s} s (console: {})",
                run.console_log.display()
            );
        }
        vm::guest_exit(&run.console).with_context(|| {
            format!(
                "the guest never reported the command's exit code (console: {})",
                run.console_log.display()
            )
        })
    }
}

/// Refuses a `--filter` that matches no test, naming the tests (asks the guest binary itself,
/// which runs on the host: `pcmsig-tests --list`).
fn check_filter(guest_dir: &Path, filter: &str) -> Result<()> {
    if filter.is_empty()
        || filter
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        bail!("--filter must be a non-empty glob without spaces or quotes");
    }
    let bin = guest_dir.join("pcmsig-tests");
    let out = std::process::Command::new(&bin)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", bin.display()))?;
    if !out.status.success() {
        bail!("{} --list failed ({})", bin.display(), out.status);
    }
    let list = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if !names.iter().any(|n| pcmsig_uapi::harness::glob(filter, n)) {
        bail!(
            "--filter {filter:?} matches no test; the tests are:\n  {}",
            names.join("\n  ")
        );
    }
    Ok(())
}

/// Runs the kernel's own KTAP parser (`tools/testing/kunit/kunit.py parse`) on `ktap` and
/// compares its counts with ours; returns the disagreement, if any. A run that did not complete
/// is not compared (the verdict already fails it, and kunit.py counts a crash its own way).
fn kunit_parse_disagrees(
    kernel_src: &Path,
    ktap: &Path,
    report: &ktap::Report,
) -> Result<Option<String>> {
    let c = report.leaf_counts();
    if report.plan != Some(report.tests.len())
        || report.bail_out.is_some()
        || report.tests.is_empty()
    {
        return Ok(None);
    }
    let kunit = kernel_src.join("tools/testing/kunit/kunit.py");
    let out = std::process::Command::new("python3")
        .arg(&kunit)
        .arg("parse")
        .arg(ktap)
        .output()
        .with_context(|| {
            format!(
                "running python3 {} parse (package: python3)",
                kunit.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(summary) = text
        .lines()
        .find_map(|l| l.split("Testing complete. ").nth(1))
    else {
        return Ok(Some(format!(
            "kunit.py parse {} printed no summary:\n{text}",
            ktap.display()
        )));
    };
    let theirs = kunit_counts(summary);
    let ours = [
        ("passed", c.passed),
        ("failed", c.failed),
        ("skipped", c.skipped),
        ("crashed", 0),
        ("errors", 0),
    ];
    let differ: Vec<String> = ours
        .iter()
        .filter(|(k, v)| {
            theirs
                .iter()
                .find(|(tk, _)| tk == k)
                .map_or(0, |(_, tv)| *tv)
                != *v
        })
        .map(|(k, v)| {
            format!(
                "{k}: ours {v}, kunit.py {}",
                theirs
                    .iter()
                    .find(|(tk, _)| tk == k)
                    .map_or(0, |(_, tv)| *tv)
            )
        })
        .collect();
    Ok((!differ.is_empty()).then(|| {
        format!(
            "kunit.py parse disagrees ({summary}): {}",
            differ.join("; ")
        )
    }))
}

/// `Ran 3 tests: passed: 1, failed: 1, skipped: 1` -> `[("passed", 1), ...]`.
fn kunit_counts(summary: &str) -> Vec<(String, usize)> {
    summary
        .split_once(':')
        .map_or("", |(_, r)| r)
        .split(',')
        .filter_map(|part| {
            let (k, v) = part.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
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
    let end = console.find(ktap::DMESG_MARKER).unwrap_or(console.len());
    let lines: Vec<&str> = console[..end].lines().collect();
    eprintln!("xtask: last {n} console lines:");
    for l in &lines[lines.len().saturating_sub(n)..] {
        eprintln!("  | {}", l.trim_end_matches('\r'));
    }
}
