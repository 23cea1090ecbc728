//! `cargo xtask selftest`: the harness checked on real boots of the real kernel.
//!
//! - a guest that panics must fail the verdict within seconds, with the panic named;
//! - a guest that hangs must be killed by the timeout;
//! - a guest test that hangs, and one that fails, each leaving a running stream and an escaped
//!   process behind, must fail alone: the tests after them pass (no cascade);
//! - the interactive shell, driven through rexpect, must run `pcmsig stats` and exit;
//! - `exec` must propagate the command's exit code and carry `--add`ed files.

use anyhow::{bail, Context, Result};
use pcmsig_contract::env::{self, word};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::image::{build_all, Built};
use crate::paths::out_dir;
use crate::{report::ktap, vm};

fn check(name: &str, ok: bool, detail: String, passed: &mut usize, failed: &mut usize) {
    if ok {
        *passed += 1;
        println!("xtask: selftest {name}: ok ({detail})");
    } else {
        *failed += 1;
        println!("xtask: selftest {name}: FAILED ({detail})");
    }
}

impl crate::flags::Selftest {
    /// The harness checks, or with `--bugs`/`--bug` the seeded-bug catalogue.
    pub(crate) fn run(self) -> Result<()> {
        if self.fresh_root {
            return fresh_root(self.suite.as_deref().unwrap_or("bookworm"));
        }
        if self.target.is_some() && !self.bugs {
            bail!("--target goes with --bugs (a module's seeded bugs)");
        }
        if self.bugs || !self.bug.is_empty() {
            let opts = vm::Options {
                kernel_src: crate::kernel::source_of(
                    self.kernel_src.clone(),
                    self.kernel.as_deref(),
                )?,
                flavour: vm::Flavour::of(self.debug_kernel, false)?,
                ..vm::Options::default()
            };
            if let Some(spec) = &self.target {
                if !self.bug.is_empty() || self.repeat.is_some() || self.slow.is_some() {
                    bail!(
                        "--bug, --repeat and --slow are for pcmsig's catalogue: not with --target"
                    );
                }
                return crate::target::run_bugs(&crate::target::Target::find(spec)?, &opts);
            }
            return crate::analyses::bugs::run(
                &opts,
                self.slow,
                &self.bug,
                self.repeat.unwrap_or(1),
            );
        }
        harness_checks(
            crate::kernel::source_of(self.kernel_src.clone(), self.kernel.as_deref())?.as_deref(),
        )
    }
}

/// `--fresh-root`: the install path from nothing, in a minimal Debian root of `suite`
/// (`ci/fresh-root.sh`: mmdebstrap, chroot, the install step twice, `cargo xtask deps --check`).
fn fresh_root(suite: &str) -> Result<()> {
    let t = Instant::now();
    crate::tools::run_script("ci/fresh-root.sh", &[suite])
        .with_context(|| format!("the fresh-root check on Debian {suite} failed"))?;
    println!(
        "xtask: fresh-root check on Debian {suite} passed in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn harness_checks(kernel_src: Option<&Path>) -> Result<()> {
    let opts = vm::Options {
        kernel_src: kernel_src.map(Path::to_path_buf),
        ..vm::Options::default()
    };
    let b = build_all(&opts, false, true)?;
    let out = out_dir("selftest");
    let initrd =
        crate::image::initramfs::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &[], &out)?;
    let (mut passed, mut failed) = (0, 0);
    // (check, guest mode, timeout, silence limit)
    let cases = [
        ("panic", vm::Mode::Panic, 60, Some(30)),
        ("timeout", vm::Mode::Hang, 5, None),
        ("silence", vm::Mode::Hang, 60, Some(3)),
    ];
    for (name, mode, timeout, silence) in cases {
        let dir = out.join(name);
        let boot = vm::Boot {
            silence: silence.map(Duration::from_secs),
            ..vm::Boot::new(mode, &dir, Duration::from_secs(timeout))
        };
        let run = vm::boot(&b.tools, &b.kernel, &initrd, &boot)
            .with_context(|| format!("booting the {name} check's VM"))?;
        let failures = ktap::judge(&run, false, Default::default()).failures;
        let caught =
            match name {
                "panic" => failures.iter().any(
                    |f| matches!(f, ktap::Failure::KernelProblem(l) if l.contains("Kernel panic")),
                ) && matches!(run.ending, vm::Ending::Exited(_) | vm::Ending::Panicked),
                "timeout" => failures.contains(&ktap::Failure::TimedOut(timeout)),
                _ => failures.contains(&ktap::Failure::Silent(3)),
            };
        let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
        check(
            name,
            caught,
            format!(
                "VM ended after {:.1} s: {}",
                run.wall.as_secs_f64(),
                reasons.join("; ")
            ),
            &mut passed,
            &mut failed,
        );
    }
    match cascade(&b, &initrd, &out.join("cascade")) {
        Ok(d) => check("no-cascade", true, d, &mut passed, &mut failed),
        Err(e) => check(
            "no-cascade",
            false,
            format!("{e:#}"),
            &mut passed,
            &mut failed,
        ),
    }
    match shell(&b, &initrd) {
        Ok(d) => check("shell", true, d, &mut passed, &mut failed),
        Err(e) => check("shell", false, format!("{e:#}"), &mut passed, &mut failed),
    }
    match exec(&b) {
        Ok(d) => check("exec", true, d, &mut passed, &mut failed),
        Err(e) => check("exec", false, format!("{e:#}"), &mut passed, &mut failed),
    }
    println!("xtask: selftest: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("the harness failed its own checks");
    }
    Ok(())
}

