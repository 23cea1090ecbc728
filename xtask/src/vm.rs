//! Building the guest side (module, static binaries, initramfs) and booting it in QEMU.
//!
//! QEMU's serial console is a pty driven by `rexpect`; QEMU also writes everything the guest
//! prints to `console.log`, so the log is complete even when the guest hangs or panics. A second
//! serial port (the guest's `ttyS1`) goes to `ktap.txt`: the test suite's KTAP, byte for byte,
//! never mixed with kernel messages.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

use crate::initramfs::Initramfs;
use crate::kernel::Kernel;
use crate::ktap::Ending;
use crate::project_root;
use crate::tools::Tools;

/// The guest's target triple: static binaries, built with `+crt-static` on the gnu target.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Guest programs put on the initramfs's PATH.
pub const GUEST_BINS: &[&str] = &["pcmsig", "pcmsig-tests", "pcmsig-bench"];

/// Builds `module/` against the kernel build tree; with `clippy`, as the kernel's `CLIPPY=1`
/// build, failing on any warning.
pub fn build_module(tools: &Tools, kernel: &Kernel, clippy: bool) -> Result<PathBuf> {
    let module_dir = project_root().join("module");
    let ko = module_dir.join("pcmsig.ko");
    // Kbuild needs a second or two to find nothing to do: skip it when the sources and the
    // kernel tree are those of the last successful build.
    let stamp_path = module_dir.join(".pcmsig-stamp");
    let stamp = module_stamp(&module_dir, kernel)?;
    if !clippy
        && ko.is_file()
        && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
    {
        return Ok(ko);
    }
    let _ = std::fs::remove_file(&stamp_path);
    kbuild_module(tools, kernel, &module_dir, clippy, None)?;
    if !clippy {
        std::fs::write(&stamp_path, stamp)
            .with_context(|| format!("writing {}", stamp_path.display()))?;
    }
    Ok(ko)
}

/// Builds the module with one seeded bug (`PCMSIG_BUG=bug`, see `xtask/src/bugs.rs`) from a copy
/// of its sources under `dir`, so that the normal build in `module/` is never touched.
pub fn build_seeded_module(
    tools: &Tools,
    kernel: &Kernel,
    bug: &str,
    dir: &Path,
) -> Result<PathBuf> {
    let module_dir = dir.join("module");
    let uapi_dir = dir.join("uapi/src");
    for d in [&module_dir, &uapi_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let src = project_root().join("module");
    let entries = std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))?;
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rs") || p.file_name().is_some_and(|n| n == "Kbuild")
        {
            let to = module_dir.join(e.file_name());
            std::fs::copy(&p, &to)
                .with_context(|| format!("copying {} to {}", p.display(), to.display()))?;
        }
    }
    let uapi = project_root().join("uapi/src/uapi.rs");
    std::fs::copy(&uapi, uapi_dir.join("uapi.rs"))
        .with_context(|| format!("copying {}", uapi.display()))?;
    kbuild_module(tools, kernel, &module_dir, false, Some(bug))?;
    Ok(module_dir.join("pcmsig.ko"))
}

/// Runs kbuild on the module sources in `module_dir`; any warning is an error.
fn kbuild_module(
    tools: &Tools,
    kernel: &Kernel,
    module_dir: &Path,
    clippy: bool,
    bug: Option<&str>,
) -> Result<()> {
    let ko = module_dir.join("pcmsig.ko");
    let mut make = tools.kbuild(&kernel.build_dir);
    make.arg(format!("M={}", module_dir.display()));
    if clippy {
        let driver = tools.clippy_driver.as_ref().context(
            "the CLIPPY=1 build needs /usr/bin/clippy-driver (package: rust-web-clippy)",
        )?;
        make.arg("CLIPPY=1")
            .arg(format!("CLIPPY_DRIVER={}", driver.display()));
    }
    if let Some(bug) = bug {
        make.arg(format!("PCMSIG_BUG={bug}"));
    }
    make.arg("modules");
    let out = make.output().context("running make for the module")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let what = bug.map_or(String::new(), |b| format!(" with seeded bug {b}"));
    if !out.status.success() {
        bail!("building the module{what} failed:\n{text}");
    }
    // A seeded bug may leave correct code unused: only the real module must be warning-free.
    if bug.is_none() && text.contains("warning:") {
        bail!("the module build{what} printed warnings (they are errors here):\n{text}");
    }
    if !ko.is_file() {
        bail!("make succeeded but {} is missing", ko.display());
    }
    Ok(())
}

