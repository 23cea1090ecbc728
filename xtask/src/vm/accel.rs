//! The accelerator a VM runs on: KVM where it works, else TCG (`--accel auto|kvm|tcg`).
//!
//! `/dev/kvm` existing is not enough: on some machines it exists and does not work (QEMU aborts
//! at once on "failed to set MSR 0x10a" with `-cpu host`, or hangs after "Booting from ROM" with
//! the default CPU). So `auto` asks a bounded trial: QEMU boots the kernel under KVM with no
//! initramfs and must print the kernel's banner within [`TRIAL_LIMIT`]. The answer is cached
//! per host boot (`/proc/sys/kernel/random/boot_id`) and QEMU binary, so later runs pay nothing,
//! and each command says once which accelerator it uses and why.

use anyhow::{bail, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::kernel::Kernel;
use crate::tools::Tools;

/// What a command asked for (`--accel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accel {
    /// KVM if the trial boots, else TCG.
    #[default]
    Auto,
    /// KVM, or fail saying why not.
    Kvm,
    /// TCG, never try KVM.
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Accel, String> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(format!("--accel {s:?}: one of auto, kvm, tcg")),
        }
    }
}

impl Accel {
    /// Its flag word.
    pub fn word(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator a VM runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Kvm,
    Tcg,
}

impl Engine {
    /// QEMU's arguments for it: KVM with the host's CPU model (what the trial boots), TCG with
    /// QEMU's default model.
    pub fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Engine::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Engine::Tcg => &["-accel", "tcg"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Kvm => "KVM",
            Engine::Tcg => "TCG",
        }
    }
}

/// The accelerator chosen, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub engine: Engine,
    pub why: String,
}

/// How long the trial waits for the kernel's banner under KVM (which prints it within a second
/// of starting; TCG takes about 0.3 s here).
pub const TRIAL_LIMIT: Duration = Duration::from_secs(10);

/// What a kernel prints first on its console.
const BANNER: &str = "Linux version";

/// The device KVM needs.
const KVM_DEVICE: &str = "/dev/kvm";

/// Whether the decision is kept quiet (`-q`: only the verdict is printed).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps the accelerator line off the output (`-q`).
pub fn quiet() {
    QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// This process's decision, once made.
static DECIDED: OnceLock<Result<Decision, String>> = OnceLock::new();

/// The accelerator for `requested`, decided once per process (every VM of a command runs on the
/// same one) and said once.
pub fn decide(requested: Accel, tools: &Tools, kernel: &Kernel) -> Result<Decision> {
    let d = DECIDED.get_or_init(|| {
        let d = decide_uncached(requested, tools, kernel, Path::new(KVM_DEVICE));
        let quiet = QUIET.load(std::sync::atomic::Ordering::Relaxed);
        if let (Ok(d), false) = (&d, quiet) {
            // On stderr: `exec`'s stdout is the guest command's.
            eprintln!("xtask: accelerator: {} ({})", d.engine.name(), d.why);
        }
        d.map_err(|e| format!("{e:#}"))
    });
    d.clone().map_err(anyhow::Error::msg)
}

/// [`decide`] without the process-wide memo, for the device at `kvm_device`.
fn decide_uncached(
    requested: Accel,
    tools: &Tools,
    kernel: &Kernel,
    kvm_device: &Path,
) -> Result<Decision> {
    if requested == Accel::Tcg {
        return Ok(Decision {
            engine: Engine::Tcg,
            why: "--accel tcg".into(),
        });
    }
    let works = if !kvm_device.exists() {
        Err(format!("no {}", kvm_device.display()))
    } else if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(kvm_device)
    {
        Err(format!("{} cannot be opened: {e}", kvm_device.display()))
    } else {
        cached_trial(tools, kernel)
    };
    match (works, requested) {
        (Ok(how), _) => Ok(Decision {
            engine: Engine::Kvm,
            why: how,
        }),
        (Err(why), Accel::Kvm) => {
            bail!("--accel kvm: KVM does not work on this machine: {why} (use --accel tcg or auto)")
        }
        (Err(why), _) => Ok(Decision {
            engine: Engine::Tcg,
            why: format!("KVM does not work here: {why}"),
        }),
    }
}

/// The trial's answer for this host boot and QEMU binary: from the cache, or run now and
/// cached. `Ok` says how KVM was found working, `Err` why it was not.
fn cached_trial(tools: &Tools, kernel: &Kernel) -> Result<String, String> {
    let key = cache_key(&tools.qemu);
    let file = crate::tools::cache_dir().join("accel-trial.txt");
    let known = std::fs::read_to_string(&file).unwrap_or_default();
    if let Some(answer) = key.as_deref().and_then(|k| lookup(&known, k)) {
        let cached = |t: String| format!("{t}; cached for this host boot");
        return answer.map(cached).map_err(cached);
    }
    let answer = trial(&tools.qemu, &kernel.bzimage, TRIAL_LIMIT);
    if let Some(k) = key {
        // Best effort: a cache that cannot be written only costs the trial next time.
        let _ = std::fs::create_dir_all(crate::tools::cache_dir());
        let _ = std::fs::write(&file, record(&k, &answer));
    }
    answer
}

/// The cache key: this host boot and the QEMU binary (path, size, mtime).
fn cache_key(qemu: &Path) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let meta = std::fs::metadata(qemu).ok()?;
    Some(format!(
        "{} {} {} {}",
        boot.trim(),
        qemu.display(),
        meta.len(),
        crate::paths::mtime(&meta).as_nanos()
    ))
}

