//! How a command's VMs boot: one value, [`Options`], built once per command from its flags
//! (`flags.rs`, `vm_options`), with every default named here; [`Options::boot`] resolves it
//! into a [`Boot`](super::Boot), [`Options::to_args`] hands it to a child `cargo xtask`.

use std::path::PathBuf;
use std::time::Duration;

use super::Boot;

/// Which kernel a command builds and boots: `vm/kernel.config`, plus `vm/<flavour>.config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    #[default]
    Normal,
    /// `vm/debug.config`: KASAN, lockdep, kmemleak, the hang detectors' debug settings.
    Debug,
    /// `vm/fault.config`: fail-nth, failslab, usercopy faults, kmemleak.
    Fault,
}

impl Flavour {
    /// From a command's `--debug-kernel` and `--fault-kernel`.
    pub fn of(debug_kernel: bool, fault_kernel: bool) -> anyhow::Result<Flavour> {
        match (debug_kernel, fault_kernel) {
            (true, true) => anyhow::bail!("--debug-kernel and --fault-kernel: choose one kernel"),
            (true, false) => Ok(Flavour::Debug),
            (false, true) => Ok(Flavour::Fault),
            (false, false) => Ok(Flavour::Normal),
        }
    }

    /// The configuration fragment on top of `vm/kernel.config` (`vm/<name>.config`), which also
    /// names the kernel's cache directory.
    pub fn config(self) -> Option<&'static str> {
        match self {
            Flavour::Normal => None,
            Flavour::Debug => Some("debug"),
            Flavour::Fault => Some("fault"),
        }
    }

    /// The command-line flag that chooses this kernel.
    pub fn flag(self) -> Option<&'static str> {
        self.config().map(|c| match c {
            "debug" => "--debug-kernel",
            _ => "--fault-kernel",
        })
    }

    /// The debug kernel's value of a `(normal, debug)` default; the fault kernel runs at the
    /// normal kernel's pace (no KASAN, no lockdep).
    fn pick<T>(self, (normal, debug): (T, T)) -> T {
        if self == Flavour::Debug {
            debug
        } else {
            normal
        }
    }

    /// Seconds a task may sleep uninterruptibly before the hung-task detector panics the guest.
    pub fn hung_task_secs(self) -> u64 {
        self.pick(HUNG_TASK_S)
    }

    /// What this kernel has that decides whether a guest test may skip.
    pub fn kernel_has(self) -> pcmsig_contract::KernelHas {
        pcmsig_contract::KernelHas {
            kmemleak: self != Flavour::Normal,
            fault_injection: self == Flavour::Fault,
        }
    }
}

/// Virtual CPUs of a VM at most, unless said otherwise: two, so that the module meets real SMP.
pub const DEFAULT_CPUS: u32 = 2;
/// Seconds before a VM is killed unless said otherwise (`--timeout`): normal kernel, debug kernel.
/// Both far above a run on a machine several times slower than the project's (normal: 3 s;
/// debug: about 70 s here, 3 to 4 min seen on a 2.5x slower machine).
pub const DEFAULT_TIMEOUT_S: (u64, u64) = (300, 1800);
/// Seconds of guest silence, once init runs, before a VM is killed unless said otherwise
/// (`--silence`): normal, debug. Above the kernels' own hang detectors (a hung task panics
/// 30 to 35 s after it blocked, 120 to 125 s on the debug kernel, with its backtrace), every
/// test's longest quiet stretch (long tests print progress every 2 s) and the suite's per-test
/// limit (`PCMSIG_TEST_TIMEOUT`: 30 s, debug 240 s), so that a test stuck in user space is
/// reported by the suite itself.
pub const DEFAULT_SILENCE_S: (u64, u64) = (60, 300);
/// Seconds of silence allowed before init's first line: normal, debug (which reached init after
/// 20 s here and 57 to 68 s on a 2.5x slower machine). `--silence` raises it, never lowers it.
pub const BOOT_SILENCE_S: (u64, u64) = (60, 600);
/// Seconds a task may sleep uninterruptibly before the hung-task detector panics the guest:
/// normal, debug. The debug kernel's is longer: under KASAN and kmemleak, two such VMs sharing
/// two cores, a storm thread waited 30 s for the misc device's open mutex while its holder,
/// preempted in KASAN's quarantine, waited for a CPU (CI, 2026-11-29; no driver lock involved).
/// A real hang still ends the VM (the seeded `sleep_holding_control`), 2 minutes later there.
pub const HUNG_TASK_S: (u64, u64) = (30, 120);

