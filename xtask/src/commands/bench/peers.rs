//! `cargo xtask bench --peers`: the peers measured beside our harness, on this machine, in the
//! same run. The job is the smallest one every tool does: boot a kernel under QEMU (TCG) and run
//! `true` in the guest, end to end, as a user would type it.
//!
//! - pcmsig: `cargo xtask exec -- true` (our kernel, module and initramfs, no-change).
//! - virtme-ng: `vng --run <bzImage> --disable-kvm --force-9p --exec true` (9p: QEMU 7.2's C
//!   virtiofsd is not the Rust daemon vng drives, and its fallback costs seconds of retries).
//! - vmtest: `vmtest --kernel <bzImage> true`.
//!
//! Both are given `root=/dev/root`: they boot the host's root over 9p with `rootfstype=9p` and
//! no `root=`, which this 7.3 kernel does not default (it says "9p: Bad value for 'source'" and
//! finds no init).
//!
//! kunit.py does a different job, measured as its users meet it: a no-change
//! `kunit.py run --kunitconfig lib/kunit` (check the config, rebuild nothing, boot a UML kernel,
//! run KUnit's own test suites, parse their KTAP). Its first, cold run (a UML kernel build) is
//! not timed.
//!
//! virtme-ng and vmtest boot the same kernel as ours plus `vm/peers.config` (virtio, 9p: they
//! share the host's root file system with the guest). vmtest turns KVM on whenever `/dev/kvm`
//! exists, and KVM hangs on this kind of machine, so it runs in a private mount namespace whose
//! `/dev` has no `kvm` node. `ci/install-peers.sh` installs both at pinned versions.

use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;

use crate::commands::bench::stats::{spread, time_run as time_one, Spread, Success};
use crate::paths::project_root;
use crate::{kernel, tools};

/// A shell script that hides `/dev/kvm` from the command it then runs (in its own mount
/// namespace: the host's `/dev` is untouched).
const WITHOUT_KVM: &str = r#"set -e
d=$(mktemp -d)
mount -t tmpfs -o mode=755 pcmsig-dev "$d"
cp -a /dev/. "$d"/ 2>/dev/null || true
rm -f "$d/kvm"
for m in pts shm mqueue; do
    if mountpoint -q "/dev/$m"; then mount --bind "/dev/$m" "$d/$m"; fi
done
mount --move "$d" /dev
exec "$@"
"#;

/// `PATH` with `dir` first (vng runs `virtme-run` from the PATH).
fn path_with(dir: &std::path::Path) -> std::ffi::OsString {
    let mut p = dir.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("PATH") {
        p.push(":");
        p.push(old);
    }
    p
}

/// The command lines of the jobs timed, each built afresh for every run.
struct Jobs {
    cache: PathBuf,
    image: String,
    kernel_src: PathBuf,
    /// Our `exec`'s VM flags (the bench's).
    ours: Vec<String>,
    kunit_dir: PathBuf,
}

impl Jobs {
    fn vng(&self) -> Command {
        let mut c = Command::new("python3");
        c.arg(self.cache.join("virtme-ng/bin/vng"))
            .env("PYTHONPATH", self.cache.join("virtme-ng"))
            .env("PATH", path_with(&self.cache.join("virtme-ng/bin")))
            .args(["--run", &self.image, "--disable-kvm", "--skip-modules"])
            .args(["--force-9p", "--append", "root=/dev/root", "--verbose"])
            .args(["--memory", "512M", "--cpus", "2", "--exec", "true"]);
        c
    }

    fn vmtest(&self) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private"])
            .args(["sh", "-c", WITHOUT_KVM, "sh"])
            .arg(self.cache.join("bin/vmtest"))
            .args(["--kernel", &self.image, "--kargs", "root=/dev/root", "true"]);
        c
    }

    fn ours(&self) -> Command {
        let mut c = Command::new("cargo");
        c.args(["xtask", "exec"])
            .args(&self.ours)
            .args(["--", "true"])
            .current_dir(project_root());
        c
    }

    fn kunit(&self) -> Command {
        let mut c = Command::new("python3");
        c.arg(self.kernel_src.join("tools/testing/kunit/kunit.py"))
            .args(["run", "--kunitconfig", "lib/kunit", "--jobs", "3"])
            .arg("--build_dir")
            .arg(&self.kunit_dir)
            .current_dir(&self.kernel_src);
        c
    }
}

/// The figure of ours against virtme-ng, and its goal (at most).
pub const EXEC_RATIO: &str = "boot a VM, run `true`: pcmsig / virtme-ng, run by run";
pub const EXEC_RATIO_GOAL: f64 = 0.3;

/// Boot-and-run-`true` times for our harness and each peer, `runs` times each, interleaved so
/// that a slow spell of the machine hits every tool alike; and ours as a ratio to virtme-ng's,
/// run by run.
pub fn measure(
    tools: &tools::Tools,
    opts: &crate::vm::Options,
    runs: usize,
) -> Result<Vec<(String, Spread, &'static str)>> {
    tools::run_script("ci/install-peers.sh", &[])?;
    let kernel = kernel::ensure(tools, opts.kernel_src.as_deref(), false, Some("peers"))?;
    let j = Jobs {
        cache: tools::cache_dir().join("tools"),
        image: kernel.bzimage.display().to_string(),
        kernel_src: kernel.src.clone(),
        ours: opts.to_args(),
        kunit_dir: tools::cache_dir().join("kunit-uml"),
    };
    // kunit.py leaves the build's `.config` in its build directory (not the .kunitconfig).
    if !j.kunit_dir.join(".config").is_file() {
        println!("xtask: bench: peers: first kunit.py run builds a UML kernel (a few minutes)");
        time_one("kunit.py (cold)", &mut j.kunit(), Success::Status)?;
    }
    type Job = (&'static str, fn(&Jobs) -> Command, Success);
    let jobs: [Job; 4] = [
        (
            "boot a VM, run `true`: pcmsig (`cargo xtask exec -- true`)",
            Jobs::ours,
            Success::Status,
        ),
        (
            "boot a VM, run `true`: virtme-ng 1.42 (`vng --run --force-9p --exec true`)",
            Jobs::vng,
            // Without udev on the host, virtme-ng's init finds no virtio-serial names for the
            // script's ports, runs it on the console and cannot send its exit code back (vng
            // then exits with 255): its log says how the command ended.
            Success::Says("script exited with code 0"),
        ),
        (
            "boot a VM, run `true`: vmtest 0.18.0 (`vmtest --kernel bzImage true`)",
            Jobs::vmtest,
            Success::Status,
        ),
        (
            "kunit.py: no-change `kunit.py run` (UML, KUnit's own lib/kunit suites)",
            Jobs::kunit,
            Success::Status,
        ),
    ];
    let mut times = vec![Vec::new(); jobs.len()];
    for run in 1..=runs {
        for ((name, command, success), t) in jobs.iter().zip(times.iter_mut()) {
            println!("xtask: bench: peers {run}/{runs}: {name}");
            t.push(time_one(name, &mut command(&j), *success)?);
        }
    }
    let ratios: Vec<f64> = times[0].iter().zip(&times[1]).map(|(a, b)| a / b).collect();
    let mut figures: Vec<(String, Spread, &'static str)> = jobs
        .iter()
        .zip(&times)
        .map(|((name, _, _), t)| (name.to_string(), spread(t), "s"))
        .collect();
    figures.push((
        format!("{EXEC_RATIO} (goal {EXEC_RATIO_GOAL})"),
        spread(&ratios),
        "x",
    ));
    Ok(figures)
}