/// Checks the module's sources against the kernel's own style: `rustfmt --check` with the
/// tree's `.rustfmt.toml` (what `make rustfmtcheck` applies in-tree) and lines of at most 100
/// columns (the kernel's coding style; rustfmt leaves comments alone).
pub fn check_module_style(kernel: &Kernel) -> Result<()> {
    let module_dir = project_root().join("module");
    let config = kernel.src.join(".rustfmt.toml");
    let out = Command::new("rustfmt")
        .arg("--check")
        .arg("--config-path")
        .arg(&config)
        .arg(module_dir.join("pcmsig.rs"))
        .output()
        .context("running rustfmt (rustup component add rustfmt)")?;
    if !out.status.success() {
        bail!(
            "module/ does not follow {} (fix with `rustfmt --config-path {} module/pcmsig.rs`):\n{}{}",
            config.display(),
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut long = Vec::new();
    let entries = std::fs::read_dir(&module_dir)
        .with_context(|| format!("reading {}", module_dir.display()))?;
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rs") {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            for (i, l) in text.lines().enumerate() {
                if l.chars().count() > 100 {
                    long.push(format!("{}:{}", p.display(), i + 1));
                }
            }
        }
    }
    if !long.is_empty() {
        bail!("module lines over 100 columns: {}", long.join(", "));
    }
    Ok(())
}

