//! Command-line flags of `cargo xtask`.

use std::path::PathBuf;

use crate::vm;
use crate::vm::Accel;

xflags::xflags! {
    /// pcmsig's harness: builds a Rust-enabled kernel, the module and the guest programs,
    /// boots them in QEMU and turns the guest's KTAP output into a verdict.
    cmd xtask {
        /// Build everything, boot the VM, run the guest KTAP suite; exit 0 only if all pass.
        cmd test {
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// Seconds before the VM is killed (default 300).
            optional --timeout seconds: u64
            /// Run only the KTAP tests whose name matches this glob (`*` and `?`; several:
            /// comma-separated).
            optional --filter glob: String
            /// Extra QEMU argument (repeatable).
            repeated --qemu-arg arg: String
            /// Start QEMU's gdb stub and wait for a debugger (no timeout).
            optional --gdb
            /// Keep the VM's artefacts (kernel, module, initramfs) next to the logs.
            optional --keep
            /// Stream the guest console while it runs.
            optional -v, --verbose
            /// Print only the verdict.
            optional -q, --quiet
            /// Kill the VM when the guest prints nothing for this many seconds (default 60; 0: never).
            optional --silence seconds: u64
            /// Seed of the random ioctl storm and the model's sequences (printed by every run;
            /// default: time-based).
            optional --seed n: u64
            /// Steps of random operation sequences the reference-model test runs (default 12000,
            /// about 1 s); its per-test time limit grows with them.
            optional --model-steps n: u64
            /// Skip the second VM configuration (QEMU's edu PCI device as the period source).
            optional --no-edu
            /// Split the suite across N VMs per configuration (the tests that reload the module
            /// stay together in the first; each VM ends with the leak scan); default 1.
            optional --jobs n: u32
            /// Virtual CPUs per VM (default: host cores / VMs, 1 or 2; 2 with --debug-kernel).
            optional --cpus n: u32
            /// The accelerator: auto (KVM if a trial boot under it works, else TCG; the answer
            /// is cached per host boot), kvm (fail if it does not work) or tcg.
            optional --accel mode: Accel
            /// Use the debug kernel (vm/debug.config: KASAN, lockdep, kmemleak, ...), built once
            /// into its own cache directory.
            optional --debug-kernel
            /// Use the fault-injection kernel (vm/fault.config: fail-nth, failslab, kmemleak),
            /// where the fault sweep runs; built once into its own cache directory.
            optional --fault-kernel
            /// Run the VMs as on a machine this many times slower (a CPU cgroup quota; root).
            optional --slow factor: f64
            /// Stop each VM's suite at its first failure (the rest reported as not run).
            optional --fail-fast
            /// Test another module: a directory with a harness.toml, or the name of one under
            /// examples/ (ringbuf: a C misc device). Default: pcmsig.
            optional --target name: String
            /// First the tests that run the module's lines changed since the last `cargo xtask
            /// coverage` (its per-line map), with their own verdict; then the rest of the suite.
            optional --edit-first
        }
        /// Run the suite (both VMs) with an instrumented copy of the module and report its line
        /// coverage from every context (lcov.info, summary.txt, tests.txt in
        /// target/pcmsig/coverage); fails if the suite fails.
        cmd coverage {
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// Run only the KTAP tests whose name matches this glob (`*` and `?`; several:
            /// comma-separated).
            optional --filter glob: String
            /// Skip the second VM configuration (QEMU's edu PCI device as the period source).
            optional --no-edu
            /// Stream the guest console while it runs.
            optional -v, --verbose
            /// The accelerator: auto (KVM if a trial boot under it works, else TCG; the answer
            /// is cached per host boot), kvm (fail if it does not work) or tcg.
            optional --accel mode: Accel
            /// Only write the report again, from the last run's files (no build, no VM).
            optional --report-only
            /// Run on the fault-injection kernel (vm/fault.config), where the fault tests run
            /// and reach the error paths.
            optional --fault-kernel
        }
        /// Boot the VM and show stream events arriving at a listener, then the statistics.
        cmd run {
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// Use the debug kernel (vm/debug.config: KASAN, lockdep, kmemleak, ...), built once
            /// into its own cache directory.
            optional --debug-kernel
            /// Use the fault-injection kernel (vm/fault.config: fail-nth, failslab, kmemleak),
            /// built once into its own cache directory.
            optional --fault-kernel
            /// Virtual CPUs of the VM (default: the host's cores, at most 2).
            optional --cpus n: u32
            /// The accelerator: auto (KVM if a trial boot under it works, else TCG; the answer
            /// is cached per host boot), kvm (fail if it does not work) or tcg.
            optional --accel mode: Accel
            /// Seconds before the VM is killed (default 300).
            optional --timeout seconds: u64
            /// Kill the VM when the guest prints nothing for this many seconds (default 60; 0: never).
            optional --silence seconds: u64
            /// Stream the guest console while it runs (the default unless -q).
            optional -v, --verbose
            /// Print only the result, not the guest console.
            optional -q, --quiet
            /// Extra QEMU argument (repeatable).
            repeated --qemu-arg arg: String
            /// Start QEMU's gdb stub and wait for a debugger (no timeout).
            optional --gdb
            /// Keep the VM's artefacts (kernel, module, initramfs) next to the logs.
            optional --keep
        }
        /// Boot the VM with an interactive shell on the serial console (leave with Ctrl-A X).
        cmd shell {
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// Use the debug kernel (vm/debug.config: KASAN, lockdep, kmemleak, ...), built once
            /// into its own cache directory.
            optional --debug-kernel
            /// Use the fault-injection kernel (vm/fault.config: fail-nth, failslab, kmemleak),
            /// built once into its own cache directory.
            optional --fault-kernel
            /// Virtual CPUs of the VM (default: the host's cores, at most 2).
            optional --cpus n: u32
            /// The accelerator: auto (KVM if a trial boot under it works, else TCG; the answer
            /// is cached per host boot), kvm (fail if it does not work) or tcg.
            optional --accel mode: Accel
            /// Extra QEMU argument (repeatable).
            repeated --qemu-arg arg: String
            /// Start QEMU's gdb stub and wait for a debugger (no timeout).
            optional --gdb
            /// Add a host file to the initramfs (HOST_FILE or HOST_FILE:GUEST_PATH).
            repeated --add file: String
            /// Another module instead of pcmsig: a directory with a harness.toml, or the name
            /// of one under examples/ (its module loaded, its programs on the PATH).
            optional --target name: String
        }
        /// Run one command in a fresh VM; exit with its exit code.
        cmd exec {
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// Use the debug kernel (vm/debug.config: KASAN, lockdep, kmemleak, ...), built once
            /// into its own cache directory.
            optional --debug-kernel
            /// Use the fault-injection kernel (vm/fault.config: fail-nth, failslab, kmemleak),
            /// built once into its own cache directory.
            optional --fault-kernel
            /// Virtual CPUs of the VM (default: the host's cores, at most 2).
            optional --cpus n: u32
            /// The accelerator: auto (KVM if a trial boot under it works, else TCG; the answer
            /// is cached per host boot), kvm (fail if it does not work) or tcg.
            optional --accel mode: Accel
            /// Seconds before the VM is killed (default 300).
            optional --timeout seconds: u64
            /// Kill the VM when the guest prints nothing for this many seconds (default 60; 0: never).
            optional --silence seconds: u64
            /// Stream the guest console while it runs (the default unless -q).
            optional -v, --verbose
            /// Print only the result, not the guest console.
            optional -q, --quiet
            /// Extra QEMU argument (repeatable).
            repeated --qemu-arg arg: String
            /// Start QEMU's gdb stub and wait for a debugger (no timeout).
            optional --gdb
            /// Keep the VM's artefacts (kernel, module, initramfs) next to the logs.
            optional --keep
            /// Add a host file to the initramfs (HOST_FILE or HOST_FILE:GUEST_PATH).
            repeated --add file: String
            /// Another module instead of pcmsig: a directory with a harness.toml, or the name
            /// of one under examples/ (its module loaded, its programs on the PATH).
            optional --target name: String
            /// The command and its arguments (after `--`).
            repeated cmd: String
        }
        /// Build the kernel, module, guest programs and initramfs, and print where they are.
        cmd build {
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// Also run the kernel's `CLIPPY=1` lint build of the module.
            optional --clippy
        }
        /// Check the harness itself on real boots: a panic and a hang must fail fast; the shell
        /// and exec commands must work. With --bugs, the seeded-bug catalogue instead.
        cmd selftest {
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// Build the module once per seeded bug, run the suite on each, and require a FAIL
            /// that blames the expected test with the expected detector (normal-kernel bugs; with
            /// --debug-kernel, the bugs only KASAN, lockdep, kmemleak... can see).
            optional --bugs
            /// Only this seeded bug (repeatable; implies --bugs).
            repeated --bug name: String
            /// Run each seeded bug this many times (built once): a verdict that flips with timing
            /// shows as a MISSED run (default 1).
            optional --repeat n: usize
            /// The debug kernel's part of the catalogue.
            optional --debug-kernel
            /// Run the catalogue's VMs as on a machine this many times slower (a CPU cgroup
            /// quota; root).
            optional --slow factor: f64
            /// Instead: make a minimal Debian root (mmdebstrap), run the project's install step
            /// in it and check that every tool the harness needs is there afterwards.
            optional --fresh-root
            /// The Debian suite of --fresh-root (default bookworm).
            optional --suite name: String
            /// With --bugs: the seeded bugs of another module's harness.toml (a directory, or
            /// the name of one under examples/).
            optional --target name: String
        }
        /// Measure the harness and every delivery path (latency, throughput, burst size).
        cmd bench {
            /// Runs per figure (default 5).
            optional --runs n: usize
            /// Timer periods per latency run (default 500).
            optional --events n: u32
            /// Events per throughput run (default 100000).
            optional --flood n: u32
            /// Also time a cold kernel build into an empty cache (about 8 minutes).
            optional --cold
            /// Also time virtme-ng and vmtest booting a kernel and running `true`, beside
            /// `cargo xtask exec -- true` (installs them with ci/install-peers.sh and builds a
            /// kernel with vm/peers.config, about 8 minutes the first time).
            optional --peers
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// Use the debug kernel (vm/debug.config: KASAN, lockdep, kmemleak, ...), built once
            /// into its own cache directory.
            optional --debug-kernel
            /// Use the fault-injection kernel (vm/fault.config: fail-nth, failslab, kmemleak),
            /// built once into its own cache directory.
            optional --fault-kernel
            /// Virtual CPUs of the delivery VM and of the timed test runs (default: as `test`).
            optional --cpus n: u32
            /// The accelerator: auto (KVM if a trial boot under it works, else TCG; the answer
            /// is cached per host boot), kvm (fail if it does not work) or tcg.
            optional --accel mode: Accel
            /// Seconds before a VM is killed (default 300; the delivery VM 1200).
            optional --timeout seconds: u64
            /// Kill a VM when the guest prints nothing for this many seconds (default 60, the
            /// delivery VM 120; 0: never).
            optional --silence seconds: u64
            /// Stream the delivery VM's console while it runs.
            optional -v, --verbose
            /// Print only where the report was written, not the tables.
            optional -q, --quiet
        }
        /// Mutation analysis (cargo-mutants): each module mutant built and booted with the
        /// tests that reach its lines, then the whole suite; the host crates' mutants against
        /// `cargo test`. Fails on a missed mutant that xtask/mutants/equivalent.txt does not
        /// explain. Reports in target/pcmsig/mutants.
        cmd mutants {
            /// Only list the mutants (no build, no VM).
            optional --list
            /// Only the module's mutants (booted in VMs).
            optional --module
            /// Only the host crates' mutants (contract, uapi, xtask's verdict code).
            optional --host
            /// Only the library's and CLI's mutants (their host tests, then the guest suite).
            optional --lib
            /// Only mutants on lines changed since this git revision (the edit loop).
            optional --in-diff rev: String
            /// Only part K of N (0-based, `K/N`): every N-th mutant from the K-th.
            optional --shard k_of_n: String
            /// Only mutants in files matching this glob (repeatable), e.g. `module/stream.rs`.
            repeated --file glob: String
            /// Only mutants whose `file:line: what` contains this text (repeatable), e.g.
            /// `pcmsig.rs:284: replace - with +`.
            repeated --mutant text: String
            /// Mutants run at once (default: the host's cores).
            optional --jobs n: usize
            /// Seconds before a mutant's VM is killed (default 150; the debug kernel's own).
            optional --timeout seconds: u64
            /// Boot the mutants on the debug kernel (KASAN, lockdep, kmemleak: what the
            /// suite's assertions cannot see, such as a leaked reference).
            optional --debug-kernel
            /// Do not boot the normal kernel's survivors on the debug kernel and then the
            /// fault-injection kernel before calling them missed (about 5 and 1 minutes each).
            optional --no-debug-retry
            /// Kernel source: a directory or a tarball (default: $KERNEL_SRC, else Debian's linux-source-7.3).
            optional --kernel-src path: PathBuf
            /// The kernel series to use, from Debian's linux-source-SERIES (e.g. 7.2): instead of
            /// --kernel-src; default 7.3.
            optional --kernel series: String
            /// The accelerator: auto (KVM if a trial boot under it works, else TCG; the answer
            /// is cached per host boot), kvm (fail if it does not work) or tcg.
            optional --accel mode: Accel
        }
        /// Regenerate the C header `uapi/pcmsig.h` from the Rust UAPI (or check it with --check).
        cmd header {
            /// Only check that the committed header is current (exit 1 if not); write nothing.
            optional --check
        }
        /// Install the Debian packages and tools the harness needs (runs ci/install-deps.sh).
        cmd deps {
            /// Install nothing: check that every tool is there at the version the harness
            /// wants, print them, and fail naming the package of any that is not.
            optional --check
        }
    }
}

