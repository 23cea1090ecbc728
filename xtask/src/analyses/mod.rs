//! Analyses of the module and of the suite: line coverage per test (`coverage.rs`), the seeded
//! bugs' catalogue (`bugs.rs`), and the lines an edit changed (`edit.rs`). Mutation analysis is
//! its command's own (`commands/mutants.rs`).

pub mod bugs;
pub mod coverage;
pub mod edit;