/// Hash of everything the module is built from: its sources, the shared UAPI, the kernel tree.
fn module_stamp(module_dir: &Path, kernel: &Kernel) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(module_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "rs") || p.file_name().is_some_and(|n| n == "Kbuild")
        })
        .collect();
    files.push(project_root().join("uapi/src/uapi.rs"));
    files.sort();
    let mut parts: Vec<Vec<u8>> = vec![kernel.build_dir.to_string_lossy().as_bytes().to_vec()];
    let stamp = std::fs::read(kernel.build_dir.join(".pcmsig-stamp")).unwrap_or_default();
    parts.push(stamp);
    for f in &files {
        parts.push(f.to_string_lossy().as_bytes().to_vec());
        parts.push(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(format!("{:016x}", crate::kernel::fnv64(&refs)))
}

/// Refuses a module built for another kernel: its `vermagic` must start with the build tree's
/// release, as the guest's `insmod` would insist (checked here, before a boot is wasted).
pub fn check_vermagic(ko: &Path, kernel: &Kernel) -> Result<()> {
    let release_file = kernel.build_dir.join("include/config/kernel.release");
    let release = std::fs::read_to_string(&release_file)
        .with_context(|| format!("reading {}", release_file.display()))?;
    let release = release.trim();
    let bytes = std::fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    let vermagic = modinfo(&bytes, "vermagic")
        .with_context(|| format!("{} has no vermagic: not a kernel module?", ko.display()))?;
    if vermagic.split_whitespace().next() != Some(release) {
        bail!("{} was built for kernel {vermagic:?}, but the VM runs {release:?}: rebuild it against this tree", ko.display());
    }
    Ok(())
}

/// The value of `key=` in a module's `.modinfo` strings.
pub fn modinfo(ko: &[u8], key: &str) -> Option<String> {
    let needle = format!("{key}=");
    ko.split(|b| *b == 0).find_map(|s| {
        let s = std::str::from_utf8(s).ok()?;
        s.strip_prefix(&needle).map(str::to_string)
    })
}

/// Builds the static guest programs; returns the directory holding them.
pub fn build_guest(sh: &Shell) -> Result<PathBuf> {
    let root = project_root();
    let _dir = sh.push_dir(&root);
    let args = GUEST_BINS.iter().flat_map(|b| ["--bin", b]);
    cmd!(
        sh,
        "cargo build --quiet --release --target {GUEST_TARGET} -p pcmsig {args...}"
    )
    .env("RUSTFLAGS", "-C target-feature=+crt-static")
    .quiet()
    .run()
    .context("building the static guest programs")?;
    Ok(root.join("target").join(GUEST_TARGET).join("release"))
}

/// Extra files for the initramfs: `(host path, guest path)`.
pub type ExtraFile = (PathBuf, String);

/// Writes the initramfs for `mode`; returns its path.
pub fn build_initramfs(
    tools: &Tools,
    ko: &Path,
    guest_dir: &Path,
    extra: &[ExtraFile],
    out_dir: &Path,
) -> Result<PathBuf> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut img = Initramfs::new();
    for d in ["/dev", "/proc", "/sys", "/tmp", "/root", "/etc"] {
        img.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    img.char_dev("/dev/console", 0o600, 5, 1);
    img.file("/init", 0o755, read(&project_root().join("vm/init"))?);
    img.file("/bin/busybox", 0o755, read(&tools.busybox)?);
    // Every applet as a link, made here rather than by `busybox --install` in the guest, which
    // costs about 0.2 s of boot under TCG.
    for applet in busybox_applets(&tools.busybox)? {
        if applet != "busybox" && !GUEST_BINS.contains(&applet.as_str()) {
            img.symlink(&format!("/bin/{applet}"), "busybox");
        }
    }
    img.file("/lib/modules/pcmsig.ko", 0o644, read(ko)?);
    for b in GUEST_BINS {
        img.file(&format!("/bin/{b}"), 0o755, read(&guest_dir.join(b))?);
    }
    for (host, guest) in extra {
        let mode = if is_executable(host) { 0o755 } else { 0o644 };
        img.file(guest, mode, read(host)?);
    }
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join("initramfs.cpio");
    std::fs::write(&path, img.to_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The applets `busybox --list` names (it is static, so the host can run it).
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list failed ({})", busybox.display(), out.status);
    }
    let list = String::from_utf8_lossy(&out.stdout);
    let applets: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .map(str::to_string)
        .collect();
    if !applets.iter().any(|a| a == "sh") {
        bail!("{} --list does not name `sh`", busybox.display());
    }
    Ok(applets)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// How to boot.
pub struct Boot<'a> {
    pub mode: &'a str,
    /// Extra `name=value` words for the kernel command line (passed to init as environment).
    pub env: Vec<String>,
    pub timeout: Duration,
    pub qemu_args: &'a [String],
    /// Copy the console to our stdout as it arrives.
    pub stream: bool,
    /// Start QEMU's gdb stub (`-s -S`) and wait for a debugger; disables the timeout.
    pub gdb: bool,
    /// Kill the VM when the guest prints nothing for this long (hang detection).
    pub silence: Option<Duration>,
    pub out_dir: &'a Path,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
}

impl<'a> Boot<'a> {
    /// A headless boot in `mode` with no extra environment or QEMU arguments, no streaming, no
    /// debugger and no silence limit.
    pub fn new(mode: &'a str, out_dir: &'a Path, timeout: Duration) -> Self {
        Boot {
            mode,
            env: Vec::new(),
            timeout,
            qemu_args: &[],
            stream: false,
            gdb: false,
            silence: None,
            out_dir,
            cpus: DEFAULT_CPUS,
        }
    }
}

/// What a boot produced.
pub struct Run {
    pub console: String,
    pub ending: Ending,
    pub wall: Duration,
    /// Host time from starting QEMU to the first `KTAP version` line, if one came.
    pub first_ktap: Option<Duration>,
    pub console_log: PathBuf,
    /// What the guest wrote to its second serial port (the suite's KTAP).
    pub ktap: String,
    pub ktap_log: PathBuf,
}

/// Virtual CPUs of a VM unless said otherwise: two, so that the module meets real SMP.
pub const DEFAULT_CPUS: u32 = 2;
/// Seconds before a VM is killed unless said otherwise (`--timeout`).
pub const DEFAULT_TIMEOUT_S: u64 = 300;
/// Seconds of guest silence before a VM is killed unless said otherwise (`--silence`).
pub const DEFAULT_SILENCE_S: u64 = 60;

/// The `--silence` limit: the default when not given, none for 0.
pub fn silence_limit(flag: Option<u64>) -> Option<Duration> {
    match flag.unwrap_or(DEFAULT_SILENCE_S) {
        0 => None,
        s => Some(Duration::from_secs(s)),
    }
}

/// The QEMU command line (without the console wiring).
pub fn qemu_command(
    tools: &Tools,
    kernel: &Kernel,
    initrd: &Path,
    append: &str,
    extra: &[String],
    cpus: u32,
) -> Command {
    let mut c = Command::new(&tools.qemu);
    c.args(["-M", "q35", "-m", "512", "-smp"])
        .arg(cpus.max(1).to_string())
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.bzimage)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(append)
        .args(extra);
    c
}

