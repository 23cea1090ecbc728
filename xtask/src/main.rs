//! `cargo xtask`: pcmsig's harness.
//!
//! `cargo xtask test` checks (and if need be installs) the toolchain, builds a Rust-enabled
//! kernel into a shared cache, builds the module and the static guest programs, packs them into
//! an initramfs, boots QEMU, and turns the guest's KTAP output into the exit status.
//! See ARCHITECTURE.md for the code map.

mod analyses;
mod commands;
mod flags;
mod image;
mod kbuild;
mod kernel;
mod paths;
mod report;
mod target;
mod tidy;
mod tools;
mod vm;

use anyhow::Result;

fn main() {
    match try_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The checkout lock a command takes, by name ([`paths::lock_checkout`]), or none.
///
/// Every command that builds the module in place or writes its output under
/// `target/pcmsig`, one at a time per checkout. Not `shell` and `run`, which a developer
/// keeps open beside the others (they build before they boot, and hold nothing after), nor
/// `header` and `deps`; nor `selftest --fresh-root`, which works on a copy of the checkout in
/// a root of its own and writes nothing here: CI runs it beside the host checks and the
/// module's clippy build (which, while it took the lock, waited for it to end).
fn checkout_lock_of(cmd: &flags::XtaskCmd) -> Option<&'static str> {
    match cmd {
        flags::XtaskCmd::Selftest(s) if s.fresh_root => None,
        flags::XtaskCmd::Test(_) => Some("test"),
        flags::XtaskCmd::Coverage(_) => Some("coverage"),
        flags::XtaskCmd::Exec(_) => Some("exec"),
        flags::XtaskCmd::Build(_) => Some("build"),
        flags::XtaskCmd::Selftest(_) => Some("selftest"),
        flags::XtaskCmd::Bench(_) => Some("bench"),
        flags::XtaskCmd::Mutants(_) => Some("mutants"),
        _ => None,
    }
}

fn try_main() -> Result<i32> {
    // Bare `cargo xtask`: the command list.
    if std::env::args_os().len() == 1 {
        print!("{}", flags::Xtask::HELP);
        return Ok(0);
    }
    let flags = flags::Xtask::from_env_or_exit();
    let _lock = checkout_lock_of(&flags.subcommand)
        .map(paths::lock_checkout)
        .transpose()?;
    match flags.subcommand {
        flags::XtaskCmd::Test(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Coverage(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Run(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Shell(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Exec(f) => f.run(),
        flags::XtaskCmd::Build(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Selftest(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Bench(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Mutants(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Header(f) => f.run().map(|()| 0),
        flags::XtaskCmd::Deps(f) => f.run().map(|()| 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_of(args: &[&str]) -> Option<&'static str> {
        let f = flags::Xtask::from_vec(args.iter().map(|a| a.into()).collect()).expect("flags");
        checkout_lock_of(&f.subcommand)
    }

    #[test]
    fn the_fresh_root_check_runs_beside_the_commands_that_lock_the_checkout() {
        assert_eq!(lock_of(&["selftest", "--fresh-root"]), None);
        assert_eq!(lock_of(&["selftest"]), Some("selftest"));
        assert_eq!(lock_of(&["selftest", "--bugs"]), Some("selftest"));
        assert_eq!(lock_of(&["test"]), Some("test"));
        assert_eq!(lock_of(&["header"]), None);
    }
}
