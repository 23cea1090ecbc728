//! The commands of `cargo xtask`, one file each (`flags.rs` declares their flags): each parses
//! nothing itself and orders the machinery of the folders beside this one (`kernel/`, `kbuild/`,
//! `image/`, `vm/`, `report/`, `analyses/`), which names no command.

pub mod bench;
pub mod build;
pub mod coverage;
pub mod deps;
pub mod exec;
pub mod header;
pub mod mutants;
pub mod run;
pub mod selftest;
pub mod shell;
pub mod test;
