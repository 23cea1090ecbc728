//! The VM's serial ports that carry the suite's output to the host (its KTAP on one, the
//! coverage counters on another): opened for writing in raw mode, so that the file on the host
//! holds exactly the bytes written.

use std::io::Write;

/// Sends the suite's standard output (its KTAP, and every test's diagnostics) to `path`.
pub fn output_to(path: &str) -> std::io::Result<()> {
    let f = open_raw(path)?;
    std::io::stdout().flush()?;
    nix::unistd::dup2_stdout(&f).map_err(std::io::Error::from)?;
    Ok(())
}

/// Opens a serial port for writing, in raw mode when it is a terminal (no `\n` -> `\r\n`
/// translation, no echo).
pub fn open_raw(path: &str) -> std::io::Result<std::fs::File> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    // Not a terminal (a plain file, in a host test): written as it is.
    if let Ok(mut t) = tcgetattr(&f) {
        cfmakeraw(&mut t);
        tcsetattr(&f, SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
    }
    Ok(f)
}