/// The kernel command line for `mode`.
pub fn append_line(mode: &str, env: &[String]) -> String {
    // panic=-1 reboots at once on a panic, and -no-reboot turns that into QEMU exiting: a crash
    // ends the run in seconds. oops=panic and panic_on_warn make every Oops and WARNING fatal.
    // rcu_expedited: module load and unload wait for RCU grace periods, several ticks each under
    // TCG; expedited ones take one IPI round (50 insmod/rmmod cycles: 1.5 s -> 0.9 s).
    let mut s = format!(
        "console=ttyS0 panic=-1 oops=panic panic_on_warn=1 loglevel=5 rcupdate.rcu_expedited=1 \
         pcmsig_mode={mode}"
    );
    for e in env {
        s.push(' ');
        s.push_str(e);
    }
    s
}

/// Boots the VM and collects its console until QEMU exits or the timeout expires.
pub fn boot(tools: &Tools, kernel: &Kernel, initrd: &Path, b: &Boot<'_>) -> Result<Run> {
    if !tools.qemu.is_file() {
        bail!(
            "{} not found (package: qemu-system-x86; run `cargo xtask deps`)",
            tools.qemu.display()
        );
    }
    std::fs::create_dir_all(b.out_dir)?;
    let console_log = b.out_dir.join("console.log");
    let _ = std::fs::remove_file(&console_log);
    let mut qemu = qemu_command(
        tools,
        kernel,
        initrd,
        &append_line(b.mode, &b.env),
        b.qemu_args,
        b.cpus,
    );
    let timeout = if b.gdb {
        gdb_hint(kernel);
        qemu.args(["-s", "-S"]);
        Duration::from_secs(365 * 24 * 3600)
    } else {
        b.timeout
    };
    let ktap_log = b.out_dir.join("ktap.txt");
    let _ = std::fs::remove_file(&ktap_log);
    // The order of `-serial` options is the order of the guest's ttyS ports.
    qemu.arg("-chardev")
        .arg(format!(
            "stdio,id=con,signal=off,logfile={}",
            console_log.display()
        ))
        .args(["-serial", "chardev:con"])
        .arg("-chardev")
        .arg(format!("file,id=ktap,path={}", ktap_log.display()))
        .args(["-serial", "chardev:ktap"]);
    let start = Instant::now();
    let mut session = rexpect::session::spawn_with_options(
        qemu,
        rexpect::reader::Options::new()
            .timeout_ms(Some(timeout.as_millis() as u64))
            .strip_ansi_escape_codes(false),
    )
    .context("starting qemu-system-x86_64 on a pty")?;
    let mut console = String::new();
    let mut line = String::new();
    let mut first_ktap = None;
    let mut ktap = KtapTail::new(&ktap_log);
    let mut last_output = Instant::now();
    let silence = if b.gdb { None } else { b.silence };
    // `panic=-1` normally reboots (and so ends QEMU) at once; a panic in some contexts hangs in
    // the reboot path instead. The end-of-panic line is final: end the VM a moment after it.
    let mut panic_end: Option<Instant> = None;
    let mut scanned = 0usize;
    let ending = loop {
        let mut got = false;
        while let Some(c) = session.try_read() {
            got = true;
            console.push(c);
            if b.stream {
                line.push(c);
                if c == '\n' {
                    print!("{}", line.replace('\r', ""));
                    line.clear();
                }
            }
        }
        if got {
            last_output = Instant::now();
            if panic_end.is_none() {
                let from = scanned.saturating_sub(PANIC_END.len());
                if console[from..].contains(PANIC_END) {
                    panic_end = Some(Instant::now());
                }
                scanned = console.len();
            }
            continue;
        }
        if panic_end.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            let _ = session
                .process_mut()
                .kill(rexpect::process::Signal::SIGKILL);
            drain(&mut session, &mut console);
            break Ending::Panicked;
        }
        // The suite's KTAP counts as output too: the console is quiet while tests pass.
        if ktap.poll(b.stream) {
            last_output = Instant::now();
            first_ktap.get_or_insert_with(|| start.elapsed());
        }
        match session.process().status() {
            Some(rexpect::process::WaitStatus::StillAlive) | None => {}
            Some(rexpect::process::WaitStatus::Exited(_, code)) => {
                drain(&mut session, &mut console);
                break Ending::Exited(Some(code));
            }
            Some(_) => {
                drain(&mut session, &mut console);
                break Ending::Exited(None);
            }
        }
        if let Some(limit) = silence.filter(|l| last_output.elapsed() > *l) {
            let _ = session
                .process_mut()
                .kill(rexpect::process::Signal::SIGKILL);
            drain(&mut session, &mut console);
            break Ending::Silent(limit.as_secs());
        }
        if start.elapsed() > timeout {
            let _ = session
                .process_mut()
                .kill(rexpect::process::Signal::SIGKILL);
            drain(&mut session, &mut console);
            break Ending::TimedOut(timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    ktap.poll(b.stream);
    if b.stream && !line.is_empty() {
        println!("{}", line.replace('\r', ""));
    }
    // QEMU's own log is complete even if the pty lost output at the end; prefer it.
    let logged = std::fs::read(&console_log)
        .map(|v| String::from_utf8_lossy(&v).to_string())
        .unwrap_or_default();
    let console = if logged.len() >= console.len() {
        logged
    } else {
        console
    };
    std::fs::write(&console_log, &console)
        .with_context(|| format!("writing {}", console_log.display()))?;
    let ktap = match std::fs::read(&ktap_log) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).to_string(),
        Err(_) => String::new(),
    };
    Ok(Run {
        console,
        ending,
        wall: start.elapsed(),
        first_ktap,
        console_log,
        ktap,
        ktap_log,
    })
}

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

