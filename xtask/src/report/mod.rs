//! The verdict and its reports: the guest's KTAP parsed and judged with the console's kernel
//! problems (`ktap.rs`), JUnit (`junit.rs`), the kunit.py cross-check (`kunit.rs`), and the
//! run's summary and timings (`summary.rs`).

pub mod junit;
pub mod ktap;
pub mod kunit;
pub mod summary;
