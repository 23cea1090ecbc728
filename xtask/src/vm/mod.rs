//! Booting the VM: the QEMU command line and kernel command line, the boot loop with its
//! timeout, silence and panic limits, and the markers init prints on the console.
//!
//! QEMU's serial console is a pty driven by `rexpect`; QEMU also writes everything the guest
//! prints to `console.log`, so the log is complete even when the guest hangs or panics. A second
//! serial port (the guest's `ttyS1`) goes to `ktap.txt`: the test suite's KTAP, byte for byte,
//! never mixed with kernel messages.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kernel::Kernel;
use crate::tools::Tools;
use pcmsig_contract::env::{self, word};

pub mod accel;
mod options;
pub mod slow;
pub use accel::Accel;
pub use options::{Flavour, Options, DEFAULT_CPUS};

/// What the guest's init does (`pcmsig_mode=WORD` on the kernel command line; `vm/init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Run the guest suite (`cargo xtask test`, `coverage`, the seeded bugs).
    Test,
    /// The demo (`cargo xtask run`).
    Demo,
    /// The delivery benchmarks (`cargo xtask bench`).
    Bench,
    /// Run [`crate::image::initramfs::EXEC_SCRIPT`] (`cargo xtask exec`).
    Exec,
    /// An interactive shell (`cargo xtask shell`).
    Shell,
    /// Crash the kernel (`selftest`: a panic must end the run in seconds).
    Panic,
    /// Hang silently (`selftest`: the time and silence limits).
    Hang,
}

impl Mode {
    #[cfg(test)]
    pub const ALL: [Mode; 7] = [
        Mode::Test,
        Mode::Demo,
        Mode::Bench,
        Mode::Exec,
        Mode::Shell,
        Mode::Panic,
        Mode::Hang,
    ];

    /// The word init reads.
    pub fn word(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Demo => "run",
            Mode::Bench => "bench",
            Mode::Exec => "exec",
            Mode::Shell => "shell",
            Mode::Panic => "panic",
            Mode::Hang => "hang",
        }
    }
}

/// The guest suite's per-test limit in seconds (`PCMSIG_TEST_TIMEOUT`): normal kernel (the
/// suite's own default), debug kernel.
pub const TEST_TIMEOUT_S: (u64, u64) = (30, 240);

/// Kernel command-line words (init's environment) of every test boot: where the suite writes
/// its KTAP, and for the debug kernel a longer per-test alarm.
pub fn test_env(flavour: Flavour) -> Vec<String> {
    let mut env = port_env();
    if flavour == Flavour::Debug {
        // KASAN, lockdep and kmemleak make the guest several times slower under TCG: a test
        // that takes 5 s on the normal kernel may take a minute here on a busy machine.
        env.push(word(env::TEST_TIMEOUT, TEST_TIMEOUT_S.1));
        env.push(format!(
            "{}={}",
            pcmsig_contract::LOAD_CYCLES_ENV,
            pcmsig_contract::LOAD_CYCLES_DEBUG
        ));
    }
    if flavour.kernel_has().kmemleak {
        // Both have kmemleak: its scan test must run, never skip.
        env.push(word(env::KMEMLEAK, 1));
    }
    if flavour.kernel_has().fault_injection {
        // The fault sweep must run, never skip.
        env.push(word(env::FAULTS, 1));
        // A kernel parameter, not init's: the slab caches stay their own (the signal queue's),
        // so that failslab's per-cache filter fails only the delivery path's.
        env.push("slab_nomerge".to_string());
    }
    env
}

/// The kernel command-line words of every suite's test boot, pcmsig's or a `--target`'s: the
/// ports init gives the suite for its KTAP and writes the kernel log to.
pub fn port_env() -> Vec<String> {
    use pcmsig_contract::env::{self, word};
    vec![
        word(env::KTAP, pcmsig_contract::KTAP_DEVICE),
        word(env::DMESG, pcmsig_contract::DMESG_DEVICE),
    ]
}