/// The suite's cascade check (`PCMSIG_SELFTEST=cascade`, a 5 s per-test limit): only the two
/// `selftest_` tests fail, the hanging one killed for want of progress, and every test after
/// them passes.
fn cascade(b: &Built, initrd: &Path, dir: &Path) -> Result<String> {
    let mut env = crate::vm::test_env(vm::Flavour::Normal);
    env.push(word(env::SELFTEST, pcmsig_contract::SELFTEST_CASCADE));
    env.push(word(env::TEST_TIMEOUT, 5));
    let boot = vm::Boot {
        env,
        ..vm::Boot::new(vm::Mode::Test, dir, Duration::from_secs(300))
    };
    let run = vm::boot(&b.tools, &b.kernel, initrd, &boot).context("booting the cascade VM")?;
    let judged = ktap::judge(&run, false, Default::default());
    cascade_verdict(&judged.report, &judged.failures)
}

/// What [`cascade`] must see: the culprits (`selftest_...`) and only they failed, the hanging
/// one killed by the runner, and the victims after each culprit ran and passed.
fn cascade_verdict(report: &ktap::Report, failures: &[ktap::Failure]) -> Result<String> {
    let culprits: Vec<String> = report
        .tests
        .iter()
        .filter(|t| t.name.starts_with("selftest_"))
        .map(|t| t.name.clone())
        .collect();
    if culprits.len() != 2 {
        bail!(
            "expected the 2 selftest_ tests, saw {}: {report:?}",
            culprits.len()
        );
    }
    let culprits_n = culprits.len();
    let expected = ktap::Failure::Failed(culprits);
    if failures != [expected] {
        let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
        bail!(
            "only the selftest_ tests may fail; the verdict: {}",
            reasons.join("; ")
        );
    }
    let hung = report
        .tests
        .iter()
        .find(|t| t.name == "selftest_hangs_leaving_a_running_stream")
        .context("the hanging test did not report")?;
    if !hung
        .diagnostics
        .iter()
        .any(|d| d.contains("killed: no progress"))
    {
        bail!(
            "the hanging test was not killed for want of progress: {:?}",
            hung.diagnostics
        );
    }
    let victims = report.tests.len() - culprits_n;
    if victims != 2 * pcmsig_contract::CASCADE_VICTIMS.len() {
        bail!("expected each victim twice, saw {victims} other tests");
    }
    Ok(format!(
        "both culprits failed alone; the {victims} tests after them passed"
    ))
}

/// Drives `cargo xtask shell`'s VM through a pty: run `pcmsig stats`, check it, exit.
fn shell(b: &Built, initrd: &Path) -> Result<String> {
    let t = Instant::now();
    let opts = vm::Options::default();
    let qemu = crate::vm::shell_command(
        &b.tools,
        &b.kernel,
        initrd,
        &opts.boot(vm::Mode::Shell, &out_dir("selftest"), 1),
    )?;
    let mut p = rexpect::session::spawn_with_options(
        qemu,
        rexpect::reader::Options::new().timeout_ms(Some(60_000)),
    )
    .context("starting the shell VM")?;
    p.exp_string("pcmsig-init: shell")
        .context("waiting for the shell banner")?;
    // The exit status is the contract, not the CLI's wording: the CLI reached the module.
    p.send_line("test -c /dev/pcmsig && pcmsig stats >/dev/null; echo stats-rc=$?")
        .context("typing")?;
    let (_, rc) = p
        .exp_regex("stats-rc=[0-9]+")
        .context("waiting for pcmsig stats")?;
    if rc != "stats-rc=0" {
        bail!("`pcmsig stats` in the shell VM failed ({rc})");
    }
    p.send_line("exit").context("typing exit")?;
    p.exp_string("pcmsig-init: exit 0")
        .context("waiting for the shell to exit")?;
    p.exp_eof().context("waiting for QEMU to end")?;
    Ok(format!(
        "`pcmsig stats` answered and the VM ended in {:.1} s",
        t.elapsed().as_secs_f64()
    ))
}

