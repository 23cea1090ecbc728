//! `--slow FACTOR`: the run on a machine FACTOR times slower than this one, on purpose. The
//! xtask process (and so every QEMU it starts from then on) moves into a CPU cgroup whose quota
//! is this host's cores divided by FACTOR: the VMs get that much CPU time and no more, as on a
//! slower or busier machine. Guest time still follows the host's clock (TCG), so everything the
//! guest does takes FACTOR times longer against it, which is what a verdict that depends on
//! speed trips over.
//!
//! Linux cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`); needs root. The cgroup is removed
//! when the guard drops.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use super::Options;

/// CFS accounting period, µs (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// The cgroup this process runs in while slowed; moves it back and removes the cgroup on drop.
pub struct Slowed {
    dir: PathBuf,
    /// `cgroup.procs` of the hierarchy's root cgroup, where the process goes back.
    home: PathBuf,
}

/// The CPU quota, µs per period, for `cores` slowed down by `factor`.
pub fn quota_us(cores: u64, factor: f64) -> u64 {
    ((cores as f64 * PERIOD_US as f64) / factor)
        .round()
        .max(1000.0) as u64
}

/// Moves this process into a new cgroup limited to `cores / factor` CPUs.
pub fn enter(factor: f64) -> Result<Slowed> {
    if factor.is_nan() || factor < 1.0 {
        bail!("--slow takes a factor of 1 or more (got {factor})");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let quota = quota_us(cores, factor);
    let name = format!("pcmsig-slow-{}", std::process::id());
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let (dir, home) = if v2.is_file() {
        let controllers = std::fs::read_to_string(v2).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "cpu") {
            bail!("--slow: the cgroup v2 root has no cpu controller ({v2:?}: {controllers:?})");
        }
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
        let dir = Path::new("/sys/fs/cgroup").join(&name);
        create(&dir)?;
        write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
        (dir, PathBuf::from("/sys/fs/cgroup/cgroup.procs"))
    } else {
        let root = Path::new("/sys/fs/cgroup/cpu");
        if !root.join("cpu.cfs_quota_us").exists() {
            bail!(
                "--slow needs a cpu cgroup (cgroup v2, or v1 mounted at {})",
                root.display()
            );
        }
        let dir = root.join(&name);
        create(&dir)?;
        write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
        write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        (dir, root.join("cgroup.procs"))
    };
    write(&dir.join("cgroup.procs"), &std::process::id().to_string())?;
    println!(
        "xtask: slowed {factor}x: this run gets {:.2} of {cores} CPU(s) (cgroup {})",
        quota as f64 / PERIOD_US as f64,
        dir.display()
    );
    Ok(Slowed { dir, home })
}

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).with_context(|| {
        format!(
            "--slow: creating the cgroup {} (it needs root)",
            dir.display()
        )
    })
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value)
        .with_context(|| format!("--slow: writing {value:?} to {}", path.display()))
}

impl Drop for Slowed {
    fn drop(&mut self) {
        // Best effort: an emptied cgroup that cannot be removed costs nothing.
        let _ = std::fs::write(&self.home, std::process::id().to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The options of a run slowed `factor` times: the VM limits not given on the command line
/// (`--timeout`, `--silence`) are the flavour's defaults times `factor`, as a machine that much
/// slower needs (the debug kernel's 1800 s timeout ended a `--slow 6` run whose edu VM took
/// 3,312 s and passed). A limit given stays as given.
pub fn scaled_limits(opts: &Options, factor: f64) -> Options {
    let limits = opts.limits();
    let times = |d: std::time::Duration| (d.as_secs_f64() * factor.max(1.0)).ceil() as u64;
    Options {
        timeout: opts.timeout.or(Some(times(limits.timeout))),
        silence: opts.silence.or(limits.silence.map(times)),
        ..opts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_slowed_run_gets_its_default_limits_times_the_factor() {
        let debug = Options {
            flavour: crate::vm::Flavour::Debug,
            ..Options::default()
        };
        let slowed = scaled_limits(&debug, 6.0);
        assert_eq!(
            (slowed.timeout, slowed.silence),
            (Some(10_800), Some(1_800))
        );
        assert_eq!(
            slowed.limits().boot_silence,
            Some(Duration::from_secs(1_800))
        );
        let given = Options {
            timeout: Some(100),
            silence: Some(0),
            ..Options::default()
        };
        let slowed = scaled_limits(&given, 3.0);
        assert_eq!((slowed.timeout, slowed.silence), (Some(100), Some(0)));
        let normal = scaled_limits(&Options::default(), 2.5);
        assert_eq!((normal.timeout, normal.silence), (Some(750), Some(150)));
    }

    #[test]
    fn the_quota_is_the_cores_divided_by_the_factor() {
        assert_eq!(quota_us(2, 1.0), 200_000);
        assert_eq!(quota_us(2, 3.0), 66_667);
        assert_eq!(quota_us(1, 2.5), 40_000);
        // Never below 1 ms a period (the kernel's minimum quota).
        assert_eq!(quota_us(1, 1000.0), 1000);
    }
}
