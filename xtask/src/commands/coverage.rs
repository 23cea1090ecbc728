//! `cargo xtask coverage`: the guest suite on the coverage build of the module (a `test` run),
//! then the report (`analyses/coverage.rs` says how lines are counted, and what it writes).

use anyhow::Result;
use std::path::PathBuf;

use crate::analyses::coverage::{last_build, report};

/// `cargo xtask coverage`: a `test` run of the coverage build (`test::run_with`), then the report.
impl crate::flags::Coverage {
    pub(crate) fn run(self) -> Result<()> {
        if self.report_only {
            let out = crate::paths::out_dir("coverage");
            let (ko, copy) = last_build(&out);
            let ports = [out.join("coverage.txt"), out.join("edu/coverage.txt")];
            let ports: Vec<PathBuf> = ports.into_iter().filter(|p| p.is_file()).collect();
            print!("{}", report(&ko, &copy, &ports, &out, self.fault_kernel)?);
            return Ok(());
        }
        let test = crate::flags::Test {
            kernel_src: self.kernel_src,
            kernel: self.kernel,
            timeout: None,
            filter: self.filter,
            qemu_arg: Vec::new(),
            gdb: false,
            keep: false,
            verbose: self.verbose,
            quiet: false,
            silence: None,
            seed: None,
            model_steps: None,
            no_edu: self.no_edu,
            jobs: None,
            cpus: None,
            debug_kernel: false,
            fault_kernel: self.fault_kernel,
            accel: self.accel,
            slow: None,
            fail_fast: false,
            edit_first: false,
            target: None,
        };
        test.run_with(true)
    }
}