/// How to boot.
pub struct Boot<'a> {
    pub mode: Mode,
    /// Extra `name=value` words for the kernel command line (passed to init as environment).
    pub env: Vec<String>,
    pub timeout: Duration,
    pub qemu_args: &'a [String],
    /// Copy the console to our stdout as it arrives.
    pub stream: bool,
    /// Start QEMU's gdb stub (`-s -S`) and wait for a debugger; disables the timeout.
    pub gdb: bool,
    /// Kill the VM when the guest prints nothing for this long once init has started (hang
    /// detection; the suite's long tests print progress).
    pub silence: Option<Duration>,
    /// The same before init's first line: the kernel boots with its console quiet, and the
    /// debug kernel's boot alone takes 20 s to over a minute under TCG.
    pub boot_silence: Option<Duration>,
    pub out_dir: &'a Path,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
    /// The hung-task detector's timeout for this kernel (`hung_task_secs`).
    pub hung_task_secs: u64,
    /// The accelerator asked for ([`accel::decide`] picks KVM or TCG).
    pub accel: Accel,
}

impl<'a> Boot<'a> {
    /// A headless boot in `mode` with no extra environment or QEMU arguments, no streaming, no
    /// debugger and no silence limit.
    pub fn new(mode: Mode, out_dir: &'a Path, timeout: Duration) -> Self {
        Boot {
            mode,
            env: Vec::new(),
            timeout,
            qemu_args: &[],
            stream: false,
            gdb: false,
            silence: None,
            boot_silence: None,
            out_dir,
            cpus: DEFAULT_CPUS,
            hung_task_secs: Flavour::Normal.hung_task_secs(),
            accel: Accel::Auto,
        }
    }
}

/// Runs `f` on every item, each in its own thread (one VM each), and returns the results in
/// the items' order.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    in_pool(items, items.len(), |_, item| f(item))
}

/// Runs `f` on each item with at most `workers` at once, each worker taking the next item as it
/// finishes one (a long item does not hold back the others); the results in the items' order.
pub fn in_pool<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(usize, &T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        let (f, next, done) = (&f, &next, &done);
        let handles: Vec<_> = (0..workers.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(i, item);
                    if let Ok(mut d) = done.lock() {
                        d.push((i, r));
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    let mut out: Vec<Result<R>> = Vec::with_capacity(items.len());
    let mut it = done.into_iter().peekable();
    for i in 0..items.len() {
        match it.next_if(|(j, _)| *j == i) {
            Some((_, r)) => out.push(r),
            None => out.push(Err(anyhow::anyhow!(
                "item {} of {} has no result: its worker panicked",
                i + 1,
                items.len()
            ))),
        }
    }
    out
}

/// How the VM run ended, as seen from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited by itself with this status.
    Exited(Option<i32>),
    /// The timeout expired and QEMU was killed.
    TimedOut(u64),
    /// The guest printed nothing for this many seconds and QEMU was killed.
    Silent(u64),
    /// The guest panicked and did not reboot; QEMU was killed after the panic's last line.
    Panicked,
}

/// What a boot produced.
pub struct Finished {
    pub console: String,
    pub ending: Ending,
    pub wall: Duration,
    /// Host time from starting QEMU to the first `KTAP version` line, if one came.
    pub first_ktap: Option<Duration>,
    pub console_log: PathBuf,
    /// What the guest wrote to its second serial port (the suite's KTAP).
    pub ktap: String,
    pub ktap_log: PathBuf,
    /// What the guest wrote to its third serial port (a test run's `dmesg`).
    pub dmesg_log: PathBuf,
    /// What the guest wrote to its fourth serial port (the coverage build's tables).
    pub coverage_log: PathBuf,
}

/// The QEMU command line of boot `b` (without the console wiring): the one place a boot's
/// options become QEMU's arguments, for the headless boots and `cargo xtask shell` alike; the
/// accelerator decided here ([`accel::decide`]: `--accel kvm` where KVM does not work is an
/// error). With `b.gdb`, QEMU's gdb stub waits for a debugger (`-s -S`) and the way to attach
/// is printed.
pub fn qemu_command(
    tools: &Tools,
    kernel: &Kernel,
    initrd: &Path,
    b: &Boot<'_>,
) -> Result<Command> {
    let engine = accel::decide(b.accel, tools, kernel)?.engine;
    Ok(qemu_command_on(tools, kernel, initrd, b, engine))
}

/// [`qemu_command`] on a decided accelerator.
pub fn qemu_command_on(
    tools: &Tools,
    kernel: &Kernel,
    initrd: &Path,
    b: &Boot<'_>,
    engine: accel::Engine,
) -> Command {
    let mut c = Command::new(&tools.qemu);
    c.args(engine.qemu_args());
    // Without the PS/2 controller, SATA, SMBus and vmport, which the guest needs none of: the
    // PS/2 mouse's asynchronous probe alone took 0.44 s under TCG, and `reboot -f` waited for
    // it (device_shutdown waits for pending probes): `exec -- true` 1.3 s -> 0.95 s.
    c.args(["-M", "q35,i8042=off,sata=off,smbus=off,vmport=off"])
        .args(["-m", "512", "-smp"])
        .arg(b.cpus.max(1).to_string())
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.bzimage)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(append_line(b.mode, &b.env, b.hung_task_secs))
        .args(b.qemu_args);
    if b.gdb {
        gdb_hint(kernel);
        c.args(["-s", "-S"]);
    }
    c
}

