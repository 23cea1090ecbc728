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

fn try_main() -> Result<i32> {
    // Bare `cargo xtask`: the command list.
    if std::env::args_os().len() == 1 {
        print!("{}", flags::Xtask::HELP);
        return Ok(0);
    }
    let flags = flags::Xtask::from_env_or_exit();
    // Every command that builds the module in place or writes its output under
    // `target/pcmsig`, one at a time per checkout. Not `shell` and `run`, which a developer
    // keeps open beside the others (they build before they boot, and hold nothing after), nor
    // `header` and `deps`.
    let _lock = match &flags.subcommand {
        flags::XtaskCmd::Test(_) => Some("test"),
        flags::XtaskCmd::Coverage(_) => Some("coverage"),
        flags::XtaskCmd::Exec(_) => Some("exec"),
        flags::XtaskCmd::Build(_) => Some("build"),
        flags::XtaskCmd::Selftest(_) => Some("selftest"),
        flags::XtaskCmd::Bench(_) => Some("bench"),
        flags::XtaskCmd::Mutants(_) => Some("mutants"),
        _ => None,
    }
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
