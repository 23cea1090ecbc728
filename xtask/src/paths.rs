//! Where things are: the repository, and the harness's output under `target/pcmsig`.

use std::path::{Path, PathBuf};

/// The repository root, derived from this crate's manifest, never from the current directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The guest suite's sources, concatenated: host tests check the test names they cite.
#[cfg(test)]
pub fn guest_test_sources() -> String {
    std::fs::read_dir(project_root().join("guest/src/bin/pcmsig-tests"))
        .expect("the guest suite's directory")
        .map(|e| std::fs::read_to_string(e.expect("a directory entry").path()).expect("a source"))
        .collect()
}

/// A file's modification time since the epoch (zero if the file system has none).
pub fn mtime(meta: &std::fs::Metadata) -> std::time::Duration {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
}

/// A command's output directory, `target/pcmsig/NAME`.
pub fn out_dir(name: &str) -> PathBuf {
    project_root().join("target/pcmsig").join(name)
}

/// Set by a command holding the checkout's lock ([`lock_checkout`]) for the `cargo xtask`
/// commands it runs itself (`bench` runs `test`, `exec`, ...), which run under its lock.
const LOCK_HELD_ENV: &str = "PCMSIG_CHECKOUT_LOCK_HELD";

/// Held while a command builds the module in place (`module/pcmsig.ko`) or writes under
/// `target/pcmsig`: two such commands in one checkout would build the module for different
/// kernels, pack each other's module and read each other's KTAP (seen: a debug-kernel suite
/// judged the results of a filtered run started beside it). Released when dropped.
pub struct CheckoutLock(#[allow(dead_code)] Option<nix::fcntl::Flock<std::fs::File>>);

/// Takes the checkout's lock for command `what`, waiting (and saying for whom) while another
/// command holds it; a no-op under a command that holds it already.
pub fn lock_checkout(what: &str) -> anyhow::Result<CheckoutLock> {
    if std::env::var_os(LOCK_HELD_ENV).is_some() {
        return Ok(CheckoutLock(None));
    }
    let lock = lock_in(&project_root().join("target/pcmsig"), what)?;
    // SAFETY (of the environment): called from `main` before any thread starts.
    std::env::set_var(LOCK_HELD_ENV, std::process::id().to_string());
    Ok(lock)
}

/// [`lock_checkout`]'s lock file `lock` in `dir`.
fn lock_in(dir: &Path, what: &str) -> anyhow::Result<CheckoutLock> {
    use anyhow::Context;
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    use nix::fcntl::{Flock, FlockArg};
    let mut f = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            println!(
                "xtask: waiting for another command in this checkout to finish ({}; {})",
                holder.trim(),
                path.display()
            );
            Flock::lock(f, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .with_context(|| format!("locking {}", path.display()))?
        }
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    };
    f.set_len(0)
        .and_then(|()| write!(f, "pid {} running `cargo xtask {what}`", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(CheckoutLock(Some(f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second command waits until the first releases the lock, and learns who holds it.
    #[test]
    fn a_second_command_waits_for_the_first() {
        let dir = std::env::temp_dir().join(format!("pcmsig-lock-{}", std::process::id()));
        let first = lock_in(&dir, "test").unwrap();
        let text = std::fs::read_to_string(dir.join("lock")).unwrap();
        assert_eq!(
            text,
            format!("pid {} running `cargo xtask test`", std::process::id())
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        let second = std::thread::spawn(move || {
            let lock = lock_in(&d, "exec").unwrap();
            tx.send(()).unwrap();
            lock
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the second took the lock while the first held it"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second never took the released lock");
        drop(second.join().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
