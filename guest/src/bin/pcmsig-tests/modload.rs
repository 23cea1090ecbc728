//! The module's loading and unloading for the tests: reloading it with test hooks (and putting
//! it back as init loaded it), the parameters init loaded it with, and waiting for a thread's
//! /proc entry to go.

use std::time::{Duration, Instant};

use crate::ensure;
use crate::runner::{paced, Context, TestResult};

pub fn delete_module() -> std::io::Result<()> {
    let name = c"pcmsig";
    // SAFETY: valid module name; O_NONBLOCK fails at once instead of waiting for users.
    if unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the module back as init loaded it, after a test that failed: every hook let go, the
/// module unloaded (its streams, their timers and queues gone; retried for 30 s while the
/// killed test's files close) or found unloaded, and loaded with init's parameters.
pub fn restore_module() -> Result<(), String> {
    let _ = std::fs::write(RELEASE, "off");
    let deadline = Instant::now() + paced(Duration::from_secs(30));
    loop {
        match delete_module() {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) if Instant::now() > deadline => return Err(format!("rmmod: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    if let Err(e) = load_module() {
        // Loaded, but its KUnit suites failed as it loaded: the state init left too (the first
        // test reports those suites), so the suite goes on; anything else is no restore.
        if !std::path::Path::new("/sys/module/pcmsig").exists() {
            return Err(format!("insmod: {e}"));
        }
    }
    ensure!(
        std::path::Path::new(pcmsig::uapi::DEVICE_PATH).exists(),
        "{} did not come back after the reload",
        pcmsig::uapi::DEVICE_PATH
    );
    Ok(())
}

/// The parameters init loaded the module with (`PCMSIG_PARAMS`: the test hooks on).
fn init_params() -> String {
    std::env::var("PCMSIG_PARAMS").unwrap_or_else(|_| pcmsig_contract::TEST_PARAMS.into())
}

/// Loads the module with the parameters init used.
pub fn load_module() -> std::io::Result<()> {
    load_module_with(&init_params())
}

/// Where a write ends the test hooks' waits: the delivery hold, and the delay points (a point's
/// name releases that one, `off` turns them all off).
pub const RELEASE: &str = "/sys/kernel/debug/pcmsig/release_delivery";

/// Runs `f` with the module reloaded with init's parameters and `extra` (test hooks). Then
/// every hook is let go (`off` ends the delivery hold and turns the delay points off: the
/// cleanup passes some, the unload removes the edu device), and the module is loaded as init
/// did. A thread of `f` that failed may hold a file a moment longer: the unload is retried for
/// 30 s.
pub fn with_module_params(extra: &str, f: impl FnOnce() -> TestResult) -> TestResult {
    delete_module().ctx("rmmod")?;
    load_module_with(&format!("{} {extra}", init_params())).ctx(&format!("insmod with {extra}"))?;
    let result = f();
    let _ = std::fs::write(RELEASE, "off");
    let deadline = Instant::now() + paced(Duration::from_secs(30));
    while let Err(e) = delete_module() {
        if Instant::now() > deadline {
            return result.and(Err(format!("rmmod after the test: {e}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    load_module().ctx("insmod")?;
    result
}

/// Loads the module with `params`. The module's KUnit suites run as it loads: a case that fails
/// there fails the load (found when one failed, unseen, at every load with `test_first_seq`,
/// and kmemleak reported the vector its aborted thread left behind).
pub fn load_module_with(params: &str) -> std::io::Result<()> {
    let mut log = crate::runner::KernelLog::open();
    let path = std::env::var("PCMSIG_KO").unwrap_or_else(|_| "/lib/modules/pcmsig.ko".into());
    let f = std::fs::File::open(&path)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let params = std::ffi::CString::new(params)?;
    // SAFETY: valid fd and NUL-terminated parameter string.
    if unsafe { libc::syscall(libc::SYS_finit_module, fd, params.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    crate::coverage::after_load();
    // KUnit's results are in the log by now (the suites run before `finit_module` returns).
    let failed: Vec<String> = log
        .as_mut()
        .map(|l| l.take())
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.trim_start().starts_with("not ok "))
        .collect();
    if !failed.is_empty() {
        return Err(std::io::Error::other(format!(
            "the module's KUnit suites failed as it loaded with {params:?}: {}",
            failed.join("; ")
        )));
    }
    Ok(())
}

/// Runs `f` with the module loaded with its delivery held back for 60 s at the reference pace (the
/// `test_delivery_delay_ms` hook), so long that no machine's slowness can make a delivery come
/// first; `f` gets the release (a write to debugfs), which the tests call as soon as they have
/// looked. Afterwards the module is loaded as init did.
pub(crate) fn with_delivery_held(
    f: impl FnOnce(&dyn Fn() -> TestResult) -> TestResult,
) -> TestResult {
    let hold_ms = paced(Duration::from_secs(60)).as_millis();
    let release = || std::fs::write(RELEASE, "1").ctx("release the delivery");
    with_module_params(&format!("test_delivery_delay_ms={hold_ms}"), || f(&release))
}

/// Waits until `path` no longer exists (a released thread's /proc entry).
pub fn wait_gone(path: &str) -> TestResult {
    let deadline = Instant::now() + paced(Duration::from_secs(10));
    while std::path::Path::new(path).exists() {
        ensure!(Instant::now() < deadline, "{path} still exists");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
