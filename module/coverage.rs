// SPDX-License-Identifier: GPL-2.0
//! The hook of the coverage build (`cargo xtask coverage`): that build links
//! `xtask/coverage/sancov.c` into a copy of the module and sets `--cfg pcmsig_coverage`, and
//! this hook then shows its counters in debugfs for the module's lifetime. In the real module
//! it is an empty value that does nothing.

/// Registers the coverage file when created, removes it when dropped (the module's last field).
pub(crate) struct Coverage;

#[cfg(pcmsig_coverage)]
extern "C" {
    fn pcmsig_cov_register();
    fn pcmsig_cov_unregister();
}

impl Coverage {
    pub(crate) fn register() -> Self {
        #[cfg(pcmsig_coverage)]
        // SAFETY: Called once, from module init, before anything can read the file.
        unsafe {
            pcmsig_cov_register()
        };
        Coverage
    }
}

impl Drop for Coverage {
    fn drop(&mut self) {
        #[cfg(pcmsig_coverage)]
        // SAFETY: Called once, at module exit, after the other fields are gone.
        unsafe {
            pcmsig_cov_unregister()
        };
    }
}