impl Xtask {
    /// The generated help text (the command list), for a bare `cargo xtask`.
    pub(crate) const HELP: &'static str = Self::HELP_;
}

/// [`vm::Options`] from a command's flags: the one place each booting command's VM flags
/// become the value its VMs boot with.
macro_rules! vm_options {
    ($cmd:ty { $($field:ident: $value:expr),* $(,)? }) => {
        impl $cmd {
            pub(crate) fn vm_options(&self) -> anyhow::Result<vm::Options> {
                let mut o = vm::Options {
                    kernel_src: crate::kernel::source_of(
                        self.kernel_src.clone(),
                        self.kernel.as_deref(),
                    )?,
                    flavour: vm::Flavour::of(self.debug_kernel, self.fault_kernel)?,
                    cpus: self.cpus,
                    accel: self.accel.unwrap_or_default(),
                    ..vm::Options::default()
                };
                $(o.$field = $value(self);)*
                if o.cpus == Some(0) {
                    anyhow::bail!("--cpus must be at least 1");
                }
                if o.quiet {
                    crate::vm::accel::quiet();
                }
                Ok(o)
            }
        }
    };
}

/// Every VM flag.
macro_rules! all_vm_options {
    ($cmd:ty) => {
        vm_options!($cmd {
            timeout: |f: &$cmd| f.timeout,
            silence: |f: &$cmd| f.silence,
            qemu_args: |f: &$cmd| f.qemu_arg.clone(),
            gdb: |f: &$cmd| f.gdb,
            verbose: |f: &$cmd| f.verbose,
            quiet: |f: &$cmd| f.quiet,
            keep: |f: &$cmd| f.keep,
        });
    };
}

all_vm_options!(Test);
all_vm_options!(Run);
all_vm_options!(Exec);
vm_options!(Shell {
    qemu_args: |f: &Shell| f.qemu_arg.clone(),
    gdb: |f: &Shell| f.gdb,
});
// The bench's own `-q` (the report's tables) is not a VM's: its children print into a pipe.
vm_options!(Bench {
    timeout: |f: &Bench| f.timeout,
    silence: |f: &Bench| f.silence,
    verbose: |f: &Bench| f.verbose,
});