/// A VM's time limits, resolved from the kernel flavour's defaults and `--timeout`/`--silence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub silence: Option<Duration>,
    pub boot_silence: Option<Duration>,
}

/// The VM flags every booting command shares (`--kernel-src`, `--debug-kernel`,
/// `--fault-kernel`, `--cpus`, `--timeout`, `--silence`, `--qemu-arg`, `--gdb`, `--keep`, `-v`,
/// `-q`), as given: [`Options::boot`] and [`Options::cpus`] resolve them, once, where a VM is
/// booted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    pub kernel_src: Option<PathBuf>,
    pub flavour: Flavour,
    pub cpus: Option<u32>,
    pub timeout: Option<u64>,
    pub silence: Option<u64>,
    pub qemu_args: Vec<String>,
    /// Start QEMU's gdb stub and wait for a debugger (no time limits).
    pub gdb: bool,
    /// Stream the guest console while it runs.
    pub verbose: bool,
    /// Print only the verdict.
    pub quiet: bool,
    /// Keep the VM's inputs (kernel, module, initramfs) next to its logs.
    pub keep: bool,
    /// KVM, TCG, or KVM where a trial boot shows it works (`--accel`).
    pub accel: super::Accel,
}

impl Options {
    /// The time limits: the flags, else the flavour's defaults.
    pub fn limits(&self) -> Limits {
        let pick = |defaults| self.flavour.pick(defaults);
        let after_init = self.silence.unwrap_or(pick(DEFAULT_SILENCE_S));
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Limits {
            timeout: Duration::from_secs(self.timeout.unwrap_or(pick(DEFAULT_TIMEOUT_S))),
            silence: secs(after_init),
            // `--silence 0` means never, in both phases.
            boot_silence: secs(after_init).and(secs(after_init.max(pick(BOOT_SILENCE_S)))),
        }
    }

    /// vCPUs of each of `vms` VMs booted side by side: `--cpus`, else never more virtual CPUs
    /// than host cores (a vCPU thread descheduled while its guest holds a spinlock stalls the
    /// other vCPUs: on 2 cores, two VMs of 2 vCPUs took 10-11 s, two of 1 vCPU 5.7-6.1 s), at
    /// most [`DEFAULT_CPUS`]. The debug kernel keeps 2 per VM: finding SMP races is its job,
    /// speed is not.
    pub fn cpus(&self, vms: usize) -> u32 {
        let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        self.cpus.unwrap_or(if self.flavour == Flavour::Debug {
            DEFAULT_CPUS
        } else {
            (host_cores / vms.max(1) as u32).clamp(1, DEFAULT_CPUS)
        })
    }