/// The kernel command line for `mode`, with the hung-task timeout `hung_task_secs`.
fn append_line(mode: Mode, env: &[String], hung_task_secs: u64) -> String {
    // panic=-1 reboots at once on a panic, and -no-reboot turns that into QEMU exiting: a crash
    // ends the run in seconds. oops=panic and panic_on_warn make every Oops and WARNING fatal.
    // rcu_expedited: module load and unload wait for RCU grace periods, several ticks each under
    // TCG; expedited ones take one IPI round (50 insmod/rmmod cycles: 1.5 s -> 0.9 s).
    // tsc=reliable: hrtimers run in high-resolution mode only once the clocksource is valid for
    // it. The boot clocksource, tsc-early, is not until the watchdog verified it, and it is
    // replaced by tsc only when the refined calibration runs, about 1.4 s after boot; until then
    // every hrtimer waits for the next 4 ms tick (HZ=250), which is the whole of a short run
    // (`cargo xtask run`'s ten 10 ms periods came 2 to 4.6 ms late, in a 2/4 ms pattern). QEMU's
    // TSC is the host's monotonic clock scaled: declaring it reliable skips the watchdog, and
    // tsc-early is valid for high resolution from the start (checked: /proc/timer_list shows
    // `hres_active: 1` at 0.7 s with it, 0 without until 1.4 s).
    // The hang detectors (vm/kernel.config) panic on their own, but for two settings that are
    // sysctls only: an RCU stall panics too, and hung tasks are looked for every 5 s (not every
    // 30 s, the timeout), so a hung task ends the VM 30 to 35 s after it blocked (the debug
    // kernel's timeout is longer, see `HUNG_TASK_S`).
    // no_timer_check: the boot's check that the 8254 timer reaches the IO-APIC counts ticks
    // against a delay loop; a vCPU starved of host time at that moment misses them and the
    // kernel panics ("IO-APIC + timer doesn't work!", seen with `--slow 16`). QEMU's routing
    // is right by construction; KVM guests skip the check the same way.
    // pty.legacy_count=0: the 256 legacy BSD ptys, which nothing here uses, took 6.4 s of the
    // debug kernel's 31 s boot under TCG (`initcall_debug`: `pty_init`; the kernel option
    // LEGACY_PTYS comes with tinyconfig).
    let mut s = format!(
        "pty.legacy_count=0 console=ttyS0 panic=-1 oops=panic panic_on_warn=1 loglevel=5 rcupdate.rcu_expedited=1 \
         tsc=reliable no_timer_check sysctl.kernel.panic_on_rcu_stall=1 \
         sysctl.kernel.hung_task_check_interval_secs=5 \
         sysctl.kernel.hung_task_timeout_secs={hung_task_secs} pcmsig_mode={}",
        mode.word()
    );
    for e in env {
        s.push(' ');
        s.push_str(e);
    }
    s
}

