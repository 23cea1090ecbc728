//! The guest side of `cargo xtask coverage`, idle unless `PCMSIG_COVERAGE` names the port the
//! host collects coverage from. The coverage build of the module counts every edge of its code
//! it runs, per test, in a table (`/sys/kernel/debug/pcmsig_coverage`, see
//! `xtask/coverage/sancov.c`); this side says which test runs and where the port is (each
//! module instance writes its own table there as it unloads), and sends the last instance's
//! table at the end of the run.
//!
//! The port's text, read by `xtask/src/analyses/coverage.rs`: `test N NAME` lines (test 0 is the module's
//! load and everything between tests), and `begin table` ... `end table` blocks.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The module's coverage table (the coverage build only).
pub const TABLE: &str = "/sys/kernel/debug/pcmsig_coverage";

/// The port, opened once by the suite's main process (in raw mode, held open so that the mode
/// stays for the module's own writes too) and inherited by every test's process.
static PORT: OnceLock<(String, std::fs::File)> = OnceLock::new();
/// The test running now (its number, from 1), for the table of a module loaded during a test.
static CURRENT: AtomicU32 = AtomicU32::new(0);

/// Opens the port and names the tests of this run, if the host collects coverage.
pub fn begin(names: &[&str]) -> Result<(), String> {
    let Ok(path) = std::env::var(pcmsig_contract::env::COVERAGE) else {
        return Ok(());
    };
    let port = crate::ports::open_raw(&path).map_err(|e| format!("opening {path}: {e}"))?;
    use pcmsig_contract::COVERAGE_TEST as TEST;
    let mut text = format!("{TEST}0 (module load, and between tests)\n");
    for (i, name) in names.iter().enumerate() {
        text += &format!("{TEST}{} {name}\n", i + 1);
    }
    (&port)
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing to {path}: {e}"))?;
    let _ = PORT.set((path, port));
    after_load();
    Ok(())
}

/// Test `n` (from 1; 0 between tests) runs from now on.
pub fn enter_test(n: u32) {
    CURRENT.store(n, Ordering::Relaxed);
    if PORT.get().is_some() {
        // The loaded module already knows the port: only the test changes.
        let _ = std::fs::write(TABLE, n.to_string());
    }
}

/// After a load of the module: its table counts for the test running now, and goes to the port
/// when the module unloads.
pub fn after_load() {
    if let Some((path, _)) = PORT.get() {
        let _ = std::fs::write(TABLE, format!("port {path}"));
        let _ = std::fs::write(TABLE, CURRENT.load(Ordering::Relaxed).to_string());
    }
}

/// Sends the table of the module loaded now to the port: at the end of the run.
pub fn send_table() {
    let Some((_, port)) = PORT.get() else {
        return;
    };
    let mut port = port;
    let text = match std::fs::read_to_string(TABLE) {
        Ok(t) => format!(
            "{}\n{t}{}\n",
            pcmsig_contract::COVERAGE_TABLE_BEGIN,
            pcmsig_contract::COVERAGE_TABLE_END
        ),
        Err(e) => format!("no table: {TABLE}: {e}\n"),
    };
    let _ = port.write_all(text.as_bytes());
}