    /// How to boot one of `vms` VMs in `mode` with its logs in `out_dir`: these options
    /// resolved (limits, vCPUs, the flavour's hung-task timeout), the console streamed with `-v`.
    pub fn boot<'a>(
        &'a self,
        mode: super::Mode,
        out_dir: &'a std::path::Path,
        vms: usize,
    ) -> Boot<'a> {
        let limits = self.limits();
        Boot {
            mode,
            env: Vec::new(),
            timeout: limits.timeout,
            qemu_args: &self.qemu_args,
            stream: self.verbose,
            gdb: self.gdb,
            silence: limits.silence,
            boot_silence: limits.boot_silence,
            out_dir,
            cpus: self.cpus(vms),
            hung_task_secs: self.flavour.hung_task_secs(),
            accel: self.accel,
        }
    }

    /// The same options as flags of a child `cargo xtask test`, `run` or `exec` (which all
    /// declare every one of them): parsed there, they give these options back.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(k) = &self.kernel_src {
            a.extend(["--kernel-src".to_string(), k.display().to_string()]);
        }
        a.extend(self.flavour.flag().map(str::to_string));
        for (flag, v) in [
            ("--cpus", self.cpus.map(u64::from)),
            ("--timeout", self.timeout),
            ("--silence", self.silence),
        ] {
            if let Some(v) = v {
                a.extend([flag.to_string(), v.to_string()]);
            }
        }
        if self.accel != super::Accel::Auto {
            a.extend(["--accel".to_string(), self.accel.word().to_string()]);
        }
        for q in &self.qemu_args {
            a.extend(["--qemu-arg".to_string(), q.clone()]);
        }
        for (on, flag) in [
            (self.gdb, "--gdb"),
            (self.keep, "--keep"),
            (self.verbose, "--verbose"),
            (self.quiet, "--quiet"),
        ] {
            if on {
                a.push(flag.to_string());
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{Xtask, XtaskCmd};

    fn limits(flavour: Flavour, timeout: Option<u64>, silence: Option<u64>) -> Limits {
        Options {
            flavour,
            timeout,
            silence,
            ..Options::default()
        }
        .limits()
    }

    #[test]
    fn limits_follow_the_kernel_flavour_and_the_flags() {
        let s = |n| Some(Duration::from_secs(n));
        let normal = limits(Flavour::Normal, None, None);
        assert_eq!(
            (normal.timeout, normal.silence, normal.boot_silence),
            (Duration::from_secs(300), s(60), s(60))
        );
        let debug = limits(Flavour::Debug, None, None);
        assert_eq!(
            (debug.timeout, debug.silence, debug.boot_silence),
            (Duration::from_secs(1800), s(300), s(600))
        );
        assert_eq!(limits(Flavour::Fault, None, None), normal);
        // --silence sets the limit after init; it raises the boot's, never lowers it.
        let flagged = limits(Flavour::Debug, Some(100), Some(30));
        assert_eq!(
            (flagged.timeout, flagged.silence, flagged.boot_silence),
            (Duration::from_secs(100), s(30), s(600))
        );
        assert_eq!(
            limits(Flavour::Normal, None, Some(900)).boot_silence,
            s(900)
        );
        let never = limits(Flavour::Debug, None, Some(0));
        assert_eq!((never.silence, never.boot_silence), (None, None));
    }

    #[test]
    fn cpus_never_exceed_the_host_nor_the_default() {
        let host = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let o = Options::default();
        assert_eq!(o.cpus(1), host.clamp(1, DEFAULT_CPUS));
        assert_eq!(o.cpus(64), 1);
        let debug = Options {
            flavour: Flavour::Debug,
            ..Options::default()
        };
        assert_eq!(debug.cpus(64), DEFAULT_CPUS);
        let given = Options {
            cpus: Some(3),
            ..debug
        };
        assert_eq!(given.cpus(2), 3);
    }

    /// What a child `cargo xtask COMMAND` makes of `o.to_args()`.
    fn parsed(command: &str, o: &Options) -> Options {
        let mut argv = vec![std::ffi::OsString::from(command)];
        argv.extend(o.to_args().into_iter().map(Into::into));
        match Xtask::from_vec(argv)
            .expect("the child's flags parse")
            .subcommand
        {
            XtaskCmd::Test(f) => f.vm_options(),
            XtaskCmd::Run(f) => f.vm_options(),
            XtaskCmd::Exec(f) => f.vm_options(),
            _ => unreachable!("not a booting command"),
        }
        .expect("the child's options")
    }

    /// Every option reaches a child command unchanged (bench's children: `test`, `exec`).
    #[test]
    fn options_round_trip_through_a_child_command_line() {
        let all = Options {
            kernel_src: Some(PathBuf::from("/src/linux tree")),
            flavour: Flavour::Debug,
            cpus: Some(1),
            timeout: Some(77),
            silence: Some(0),
            qemu_args: vec!["-device".into(), "edu".into(), "--x y".into()],
            gdb: true,
            verbose: true,
            quiet: true,
            keep: true,
            accel: crate::vm::Accel::Tcg,
        };
        let fault = Options {
            flavour: Flavour::Fault,
            ..Options::default()
        };
        for o in [Options::default(), all, fault] {
            for command in ["test", "run", "exec"] {
                assert_eq!(parsed(command, &o), o, "{command} {:?}", o.to_args());
            }
        }
    }

    #[test]
    fn one_kernel_at_a_time() {
        let argv = ["test", "--debug-kernel", "--fault-kernel"].map(std::ffi::OsString::from);
        let XtaskCmd::Test(f) = Xtask::from_vec(argv.to_vec()).unwrap().subcommand else {
            unreachable!()
        };
        let e = f.vm_options().unwrap_err().to_string();
        assert!(e.contains("choose one kernel"), "{e}");
    }
}