/// Boots the VM and collects its console until QEMU exits or a limit ends it.
pub fn boot(tools: &Tools, kernel: &Kernel, initrd: &Path, b: &Boot<'_>) -> Result<Finished> {
    if !tools.qemu.is_file() {
        bail!(
            "{} not found (package: qemu-system-x86; run `cargo xtask deps`)",
            tools.qemu.display()
        );
    }
    std::fs::create_dir_all(b.out_dir)
        .with_context(|| format!("creating {}", b.out_dir.display()))?;
    let console_log = b.out_dir.join("console.log");
    let ktap_log = b.out_dir.join("ktap.txt");
    let dmesg_log = b.out_dir.join("dmesg.txt");
    let coverage_log = b.out_dir.join("coverage.txt");
    for old in [&console_log, &ktap_log, &dmesg_log, &coverage_log] {
        let _ = std::fs::remove_file(old);
    }
    let mut qemu = qemu_command(tools, kernel, initrd, b)?;
    let (timeout, silences) = if b.gdb {
        (Duration::from_secs(365 * 24 * 3600), (None, None))
    } else {
        (b.timeout, (b.boot_silence.or(b.silence), b.silence))
    };
    serial_ports(
        &mut qemu,
        &console_log,
        [&ktap_log, &dmesg_log, &coverage_log],
    );
    let mut watch = Watch {
        start: Instant::now(),
        console: String::new(),
        line: String::new(),
        first_ktap: None,
        ktap: KtapTail::new(&ktap_log),
        stream: b.stream,
    };
    let mut session = rexpect::session::spawn_with_options(
        qemu,
        rexpect::reader::Options::new()
            .timeout_ms(Some(timeout.as_millis() as u64))
            .strip_ansi_escape_codes(false),
    )
    .context("starting qemu-system-x86_64 on a pty")?;
    let ending = watch.until_end(&mut session, timeout, silences);
    watch.ktap.poll(b.stream);
    if b.stream && !watch.line.is_empty() {
        println!("{}", watch.line.replace('\r', ""));
    }
    let wall = watch.start.elapsed();
    // QEMU's own log is complete even if the pty lost output at the end; prefer it.
    let logged = std::fs::read(&console_log)
        .map(|v| String::from_utf8_lossy(&v).to_string())
        .unwrap_or_default();
    let console = if logged.len() >= watch.console.len() {
        logged
    } else {
        watch.console
    };
    std::fs::write(&console_log, &console)
        .with_context(|| format!("writing {}", console_log.display()))?;
    let ktap = std::fs::read(&ktap_log)
        .map(|bytes| String::from_utf8_lossy(&bytes).to_string())
        .unwrap_or_default();
    Ok(Finished {
        console,
        ending,
        wall,
        first_ktap: watch.first_ktap,
        console_log,
        ktap,
        ktap_log,
        dmesg_log,
        coverage_log,
    })
}

/// ttyS0: the console on stdio (our pty), also logged by QEMU to `console_log`; then one file
/// port each (ttyS1, ttyS2, ttyS3): the suite's KTAP, a test run's `dmesg`, the coverage build's
/// tables (`pcmsig_contract::{KTAP,DMESG,COVERAGE}_DEVICE`). (The order of `-serial` options is the
/// order of the guest's ttyS ports.)
fn serial_ports(qemu: &mut Command, console_log: &Path, files: [&Path; 3]) {
    qemu.arg("-chardev")
        .arg(format!(
            "stdio,id=con,signal=off,logfile={}",
            console_log.display()
        ))
        .args(["-serial", "chardev:con"]);
    for (i, path) in files.iter().enumerate() {
        qemu.arg("-chardev")
            .arg(format!("file,id=port{},path={}", i + 1, path.display()))
            .args(["-serial".to_string(), format!("chardev:port{}", i + 1)]);
    }
}

/// A running VM's outputs, followed until it ends.
struct Watch<'a> {
    start: Instant,
    /// Everything read from the console pty.
    console: String,
    /// The console line being streamed (with `stream`).
    line: String,
    first_ktap: Option<Duration>,
    ktap: KtapTail<'a>,
    stream: bool,
}