/// Runs two commands through the exec path: an exit code and an added file.
fn exec(b: &Built) -> Result<String> {
    let out = out_dir("selftest").join("exec");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let data = out.join("hello.txt");
    std::fs::write(&data, "added-file-content-42\n")
        .with_context(|| format!("writing {}", data.display()))?;
    let mut results = Vec::new();
    for (argv, want_code, want_text) in [
        (
            vec!["sh", "-c", "echo \"it's here\"; exit 7"],
            7,
            "it's here",
        ),
        (vec!["cat", "/root/hello.txt"], 0, "added-file-content-42"),
    ] {
        let argv: Vec<String> = argv.into_iter().map(String::from).collect();
        let extra = vec![
            crate::image::initramfs::parse_add(&data.to_string_lossy())?,
            crate::image::initramfs::exec_file(&out, &argv)?,
        ];
        let initrd =
            crate::image::initramfs::build_initramfs(&b.tools, &b.ko, &b.guest_dir, &extra, &out)?;
        let boot = vm::Boot::new(vm::Mode::Exec, &out, Duration::from_secs(60));
        let run = vm::boot(&b.tools, &b.kernel, &initrd, &boot)
            .with_context(|| format!("booting the exec check's VM ({argv:?})"))?;
        let code = vm::guest_exit(&run.console);
        if code != Some(want_code) || !run.console.contains(want_text) {
            bail!(
                "{argv:?}: exit {code:?} (want {want_code}), output has {want_text:?}: {}",
                run.console.contains(want_text)
            );
        }
        results.push(format!("{} -> {want_code}", argv.join(" ")));
    }
    Ok(results.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANG: &str = "selftest_hangs_leaving_a_running_stream";
    const FAIL: &str = "selftest_fails_leaving_a_running_stream";

    /// The cascade run's KTAP: the culprits with `culprit_diag` on the hanging one, each followed
    /// by the victims, every victim `ok` unless named in `failing`.
    fn ktap(culprit_diag: &str, failing: &[&str]) -> String {
        let mut lines = Vec::new();
        let mut n = 0;
        for culprit in [HANG, FAIL] {
            n += 1;
            if culprit == HANG {
                lines.push(format!("# {culprit_diag}"));
            }
            lines.push(format!("not ok {n} {culprit}"));
            for v in pcmsig_contract::CASCADE_VICTIMS {
                n += 1;
                let status = if failing.contains(&v) { "not ok" } else { "ok" };
                lines.push(format!("{status} {n} {v}"));
            }
        }
        format!("KTAP version 1\n1..{n}\n{}\n", lines.join("\n"))
    }

    fn judge(ktap: &str) -> Result<String> {
        let report = ktap::parse(ktap);
        let failures = ktap::verdict("", &report, &vm::Ending::Exited(Some(0)));
        cascade_verdict(&report, &failures)
    }

    #[test]
    fn culprits_failing_alone_pass_the_check() {
        let ok = judge(&ktap("killed: no progress for 5 s", &[]));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_victim_failing_after_a_culprit_fails_the_check() {
        let e = judge(&ktap(
            "killed: no progress for 5 s",
            &["sigtimedwait_times_out_with_eagain"],
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("only the selftest_ tests may fail"),
            "{e}"
        );
    }

    #[test]
    fn a_hang_ended_otherwise_than_by_the_progress_limit_fails_the_check() {
        let e = judge(&ktap("the test process was killed by signal 14", &[])).unwrap_err();
        assert!(
            e.to_string().contains("not killed for want of progress"),
            "{e}"
        );
    }

    #[test]
    fn a_run_cut_short_fails_the_check() {
        let full = ktap("killed: no progress for 5 s", &[]);
        let cut: String = full.lines().take(6).map(|l| format!("{l}\n")).collect();
        assert!(judge(&cut).is_err());
    }
}