/// The cache file's one line: `KEY\tkvm\tHOW` or `KEY\ttcg\tWHY`.
fn record(key: &str, answer: &Result<String, String>) -> String {
    let (word, text) = match answer {
        Ok(how) => ("kvm", how),
        Err(why) => ("tcg", why),
    };
    format!("{key}\t{word}\t{}\n", text.replace(['\t', '\n'], " "))
}

/// The answer the cache holds for `key`, if it holds one.
fn lookup(cache: &str, key: &str) -> Option<Result<String, String>> {
    cache.lines().find_map(|l| {
        let mut f = l.splitn(3, '\t');
        if f.next()? != key {
            return None;
        }
        match (f.next()?, f.next()?) {
            ("kvm", how) => Some(Ok(how.to_string())),
            ("tcg", why) => Some(Err(why.to_string())),
            _ => None,
        }
    })
}

/// The QEMU command of the trial: the kernel under KVM with the host's CPU, no initramfs (it
/// panics at the missing root and, with `-no-reboot`, QEMU exits), its console on stdout.
pub fn trial_command(qemu: &Path, bzimage: &Path) -> Command {
    let mut c = Command::new(qemu);
    c.args(Engine::Kvm.qemu_args())
        .args(["-M", "q35", "-m", "128", "-smp", "1"])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(bzimage)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=5"]);
    c
}

