//! Analyses of the module and of the suite: line coverage per test (`coverage.rs`), the seeded
//! bugs' catalogue (`bugs.rs`), the lines an edit changed (`edit.rs`), and mutation analysis's
//! verdict code (`mutants.rs`; the command that runs the mutants is `commands/mutants.rs`).

pub mod bugs;
pub mod coverage;
pub mod edit;
pub mod mutants;