fn gdb_hint(kernel: &Kernel) {
    println!("xtask: QEMU waits for a debugger on localhost:1234; attach with:");
    println!(
        "  gdb {} -ex 'target remote :1234' -ex continue",
        kernel.build_dir.join("vmlinux").display()
    );
}

/// The QEMU command of an interactive VM: the serial console multiplexed with QEMU's monitor on
/// stdio, so that Ctrl-A X quits and Ctrl-A C reaches the monitor.
pub fn shell_command(
    tools: &Tools,
    kernel: &Kernel,
    initrd: &Path,
    qemu_args: &[String],
    gdb: bool,
    cpus: u32,
) -> Command {
    let mut qemu = qemu_command(
        tools,
        kernel,
        initrd,
        &append_line("shell", &[]),
        qemu_args,
        cpus,
    );
    qemu.args(["-serial", "mon:stdio"]);
    if gdb {
        gdb_hint(kernel);
        qemu.args(["-s", "-S"]);
    }
    qemu
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

/// Parses `HOST_FILE[:GUEST_PATH]`; the default guest path is `/root/<file name>`.
pub fn parse_add(spec: &str) -> Result<ExtraFile> {
    let (host, guest) = match spec.split_once(':') {
        Some((h, g)) => (PathBuf::from(h), g.to_string()),
        None => {
            let name = Path::new(spec)
                .file_name()
                .and_then(|n| n.to_str())
                .context("--add needs a file path")?;
            (PathBuf::from(spec), format!("/root/{name}"))
        }
    };
    if !host.is_file() {
        bail!("--add {spec}: {} is not a file", host.display());
    }
    if !guest.starts_with('/') || guest.ends_with('/') {
        bail!("--add {spec}: the guest path must be an absolute file path");
    }
    Ok((host, guest))
}

/// A shell script running `argv` in /root, with every argument single-quoted.
pub fn exec_script(argv: &[String]) -> String {
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    format!("cd /root\n{}\n", quoted.join(" "))
}

/// The guest's `dmesg`, printed by init between markers at the end of a test run.
pub fn dmesg(console: &str) -> Option<String> {
    let start = console.find(crate::ktap::DMESG_MARKER)?;
    let after = &console[start..];
    let body = &after[after.find('\n')? + 1..];
    let end = body
        .find(pcmsig_uapi::harness::DMESG_END_MARKER)
        .unwrap_or(body.len());
    Some(body[..end].replace('\r', ""))
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
        let i = l.find("pcmsig-init: up ")?;
        l[i + 16..].split_whitespace().next()?.parse().ok()
    })
}

