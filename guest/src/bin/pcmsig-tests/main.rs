//! The guest test suite: runs inside the VM with the module loaded and prints KTAP v1.
//!
//! One test a behaviour, each in its own forked process. Flags (xflags: unknown or repeated
//! ones are refused): `--filter GLOB` runs a subset;
//! `--list` prints the names; `--ktap PATH` writes the KTAP to PATH (the VM's second serial port)
//! instead of standard output.

mod adversarial_tests;
mod common;
mod coverage;
mod device_tests;
mod fault_tests;
mod isolation_tests;
mod model;
mod modload;
mod module_tests;
mod mutant_class_tests;
mod ports;
mod race_tests;
mod review_tests;
mod runner;
mod selftest_tests;
mod signal_tests;

mod flags {
    use pcmsig_contract::Shard;

    xflags::xflags! {
        /// The guest test suite: prints KTAP v1.
        cmd pcmsig-tests {
            /// Run only the tests whose name matches this glob (`*` and `?`).
            optional --filter glob: String
            /// Write the KTAP to this file (the VM's second serial port) instead of stdout.
            optional --ktap path: String
            /// Print the test names and exit.
            optional --list
            /// Run only part K of N of the suite (`K/N`, K from 0): `cargo xtask test --jobs N`.
            optional --shard part: Shard
        }
    }
}

fn main() {
    use pcmsig_contract::Stage;
    // Run again by a test's `execve`, as a probe of what the new program inherited.
    if let Some(code) = common::exec_probe() {
        std::process::exit(code);
    }
    let mut shared = module_tests::tests();
    shared.extend(signal_tests::tests());
    shared.extend(adversarial_tests::tests());
    shared.extend(isolation_tests::tests());
    shared.extend(model::tests());
    shared.extend(device_tests::tests());
    shared.extend(review_tests::tests());
    shared.extend(mutant_class_tests::tests());
    // Fault injection (skips except on the fault-injection kernel).
    shared.extend(fault_tests::tests());
    // Unloading the module comes last: everything else needs it loaded.
    let mut reloading = module_tests::lifecycle_tests();
    // The races on demand reload the module with delay points.
    reloading.extend(race_tests::tests());
    reloading.extend(review_tests::reload_tests());
    reloading.extend(model::reload_tests());
    reloading.extend(mutant_class_tests::reload_tests());
    let staged = shared
        .into_iter()
        .enumerate()
        .map(|(i, t)| (Stage::Shared(i), t))
        .chain(reloading.into_iter().map(|t| (Stage::Reloading, t)))
        // The leak scan comes after everything that could leak.
        .chain(
            module_tests::leak_tests()
                .into_iter()
                .map(|t| (Stage::Last, t)),
        );
    let flags = flags::PcmsigTests::from_env_or_exit();
    let mut tests: Vec<runner::Test> = staged
        .filter(|(stage, _)| flags.list || flags.shard.is_none_or(|s| s.runs(*stage)))
        .map(|(_, t)| t)
        .collect();
    if std::env::var(pcmsig_contract::env::SELFTEST).as_deref()
        == Ok(pcmsig_contract::SELFTEST_CASCADE)
    {
        tests = cascade_check(tests);
    }
    if flags.list {
        tests.iter().for_each(|t| println!("{}", t.name));
        return;
    }
    let (filter, ktap) = (flags.filter, flags.ktap);
    if let Some(path) = &ktap {
        if let Err(e) = ports::output_to(path) {
            eprintln!("pcmsig-tests: cannot write KTAP to {path}: {e}");
            std::process::exit(2);
        }
    }
    if !std::path::Path::new(pcmsig::uapi::DEVICE_PATH).exists() {
        println!(
            "KTAP version 1\n1..{}\nBail out! {} is missing: the module is not loaded",
            tests.len(),
            pcmsig::uapi::DEVICE_PATH
        );
        runner::drain_output();
        std::process::exit(1);
    }
    match runner::run(&tests, filter.as_deref(), &modload::restore_module) {
        Some(failed) => std::process::exit(i32::from(failed > 0)),
        None => {
            eprintln!("pcmsig-tests: no test matches the filter; the tests are:");
            tests.iter().for_each(|t| eprintln!("  {}", t.name));
            std::process::exit(2);
        }
    }
}

/// `cargo xtask selftest`'s cascade check: a test that hangs and one that fails, both leaving a
/// running stream and an escaped process behind, each followed by tests that a stray event
/// fails (those a timed-out test once failed on a busy machine).
fn cascade_check(all: Vec<runner::Test>) -> Vec<runner::Test> {
    let victims: Vec<runner::Test> = all
        .into_iter()
        .filter(|t| pcmsig_contract::CASCADE_VICTIMS.contains(&t.name))
        .collect();
    let mut out = Vec::new();
    for culprit in selftest_tests::tests() {
        out.push(culprit);
        out.extend(victims.iter().map(|t| runner::Test {
            name: t.name,
            run: t.run,
        }));
    }
    out
}