impl Watch<'_> {
    /// Reads the console and the KTAP file until QEMU exits, or kills it: 2 s after a panic's
    /// last line (`panic=-1` normally reboots, and so ends QEMU, at once; a panic in some
    /// contexts hangs in the reboot path instead), after a silence without output from either
    /// (`boot_silence` until init's first line, `silence` after it), or at `timeout`.
    fn until_end(
        &mut self,
        session: &mut rexpect::session::PtySession,
        timeout: Duration,
        (boot_silence, silence): (Option<Duration>, Option<Duration>),
    ) -> Ending {
        let mut last_output = Instant::now();
        let mut panic_end: Option<Instant> = None;
        let mut scanned = 0usize;
        let mut init_started = false;
        loop {
            if self.read_console(session) {
                last_output = Instant::now();
                init_started = init_started || self.console.contains(INIT_UP);
                if panic_end.is_none() {
                    let from = scanned.saturating_sub(PANIC_END.len());
                    if self.console[from..].contains(PANIC_END) {
                        panic_end = Some(Instant::now());
                    }
                    scanned = self.console.len();
                }
                continue;
            }
            // The suite's KTAP counts as output too: the console is quiet while tests pass.
            if self.ktap.poll(self.stream) {
                last_output = Instant::now();
                let start = self.start;
                self.first_ktap.get_or_insert_with(|| start.elapsed());
            }
            let ending = match session.process().status() {
                Some(rexpect::process::WaitStatus::StillAlive) | None => None,
                Some(rexpect::process::WaitStatus::Exited(_, code)) => {
                    Some(Ending::Exited(Some(code)))
                }
                Some(_) => Some(Ending::Exited(None)),
            };
            let killed = if panic_end.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
                Some(Ending::Panicked)
            } else if let Some(limit) = (if init_started { silence } else { boot_silence })
                .filter(|l| last_output.elapsed() > *l)
            {
                Some(Ending::Silent(limit.as_secs()))
            } else if self.start.elapsed() > timeout {
                Some(Ending::TimedOut(timeout.as_secs()))
            } else {
                None
            };
            if ending.is_none() && killed.is_some() {
                let _ = session
                    .process_mut()
                    .kill(rexpect::process::Signal::SIGKILL);
            }
            if let Some(end) = ending.or(killed) {
                drain(session, &mut self.console);
                return end;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Appends what the console pty has (streaming whole lines); whether there was anything.
    fn read_console(&mut self, session: &mut rexpect::session::PtySession) -> bool {
        let mut got = false;
        while let Some(c) = session.try_read() {
            got = true;
            self.console.push(c);
            if self.stream {
                self.line.push(c);
                if c == '\n' {
                    print!("{}", self.line.replace('\r', ""));
                    self.line.clear();
                }
            }
        }
        got
    }
}

/// Init's first line (vm/init): the boot is over.
const INIT_UP: &str = "pcmsig-init: up ";
/// What init prints with the guest program's exit code (`vm/init`).
const INIT_EXIT: &str = "pcmsig-init: exit ";

/// The last line the kernel prints for a panic (`panic()` in kernel/panic.c).
const PANIC_END: &str = "---[ end Kernel panic";

/// Follows `ktap.txt` while QEMU writes it: reports growth, and with `stream` prints new lines.
struct KtapTail<'a> {
    path: &'a Path,
    len: u64,
    printed: u64,
    pending: String,
}

impl<'a> KtapTail<'a> {
    fn new(path: &'a Path) -> Self {
        Self {
            path,
            len: 0,
            printed: 0,
            pending: String::new(),
        }
    }

    /// Whether the file grew since the last call.
    fn poll(&mut self, stream: bool) -> bool {
        let len = std::fs::metadata(self.path).map_or(0, |m| m.len());
        if len <= self.len {
            return false;
        }
        self.len = len;
        if stream {
            use std::io::{Read, Seek};
            if let Ok(mut f) = std::fs::File::open(self.path) {
                let mut buf = Vec::new();
                if f.seek(std::io::SeekFrom::Start(self.printed)).is_ok()
                    && f.read_to_end(&mut buf).is_ok()
                {
                    self.printed += buf.len() as u64;
                    self.pending.push_str(&String::from_utf8_lossy(&buf));
                    while let Some(i) = self.pending.find('\n') {
                        println!("ktap| {}", &self.pending[..i]);
                        self.pending.drain(..=i);
                    }
                }
            }
        }
        true
    }
}

pub fn gdb_hint(kernel: &Kernel) {
    println!("xtask: QEMU waits for a debugger on localhost:1234; attach with:");
    println!(
        "  gdb {} -ex 'target remote :1234' -ex continue",
        kernel.build_dir.join("vmlinux").display()
    );
}

