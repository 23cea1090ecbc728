//! `cargo xtask`: pcmsig's harness.
//!
//! `cargo xtask test` checks (and if need be installs) the toolchain, builds a Rust-enabled
//! kernel into a shared cache, builds the module and the static guest programs, packs them into
//! an initramfs, boots QEMU, and turns the guest's KTAP output into the exit status.
//! See ARCHITECTURE.md for the code map.

mod bench;
mod bugs;
mod build;
mod coverage;
mod exec;
mod flags;
mod guest;
mod header;
mod initramfs;
mod junit;
mod kernel;
mod ktap;
mod layout;
mod peers;
mod run;
mod selftest;
mod shell;
mod slow;
mod stats;
mod test;
mod tidy;
mod tools;
mod vm;

use anyhow::Result;
use std::path::{Path, PathBuf};
use xshell::Shell;

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
    std::fs::read_dir(project_root().join("userspace/src/bin/pcmsig-tests"))
        .expect("the guest suite's directory")
        .map(|e| std::fs::read_to_string(e.expect("a directory entry").path()).expect("a source"))
        .collect()
}

fn main() {
    match try_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn try_main() -> Result<i32> {
    // Bare `cargo xtask`: the command list.
    if std::env::args_os().len() == 1 {
        print!("{}", flags::Xtask::HELP);
        return Ok(0);
    }
    let flags = flags::Xtask::from_env_or_exit();
    let sh = Shell::new()?;
    match flags.subcommand {
        flags::XtaskCmd::Test(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Coverage(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Run(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Shell(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Exec(f) => f.run(&sh),
        flags::XtaskCmd::Build(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Selftest(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Bench(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Header(f) => f.run(&sh).map(|()| 0),
        flags::XtaskCmd::Deps(f) => f.run(&sh).map(|()| 0),
    }
}

/// Runs `f` on every item, each in its own thread (one VM each), and returns the results in
/// the items' order.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items.iter().map(|i| scope.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("VM thread panicked")))
            })
            .collect()
    })
}

pub fn out_dir(name: &str) -> PathBuf {
    project_root().join("target/pcmsig").join(name)
}