/// The exit code init reported for the guest program.
pub fn guest_exit(console: &str) -> Option<i32> {
    console.lines().find_map(|l| {
        let i = l.find("pcmsig-init: exit ")?;
        l[i + 18..].trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_finds_vermagic_among_nul_separated_strings() {
        let blob = b"\x7fELF\0junk\0license=GPL\0vermagic=7.3.4 SMP mod_unload \0name=pcmsig\0";
        assert_eq!(
            modinfo(blob, "vermagic").as_deref(),
            Some("7.3.4 SMP mod_unload ")
        );
        assert_eq!(modinfo(blob, "name").as_deref(), Some("pcmsig"));
        assert_eq!(modinfo(blob, "author"), None);
    }

    #[test]
    fn add_specs_and_exec_quoting() {
        let dir = std::env::temp_dir().join(format!("pcmsig-add-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("prog");
        std::fs::write(&f, "x").unwrap();
        let spec = f.to_string_lossy().to_string();
        assert_eq!(parse_add(&spec).unwrap().1, "/root/prog");
        assert_eq!(
            parse_add(&format!("{spec}:/bin/prog")).unwrap().1,
            "/bin/prog"
        );
        assert!(parse_add(&format!("{spec}:relative")).is_err());
        assert!(parse_add("/nonexistent/file").is_err());
        assert_eq!(
            exec_script(&["echo".into(), "it's".into(), "a b".into()]),
            "cd /root\n'echo' 'it'\\''s' 'a b'\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_prints_the_markers_the_host_looks_for() {
        // vm/init is a shell script: it cannot import the constants, so this pins it to them.
        let init = std::fs::read_to_string(project_root().join("vm/init")).unwrap();
        for m in [
            crate::ktap::DMESG_MARKER,
            pcmsig_uapi::harness::DMESG_END_MARKER,
            "pcmsig-init: up ",
            "pcmsig-init: exit ",
        ] {
            assert!(init.contains(m.trim_end()), "vm/init does not print {m:?}");
        }
    }

    #[test]
    fn markers_are_found() {
        let c = "x\r\npcmsig-init: up 0.71 s\r\npcmsig-init: exit 3\r\npcmsig-dmesg-begin\r\n[0.1] a\r\npcmsig-dmesg-end\r\n";
        assert_eq!(init_uptime(c), Some(0.71));
        assert_eq!(guest_exit(c), Some(3));
        assert_eq!(dmesg(c).as_deref(), Some("[0.1] a\n"));
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pcmsig-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn fake_kernel(dir: &Path, release: &str) -> Kernel {
        std::fs::create_dir_all(dir.join("include/config")).unwrap();
        std::fs::write(
            dir.join("include/config/kernel.release"),
            format!("{release}\n"),
        )
        .unwrap();
        Kernel {
            version: release.into(),
            src: dir.to_path_buf(),
            build_dir: dir.to_path_buf(),
            bzimage: dir.join("bzImage"),
            built: false,
        }
    }

    fn boot_with_fake_qemu(script: Option<&str>) -> Result<Run> {
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
        let b = Boot::new("test", &dir, Duration::from_secs(20));
        boot(&tools, &kernel, &dir.join("initrd"), &b)
    }

    #[test]
    fn qemu_crashing_fails_with_its_status_and_output_kept() {
        let run =
            boot_with_fake_qemu(Some("#!/bin/sh\necho 'qemu: fatal: boom'\nexit 3\n")).unwrap();
        assert_eq!(run.ending, crate::ktap::Ending::Exited(Some(3)));
        assert!(
            run.console.contains("qemu: fatal: boom"),
            "{:?}",
            run.console
        );
        let report = crate::ktap::parse(&run.console);
        let v = crate::ktap::verdict(&run.console, &report, &run.ending);
        assert!(
            v.contains(&crate::ktap::Failure::QemuFailed(Some(3))),
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

    #[test]
    fn module_for_another_kernel_is_refused_before_boot() {
        let dir = scratch("vermagic");
        let kernel = fake_kernel(&dir, "7.3.4");
        let ko = dir.join("m.ko");
        std::fs::write(
            &ko,
            b"\x7fELF\0vermagic=6.1.0-18-amd64 SMP preempt mod_unload modversions \0",
        )
        .unwrap();
        let e = check_vermagic(&ko, &kernel).unwrap_err().to_string();
        assert!(
            e.contains("built for kernel \"6.1.0-18-amd64") && e.contains("\"7.3.4\""),
            "{e}"
        );
        std::fs::write(&ko, b"\x7fELF\0vermagic=7.3.4 SMP mod_unload \0").unwrap();
        check_vermagic(&ko, &kernel).unwrap();
        std::fs::write(&ko, b"not a module").unwrap();
        assert!(check_vermagic(&ko, &kernel)
            .unwrap_err()
            .to_string()
            .contains("no vermagic"));
    }
}
