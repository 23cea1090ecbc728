//! Tests of the runner itself, run only by `cargo xtask selftest` (init's `PCMSIG_SELFTEST=
//! cascade`): a test that hangs and one that fails, each leaving behind a running stream of
//! 1 ms periods, a registered listener, and an escaped process (its own session, so outside the
//! test's process group) that holds the device open and injects events. The tests the host puts
//! after them, ones a stray event fails, must pass.

use std::time::Duration;

use pcmsig::{Device, EventKind, Trigger};

use crate::common::{listen, rt};
use crate::runner::{Context, Test, TestResult};

pub fn tests() -> Vec<Test> {
    crate::tests![
        selftest_hangs_leaving_a_running_stream,
        selftest_fails_leaving_a_running_stream,
    ]
}

/// Starts 1 ms periods without end, and a process in a session of its own that keeps a file of
/// the stream open, registered, restarting the stream and injecting an Xrun every 20 ms.
fn leave_a_running_stream() -> Result<Device, String> {
    let dev = listen(rt(0))?;
    dev.configure(1000, 0).ctx("configure")?;
    dev.trigger(Trigger::Start).ctx("start")?;
    // SAFETY: the test process is single-threaded here; the children run only async-signal-safe
    // calls and the device's ioctls, and end with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::setsid();
            if libc::fork() == 0 {
                // rt(0) is blocked (inherited from `listen`): its signals stay pending.
                let _ = dev.register(rt(0));
                loop {
                    // Restarted whatever state another test left it in: Stopped, Started and
                    // 1 ms periods reach every listener of the user's stream.
                    let _ = dev.trigger(Trigger::Stop);
                    let _ = dev.trigger(Trigger::Start);
                    let _ = dev.inject(EventKind::Xrun);
                    libc::usleep(20_000);
                }
            }
            libc::_exit(0);
        }
    }
    ensure_waited(pid)?;
    Ok(dev)
}

fn ensure_waited(pid: i32) -> TestResult {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if pid < 0 || unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err("fork or waitpid failed".into());
    }
    Ok(())
}

fn selftest_hangs_leaving_a_running_stream() -> TestResult {
    let _dev = leave_a_running_stream()?;
    loop {
        std::thread::sleep(Duration::from_secs(1000));
    }
}

fn selftest_fails_leaving_a_running_stream() -> TestResult {
    let dev = leave_a_running_stream()?;
    std::mem::forget(dev);
    Err("failing on purpose, with a running stream and an escaped process left behind".into())
}