fn drain(session: &mut rexpect::session::PtySession, console: &mut String) {
    let until = Instant::now() + Duration::from_millis(50);
    while Instant::now() < until {
        match session.try_read() {
            Some(c) => console.push(c),
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The guest's uptime when init started, from the `pcmsig-init: up` marker.
pub fn init_uptime(console: &str) -> Option<f64> {
    console.lines().find_map(|l| {
        let (_, rest) = l.split_once(INIT_UP)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The exit code init reported for the guest program.
pub fn guest_exit(console: &str) -> Option<i32> {
    console.lines().find_map(|l| {
        let (_, rest) = l.split_once(INIT_EXIT)?;
        rest.trim().parse().ok()
    })
}

/// The QEMU command of the interactive VM `boot` ([`qemu_command`]): the serial console
/// multiplexed with QEMU's monitor on stdio, so that Ctrl-A X quits and Ctrl-A C reaches the
/// monitor.
pub fn shell_command(
    tools: &Tools,
    kernel: &Kernel,
    initrd: &Path,
    boot: &Boot<'_>,
) -> Result<Command> {
    let mut qemu = qemu_command(tools, kernel, initrd, boot)?;
    qemu.args(["-serial", "mon:stdio"]);
    Ok(qemu)
}

/// Runs an interactive VM on this terminal; restores the terminal settings afterwards.
pub fn interactive(mut qemu: Command) -> Result<()> {
    let saved = Command::new("stty")
        .arg("-g")
        .stdin(std::process::Stdio::inherit())
        .output()
        .ok()
        .filter(|o| o.status.success());
    let status = qemu.status().context("starting qemu-system-x86_64")?;
    if let Some(s) = saved {
        let mode = String::from_utf8_lossy(&s.stdout).trim().to_string();
        let _ = Command::new("stty")
            .arg(mode)
            .stdin(std::process::Stdio::inherit())
            .status();
    }
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::project_root;

    #[test]
    fn the_legacy_ptys_are_not_made() {
        let line = append_line(Mode::Test, &[], 30);
        assert!(
            line.starts_with("pty.legacy_count=0 console=ttyS0 "),
            "{line}"
        );
    }

    #[test]
    fn each_kernel_gets_its_env_words() {
        let base = [
            format!("pcmsig_ktap={}", pcmsig_contract::KTAP_DEVICE),
            format!("pcmsig_dmesg={}", pcmsig_contract::DMESG_DEVICE),
        ];
        assert_eq!(test_env(Flavour::Normal), base.to_vec());
        let mut debug = base.to_vec();
        debug.extend([
            "PCMSIG_TEST_TIMEOUT=240".into(),
            "PCMSIG_LOAD_CYCLES=10".into(),
            "PCMSIG_KMEMLEAK=1".into(),
        ]);
        assert_eq!(test_env(Flavour::Debug), debug);
        let mut fault = base.to_vec();
        fault.extend([
            "PCMSIG_KMEMLEAK=1".into(),
            "PCMSIG_FAULTS=1".into(),
            "slab_nomerge".into(),
        ]);
        assert_eq!(test_env(Flavour::Fault), fault);
    }

    #[test]
    fn a_pool_runs_each_item_once_at_most_workers_at_a_time_in_order() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<u64> = (0..9).collect();
        let out = in_pool(&items, 3, |i, x| {
            let now = running.fetch_add(1, SeqCst) + 1;
            most.fetch_max(now, SeqCst);
            // The long one first: the others must not wait for it.
            std::thread::sleep(std::time::Duration::from_millis(if i == 0 {
                60
            } else {
                5
            }));
            running.fetch_sub(1, SeqCst);
            if *x == 4 {
                anyhow::bail!("four");
            }
            Ok(x * 10)
        });
        let shown: Vec<String> = out
            .iter()
            .map(|r| match r {
                Ok(v) => v.to_string(),
                Err(e) => e.to_string(),
            })
            .collect();
        assert_eq!(
            shown,
            ["0", "10", "20", "30", "four", "50", "60", "70", "80"]
        );
        assert_eq!(most.load(SeqCst), 3);
        // A panicking item is an error in its place; no items, no workers.
        let out = in_pool(
            &[1, 2],
            2,
            |_, x| if *x == 2 { panic!("boom") } else { Ok(*x) },
        );
        assert!(out[0].is_ok());
        assert!(out[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("item 2 of 2"));
        assert!(in_pool(&[] as &[u8], 4, |_, _| Ok(())).is_empty());
    }

    #[test]
    fn init_prints_the_markers_the_host_looks_for() {
        // vm/init is a shell script: it cannot import the constants, so this pins it to them.
        let init = std::fs::read_to_string(project_root().join("vm/init")).unwrap();
        for m in [INIT_UP, INIT_EXIT] {
            assert!(init.contains(m.trim_end()), "vm/init does not print {m:?}");
        }
        // ...and to the modes the host boots it in (shell is its default, `*`)...
        for mode in Mode::ALL {
            let case = format!("\n{})\n", mode.word());
            assert!(
                mode == Mode::Shell || init.contains(&case),
                "vm/init has no case for {mode:?}"
            );
        }
        // ...and to exec's script.
        assert!(init.contains(crate::image::initramfs::EXEC_SCRIPT));
        // ...and to the word that splits the suite (`test --jobs N`)...
        let shard = format!("\"${{{}}}\"", pcmsig_contract::SHARD_ENV);
        assert!(init.contains(&shard), "vm/init does not use {shard}");
        // ...and to the module parameters a test that reloads the module restores.
        let params = format!("harness_params=\"{}\"", pcmsig_contract::TEST_PARAMS);
        assert!(init.contains(&params), "vm/init does not set {params}");
        // ...and to the kernel command-line words a test boot passes it (the ports it writes).
        for word in crate::vm::test_env(Flavour::Normal) {
            let name = word.split('=').next().unwrap_or_default();
            assert!(
                init.contains(&format!("\"${{{name}}}\"")),
                "vm/init does not use {name}"
            );
        }
    }

    #[test]
    fn markers_are_found() {
        let c = "x\r\npcmsig-init: up 0.71 s\r\npcmsig-init: exit 3\r\n";
        assert_eq!(init_uptime(c), Some(0.71));
        assert_eq!(guest_exit(c), Some(3));
    }

    use crate::kernel::testing::{fake_kernel, scratch};

    fn boot_with_fake_qemu(script: Option<&str>) -> Result<Finished> {
        let dir = scratch(if script.is_some() {
            "qemu-crash"
        } else {
            "qemu-missing"
        });
        let tools = Tools::fake(&dir);
        if let Some(body) = script {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&tools.qemu, body).unwrap();
            std::fs::set_permissions(&tools.qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let kernel = fake_kernel(&dir, "7.3.4");
        let b = Boot::new(Mode::Test, &dir, Duration::from_secs(20));
        boot(&tools, &kernel, &dir.join("initrd"), &b)
    }

    /// A guest quiet for 2 s before init (a slow boot) is not cut by the 1 s limit that applies
    /// once init runs; quiet after init, it is.
    #[test]
    fn the_boot_has_its_own_silence_limit() {
        let dir = scratch("boot-silence");
        std::fs::create_dir_all(&dir).unwrap();
        let tools = Tools::fake(&dir);
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            &tools.qemu,
            "#!/bin/sh\nsleep 2\necho 'pcmsig-init: up 1.50 s'\nsleep 30\n",
        )
        .unwrap();
        std::fs::set_permissions(&tools.qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kernel = fake_kernel(&dir, "7.3.4");
        let b = Boot {
            silence: Some(Duration::from_secs(1)),
            boot_silence: Some(Duration::from_secs(10)),
            ..Boot::new(Mode::Test, &dir, Duration::from_secs(60))
        };
        let run = boot(&tools, &kernel, &dir.join("initrd"), &b).unwrap();
        assert_eq!(run.ending, Ending::Silent(1));
        assert!(run.console.contains("pcmsig-init: up"), "{:?}", run.console);
        // Without a boot limit of its own, the same guest is cut during its boot.
        let b = Boot {
            boot_silence: None,
            ..b
        };
        let run = boot(&tools, &kernel, &dir.join("initrd"), &b).unwrap();
        assert_eq!(run.ending, Ending::Silent(1));
        assert!(
            !run.console.contains("pcmsig-init: up"),
            "{:?}",
            run.console
        );
    }

    #[test]
    fn qemu_crashing_fails_with_its_status_and_output_kept() {
        let run =
            boot_with_fake_qemu(Some("#!/bin/sh\necho 'qemu: fatal: boom'\nexit 3\n")).unwrap();
        assert_eq!(run.ending, Ending::Exited(Some(3)));
        assert!(
            run.console.contains("qemu: fatal: boom"),
            "{:?}",
            run.console
        );
        let report = crate::report::ktap::parse(&run.console);
        let v = crate::report::ktap::verdict(&run.console, &report, &run.ending);
        assert!(
            v.contains(&crate::report::ktap::Failure::QemuFailed(Some(3))),
            "{v:?}"
        );
    }

    #[test]
    fn qemu_missing_is_a_clear_error() {
        let e = match boot_with_fake_qemu(None) {
            Err(e) => format!("{e:#}"),
            Ok(r) => format!("booted?! {:?}", r.ending),
        };
        assert!(e.contains("not found (package: qemu-system-x86"), "{e}");
    }
}