/// Boots the trial; `Ok` if the kernel's banner came within `limit`, else why not. QEMU is
/// killed at the limit (and not waited for: a process stuck in KVM may not die at once).
pub fn trial(qemu: &Path, bzimage: &Path, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    let mut c = trial_command(qemu, bzimage);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| format!("starting {}: {e}", qemu.display()))?;
    // The output is read by threads: a silent QEMU must not block the limit.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        let mut pipe = pipe;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into()).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut seen = String::new();
    let outcome = loop {
        let left = limit.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(text) => {
                seen.push_str(&text);
                if seen.contains(BANNER) {
                    break Ok(format!(
                        "the trial boot printed the kernel's banner after {:.2} s",
                        start.elapsed().as_secs_f64()
                    ));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                break Err(format!(
                    "the trial QEMU exited ({status}) after {:.2} s without booting: {}",
                    start.elapsed().as_secs_f64(),
                    last_line(&seen)
                ));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if start.elapsed() >= limit {
            break Err(format!(
                "the trial boot printed no kernel banner within {} s (last: {})",
                limit.as_secs(),
                last_line(&seen)
            ));
        }
    };
    let _ = child.kill();
    if outcome.is_ok() || start.elapsed() < limit {
        // Exited, or killed after a banner: reap it. (Its readers end when the pipes close;
        // nothing waits for them.)
        let _ = child.wait();
    }
    outcome
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_string()
}

/// The uncached trial, timed, for the bench: how long `--accel auto` takes to decide on a host
/// boot it has not seen, and what it found (`Ok`: KVM works). `None` where there is no
/// `/dev/kvm` (the decision then costs nothing: no trial runs).
pub fn timed_trial(tools: &Tools, kernel: &Kernel) -> Option<(Duration, Result<String, String>)> {
    if !Path::new(KVM_DEVICE).exists() {
        return None;
    }
    let start = std::time::Instant::now();
    let answer = trial(&tools.qemu, &kernel.bzimage, TRIAL_LIMIT);
    Some((start.elapsed(), answer))
}

/// Which accelerator this process's VMs ran on, and why (the bench's report), once decided.
pub fn decided() -> Option<Decision> {
    DECIDED.get()?.as_ref().ok().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::testing::{fake_kernel, scratch};

    /// A fake QEMU running `body` (a shell script).
    fn fake_qemu(name: &str, body: &str) -> (Tools, Kernel) {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch(name);
        std::fs::create_dir_all(&dir).unwrap();
        let tools = Tools::fake(&dir);
        std::fs::write(&tools.qemu, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&tools.qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kernel = fake_kernel(&dir, "7.3.4");
        (tools, kernel)
    }

    #[test]
    fn the_kvm_and_tcg_command_lines() {
        let (tools, kernel) = fake_qemu("accel-lines", "exit 0");
        let args: Vec<String> = trial_command(&tools.qemu, &kernel.bzimage)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(line.starts_with("-accel kvm -cpu host "), "{line}");
        assert!(
            line.contains("-no-reboot") && !line.contains("-initrd"),
            "{line}"
        );
        assert_eq!(Engine::Tcg.qemu_args(), ["-accel", "tcg"]);
    }

    #[test]
    fn a_trial_that_prints_the_banner_finds_kvm_working() {
        let (tools, kernel) = fake_qemu(
            "accel-works",
            "echo 'SeaBIOS'; echo '[    0.000000] Linux version 7.3.4'; sleep 30",
        );
        let t = Instant::now();
        let r = trial(&tools.qemu, &kernel.bzimage, Duration::from_secs(20));
        assert!(r.as_ref().is_ok_and(|h| h.contains("banner")), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(15), "killed at once");
    }

    #[test]
    fn a_trial_that_aborts_says_why_at_once() {
        let (tools, kernel) = fake_qemu(
            "accel-aborts",
            "echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2; exit 134",
        );
        let t = Instant::now();
        let r = trial(&tools.qemu, &kernel.bzimage, Duration::from_secs(20));
        let e = r.unwrap_err();
        assert!(
            e.contains("failed to set MSR 0x10a") && e.contains("exited"),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn a_silent_trial_is_cut_at_its_limit() {
        let (tools, kernel) = fake_qemu("accel-hangs", "echo 'Booting from ROM..'; sleep 60");
        let t = Instant::now();
        let r = trial(&tools.qemu, &kernel.bzimage, Duration::from_secs(2));
        let e = r.unwrap_err();
        assert!(
            e.contains("within 2 s") && e.contains("Booting from ROM"),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn tcg_never_tries_and_kvm_without_a_device_is_refused_or_falls_back() {
        let (tools, kernel) = fake_qemu("accel-decide", "exit 99");
        let none = scratch("accel-decide").join("no-such-kvm");
        let d = decide_uncached(Accel::Tcg, &tools, &kernel, &none).unwrap();
        assert_eq!(d.engine, Engine::Tcg);
        let d = decide_uncached(Accel::Auto, &tools, &kernel, &none).unwrap();
        assert_eq!(d.engine, Engine::Tcg);
        assert!(
            d.why.contains("no ") && d.why.contains("no-such-kvm"),
            "{}",
            d.why
        );
        let e = decide_uncached(Accel::Kvm, &tools, &kernel, &none).unwrap_err();
        assert!(
            format!("{e}").contains("--accel kvm: KVM does not work"),
            "{e}"
        );
    }

    #[test]
    fn the_cache_answers_only_for_its_key() {
        let ok = Ok("the trial boot printed the kernel's banner after 0.4 s".to_string());
        let bad = Err("the trial QEMU exited\twith\n134".to_string());
        let cache = record("boot1 /q 1 2", &ok) + &record("boot2 /q 1 2", &bad);
        assert_eq!(lookup(&cache, "boot1 /q 1 2"), Some(ok));
        assert_eq!(
            lookup(&cache, "boot2 /q 1 2"),
            Some(Err("the trial QEMU exited with 134".to_string()))
        );
        assert_eq!(lookup(&cache, "boot3 /q 1 2"), None);
        for w in ["auto", "kvm", "tcg"] {
            assert_eq!(w.parse::<Accel>().unwrap().word(), w);
        }
        assert!("fast".parse::<Accel>().is_err());
    }
}
