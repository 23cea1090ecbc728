//! The harness pointed at another kernel module than pcmsig (`--target NAME|DIR`): the module
//! is described by a `harness.toml` in its directory ([`Target`]; `examples/ringbuf/` is the
//! model, a C misc device). The kernel and its cache, Kbuild, the initramfs, QEMU and its
//! limits, the KTAP verdict and its blame, JUnit, the kunit.py cross-check and the seeded-bug
//! runner are the same as pcmsig's; nothing here names a pcmsig file.

use anyhow::{bail, Context, Result};
use pcmsig_contract::env::{self, word};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::image::Built;
use crate::paths::project_root;
use crate::report::summary::Phase;
use crate::{kernel, report::ktap, tools, vm};

/// The file that describes a target, in its module's directory.
pub const FILE: &str = "harness.toml";
/// Where `--target NAME` looks for `NAME/harness.toml`.
const EXAMPLES: &str = "examples";

/// A module under test and its guest suite, as `harness.toml` says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The target's name: JUnit's suite names and the output directory.
    pub name: String,
    /// The module's name: Kbuild in the target's directory builds `MODULE.ko`.
    pub module: String,
    /// The module's load parameters in the VM (`insmod MODULE.ko PARAMS`).
    #[serde(default)]
    pub params: String,
    /// C sources in the directory, each compiled into a static guest program named after it
    /// (`ringbuf-tests.c` is `/bin/ringbuf-tests`), with the directory on the include path.
    pub programs: Vec<String>,
    /// The program that is the suite: run as `SUITE --ktap PORT [--filter GLOBS]`, it prints
    /// KTAP to PORT and, before each test, `$HARNESS_TEST_MARKER NAME` to `/dev/kmsg`;
    /// `SUITE --list` (run on the host) names its tests.
    pub suite: String,
    /// The VMs the suite runs in (default: one, `plain`).
    #[serde(default = "plain_vm")]
    pub vm: Vec<VmSpec>,
    /// The seeded bugs (`cargo xtask selftest --bugs --target NAME`).
    #[serde(default)]
    pub bug: Vec<BugSpec>,
    /// The kernel series the module supports, each Debian's `linux-source-SERIES`:
    /// `cargo xtask test --kernel all` runs the suite on each (default: the default kernel).
    #[serde(default)]
    pub kernels: Vec<String>,
    /// The directory of the `harness.toml` (not in the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// One VM configuration of a target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: String,
    /// Extra QEMU arguments (a device: `["-device", "edu"]`).
    #[serde(default)]
    pub qemu: Vec<String>,
}

fn plain_vm() -> Vec<VmSpec> {
    vec![VmSpec {
        name: "plain".into(),
        qemu: Vec::new(),
    }]
}

/// A seeded bug of a target: a patch of the files in its directory, and what must catch it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BugSpec {
    pub name: String,
    /// What the bug is.
    pub what: String,
    /// A unified diff (`--- a/FILE`, files of the target's directory), relative to it.
    pub patch: String,
    /// The test the verdict must blame.
    pub test: String,
    /// The detector classes accepted (`test`: the test's own assertion; else a kernel
    /// problem's class, such as `warning` or `KASAN`).
    pub detectors: Vec<String>,
}

impl Target {
    /// The target `spec` names: a directory holding a `harness.toml`, or the name of one under
    /// `examples/`.
    pub fn find(spec: &str) -> Result<Target> {
        let as_dir = PathBuf::from(spec);
        let dir = if as_dir.join(FILE).is_file() {
            as_dir
        } else {
            let known = project_root().join(EXAMPLES).join(spec);
            if !known.join(FILE).is_file() {
                bail!(
                    "--target {spec}: no {FILE} in {spec}/ nor in {}/ (targets there: {})",
                    known.display(),
                    Self::known().join(", ")
                );
            }
            known
        };
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut t: Target =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        t.dir = dir;
        t.check()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(t)
    }

    /// The targets under `examples/`.
    fn known() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(project_root().join(EXAMPLES))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().join(FILE).is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Refuses what cannot work, naming the field.
    fn check(&self) -> Result<()> {
        let word = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !word(&self.name) {
            bail!("name {:?}: letters, digits, '-' and '_' only", self.name);
        }
        if !word(&self.module) {
            bail!(
                "module {:?}: letters, digits, '-' and '_' only",
                self.module
            );
        }
        if self.params.contains(['\'', '\n']) {
            bail!("params {:?}: no quotes or newlines", self.params);
        }
        if !self.dir.join("Kbuild").is_file() && !self.dir.join("Makefile").is_file() {
            bail!("{} has no Kbuild or Makefile", self.dir.display());
        }
        for p in &self.programs {
            if !p.ends_with(".c") || p.contains('/') || !self.dir.join(p).is_file() {
                bail!("programs: {p:?} is not a C file in {}", self.dir.display());
            }
        }
        if !self.program_names().any(|n| n == self.suite) {
            bail!(
                "suite {:?} is none of the programs ({})",
                self.suite,
                self.programs.join(", ")
            );
        }
        let mut vms: Vec<&str> = self.vm.iter().map(|v| v.name.as_str()).collect();
        vms.sort();
        vms.dedup();
        if vms.len() != self.vm.len() || self.vm.iter().any(|v| !word(&v.name)) {
            bail!("vm: each needs a name of its own (letters, digits, '-', '_')");
        }
        for b in &self.bug {
            if !word(&b.name) || !self.dir.join(&b.patch).is_file() || b.detectors.is_empty() {
                bail!(
                    "bug {:?}: needs a name, a patch file in the directory ({:?}) and detectors",
                    b.name,
                    b.patch
                );
            }
        }
        Ok(())
    }

    fn program_names(&self) -> impl Iterator<Item = &str> {
        self.programs.iter().map(|p| p.trim_end_matches(".c"))
    }

    /// Where a command's output for this target goes: `target/pcmsig/targets/NAME/COMMAND`.
    pub fn out_dir(&self, command: &str) -> PathBuf {
        crate::paths::out_dir("targets")
            .join(&self.name)
            .join(command)
    }

    /// The tests the suite names (`SUITE --list`, run on the host: the programs are static).
    pub fn tests(&self, guest_dir: &Path) -> Result<Vec<String>> {
        crate::image::programs::list_of(&guest_dir.join(&self.suite))
    }

    /// What a boot needs: the kernel of `opts`, the module (built in its own directory, as any
    /// out-of-tree module; or `module_dir`, a patched copy), the guest programs, and the
    /// initramfs in `out`.
    pub fn prepare(
        &self,
        opts: &vm::Options,
        module_dir: Option<&Path>,
        extra: &[crate::image::initramfs::ExtraFile],
        out: &Path,
    ) -> Result<(Built, PathBuf)> {
        let mut times = Vec::new();
        let t = Instant::now();
        let tools = tools::ensure()?;
        if !opts.quiet {
            tools.print();
        }
        let kernel = kernel::ensure(
            &tools,
            opts.kernel_src.as_deref(),
            opts.quiet,
            opts.flavour.config(),
        )?;
        times.push((
            Phase::Kernel {
                built: kernel.built,
            },
            t.elapsed(),
        ));
        let t = Instant::now();
        let ko = self.build_module(&tools, &kernel, module_dir)?;
        times.push((Phase::Module, t.elapsed()));
        let t = Instant::now();
        let guest_dir = out.join("programs");
        self.build_programs(&tools, &guest_dir)?;
        times.push((Phase::GuestPrograms, t.elapsed()));
        let t = Instant::now();
        let initrd = self.initramfs(&tools, &ko, &guest_dir, extra, out)?;
        times.push((Phase::Initramfs, t.elapsed()));
        let b = Built {
            tools,
            kernel,
            ko,
            guest_dir,
            times,
        };
        Ok((b, initrd))
    }

    /// Builds `MODULE.ko` with Kbuild in the target's directory (or in `copy`, a seeded bug's).
    fn build_module(
        &self,
        tools: &tools::Tools,
        kernel: &kernel::Kernel,
        copy: Option<&Path>,
    ) -> Result<PathBuf> {
        let ko = format!("{}.ko", self.module);
        match copy {
            None => crate::kbuild::kbuild_ko(tools, kernel, &self.dir, &ko, false, None),
            Some(dir) => {
                crate::kbuild::kbuild_ko(tools, kernel, dir, &ko, false, Some("a seeded bug"))
            }
        }
    }

    /// Compiles each program, static, with the kernel's clang, warnings as errors.
    fn build_programs(&self, tools: &tools::Tools, into: &Path) -> Result<()> {
        std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
        for (src, name) in self.programs.iter().zip(self.program_names()) {
            let out = std::process::Command::new(&tools.clang)
                .args(["-static", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-I"])
                .arg(&self.dir)
                .arg("-o")
                .arg(into.join(name))
                .arg(self.dir.join(src))
                .output()
                .with_context(|| format!("running {}", tools.clang.display()))?;
            if !out.status.success() {
                bail!(
                    "compiling the guest program {src} failed (a static C program needs libc6-dev):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    /// The initramfs: the module, the programs, and `/etc/harness.env`, which tells init what
    /// to load and run ([`Target::init_env`]).
    fn initramfs(
        &self,
        tools: &tools::Tools,
        ko: &Path,
        guest_dir: &Path,
        extra: &[crate::image::initramfs::ExtraFile],
        out: &Path,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let env = out.join("harness.env");
        std::fs::write(&env, self.init_env())
            .with_context(|| format!("writing {}", env.display()))?;
        let mut files = vec![
            (ko.to_path_buf(), format!("/lib/modules/{}.ko", self.module)),
            (env, HARNESS_ENV.to_string()),
        ];
        files.extend(
            self.program_names()
                .map(|n| (guest_dir.join(n), format!("/bin/{n}"))),
        );
        files.extend(extra.iter().cloned());
        crate::image::initramfs::build_image(tools, &files, out)
    }

    /// The shell words `vm/init` reads from [`HARNESS_ENV`]: the module, its parameters, the
    /// suite, and the test marker (`pcmsig_contract::TEST_MARKER`, one definition).
    pub fn init_env(&self) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        format!(
            "harness_module={}\nharness_params={}\nharness_suite={}\nHARNESS_TEST_MARKER={}\n",
            q(&self.module),
            q(&self.params),
            q(&format!("/bin/{}", self.suite)),
            q(pcmsig_contract::TEST_MARKER),
        )
    }
}

/// Where `vm/init` finds a target's words (absent: pcmsig).
pub const HARNESS_ENV: &str = "/etc/harness.env";

/// The verdict of one of a target's VMs: the generic one, where no test may skip.
pub fn judge(run: &vm::Finished) -> ktap::Judgement {
    ktap::judge_with(run, &|_| None)
}

/// `cargo xtask selftest --bugs --target NAME`: each seeded bug's patch applied to a copy of
/// the target's directory, built, booted with its test only; the verdict must fail and blame
/// that test with one of its detectors.
pub fn run_bugs(t: &Target, opts: &vm::Options) -> Result<()> {
    if t.bug.is_empty() {
        bail!("{} has no [[bug]] entries", t.dir.join(FILE).display());
    }
    let total = Instant::now();
    let out = t.out_dir("bugs");
    let (mut missed, mut rows) = (Vec::new(), Vec::new());
    for bug in &t.bug {
        let dir = out.join(&bug.name);
        let copy = dir.join("src");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&t.dir, &copy)?;
        let patch = std::fs::read_to_string(t.dir.join(&bug.patch))
            .with_context(|| format!("reading {}", bug.patch))?;
        crate::kbuild::patch::apply(&patch, "", &copy)
            .with_context(|| format!("seeded bug {} ({})", bug.name, bug.patch))?;
        let quiet = vm::Options {
            quiet: true,
            ..opts.clone()
        };
        let (b, initrd) = t.prepare(&quiet, Some(&copy), &[], &dir)?;
        if !t.tests(&b.guest_dir)?.contains(&bug.test) {
            bail!(
                "seeded bug {}: the suite has no test {:?}",
                bug.name,
                bug.test
            );
        }
        let mut env = vm::port_env();
        env.push(word(env::FILTER, &bug.test));
        let vm0 = &t.vm[0];
        let boot = vm::Boot {
            env,
            qemu_args: &vm0.qemu,
            ..opts.boot(vm::Mode::Test, &dir, 1)
        };
        let run = vm::boot(&b.tools, &b.kernel, &initrd, &boot)
            .with_context(|| format!("booting the VM with seeded bug {}", bug.name))?;
        let judged = judge(&run);
        let hit = (!judged.failures.is_empty())
            .then(|| {
                judged
                    .blamed
                    .iter()
                    .find(|(test, c)| *test == bug.test && bug.detectors.contains(c))
            })
            .flatten();
        let blamed: Vec<String> = judged
            .blamed
            .iter()
            .map(|(t, c)| format!("{t} ({c})"))
            .collect();
        let verdict = match hit {
            Some((_, c)) => format!("caught by {} ({c})", bug.test),
            None => {
                missed.push(bug.name.clone());
                format!(
                    "MISSED: expected {} ({}); blamed [{}]; console {}",
                    bug.test,
                    bug.detectors.join("|"),
                    blamed.join(", "),
                    run.console_log.display()
                )
            }
        };
        println!(
            "xtask: {} {}: {verdict} in {:.1} s ({})",
            t.name,
            bug.name,
            run.wall.as_secs_f64(),
            bug.what
        );
        rows.push(verdict);
    }
    println!(
        "xtask: {}: {} of {} seeded bugs caught in {:.0} s",
        t.name,
        rows.len() - missed.len(),
        rows.len(),
        total.elapsed().as_secs_f64()
    );
    if !missed.is_empty() {
        bail!("seeded bugs the harness let through: {}", missed.join(", "));
    }
    println!("xtask: PASS");
    Ok(())
}

/// Copies the files of `from` (not its subdirectories, nor Kbuild's outputs) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let built = [".o", ".ko", ".mod", ".cmd", ".symvers", ".order", ".mod.c"]
            .iter()
            .any(|x| name.ends_with(x));
        if p.is_file() && !built {
            std::fs::copy(&p, to.join(&name))
                .with_context(|| format!("copying {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ringbuf_example_loads_and_its_words_are_quoted() {
        let t = Target::find("ringbuf").unwrap();
        assert_eq!((t.name.as_str(), t.module.as_str()), ("ringbuf", "ringbuf"));
        assert_eq!(t.suite, "ringbuf-tests");
        assert!(!t.bug.is_empty());
        let env = t.init_env();
        assert!(
            env.contains("harness_suite='/bin/ringbuf-tests'\n"),
            "{env}"
        );
        assert!(
            env.contains(&format!(
                "HARNESS_TEST_MARKER='{}'",
                pcmsig_contract::TEST_MARKER
            )),
            "{env}"
        );
        // A directory works as well as a name.
        let by_dir = Target::find(&t.dir.to_string_lossy()).unwrap();
        assert_eq!(by_dir.dir, t.dir);
    }

    #[test]
    fn a_bugs_copy_has_the_sources_and_not_what_kbuild_made() {
        let base = std::env::temp_dir().join(format!("pcmsig-copy-{}", std::process::id()));
        let (from, to) = (base.join("from"), base.join("to"));
        std::fs::create_dir_all(from.join("sub")).unwrap();
        for f in [
            "m.c",
            "m.h",
            "Kbuild",
            "m.o",
            "m.ko",
            ".m.o.cmd",
            "m.mod.c",
            "modules.order",
        ] {
            std::fs::write(from.join(f), f).unwrap();
        }
        copy_dir(&from, &to).unwrap();
        let mut got: Vec<String> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        got.sort();
        assert_eq!(got, ["Kbuild", "m.c", "m.h"]);
        assert_eq!(std::fs::read_to_string(to.join("m.c")).unwrap(), "m.c");
        assert!(copy_dir(&base.join("none"), &base.join("x")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_wrong_description_is_refused_by_its_field() {
        let dir = std::env::temp_dir().join(format!("pcmsig-target-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Kbuild"), "obj-m := m.o\n").unwrap();
        std::fs::write(dir.join("t.c"), "int main(void) { return 0; }\n").unwrap();
        let write = |toml: &str| {
            std::fs::write(dir.join(FILE), toml).unwrap();
            format!("{:#}", Target::find(&dir.to_string_lossy()).unwrap_err())
        };
        let good = "name = \"m\"\nmodule = \"m\"\nprograms = [\"t.c\"]\nsuite = \"t\"\n";
        std::fs::write(dir.join(FILE), good).unwrap();
        let t = Target::find(&dir.to_string_lossy()).unwrap();
        assert_eq!(t.vm.len(), 1);
        assert!(write(&good.replace("\"t\"\n", "\"u\"\n")).contains("suite \"u\""));
        assert!(write(&format!("{good}colour = 1\n")).contains("colour"));
        // A program that is missing, not C, or not in the directory itself is refused as a
        // program (beside the suite, which stays one of the programs).
        let program = |p: &str| {
            let e = write(&good.replace("[\"t.c\"]", &format!("[\"t.c\", \"{p}\"]")));
            assert!(
                e.contains(&format!("programs: {p:?} is not a C file in ")),
                "{p}: {e}"
            );
        };
        program("nope.c");
        std::fs::write(dir.join("t.txt"), "").unwrap();
        program("t.txt");
        program("./t.c");
        // A Makefile serves as well as a Kbuild; neither is refused.
        std::fs::rename(dir.join("Kbuild"), dir.join("Makefile")).unwrap();
        std::fs::write(dir.join(FILE), good).unwrap();
        assert!(Target::find(&dir.to_string_lossy()).is_ok());
        std::fs::remove_file(dir.join("Makefile")).unwrap();
        assert!(write(good).contains("no Kbuild or Makefile"));
        std::fs::write(dir.join("Kbuild"), "obj-m := m.o\n").unwrap();
        assert!(write(&format!("{good}params = \"a='b'\"\n")).contains("params"));
        assert_eq!(
            t.out_dir("test"),
            crate::paths::out_dir("targets").join("m/test")
        );
        assert!(write(&good.replace("name = \"m\"", "name = \"m n\"")).contains("name"));
        assert!(write(&good.replace("name = \"m\"", "name = \"\"")).contains("name"));
        assert!(write(&good.replace("module = \"m\"", "module = \"m/x\"")).contains("module"));
        let vm = |n: &str| format!("[[vm]]\nname = \"{n}\"\n");
        let two = format!("{good}{}{}", vm("a"), vm("b"));
        std::fs::write(dir.join(FILE), &two).unwrap();
        assert_eq!(Target::find(&dir.to_string_lossy()).unwrap().vm.len(), 2);
        assert!(write(&format!("{good}{}{}", vm("a"), vm("a"))).contains("vm:"));
        assert!(write(&format!("{good}{}", vm("a b"))).contains("vm:"));
        std::fs::write(dir.join("b.patch"), "").unwrap();
        let bug = |name: &str, patch: &str, detectors: &str| {
            format!(
                "{good}[[bug]]\nname = \"{name}\"\nwhat = \"w\"\npatch = \"{patch}\"\n\
                 test = \"t\"\ndetectors = [{detectors}]\n"
            )
        };
        std::fs::write(dir.join(FILE), bug("b", "b.patch", "\"test\"")).unwrap();
        assert_eq!(Target::find(&dir.to_string_lossy()).unwrap().bug.len(), 1);
        assert!(write(&bug("b c", "b.patch", "\"test\"")).contains("bug"));
        assert!(write(&bug("b", "none.patch", "\"test\"")).contains("bug"));
        assert!(write(&bug("b", "b.patch", "")).contains("bug"));
        let e = format!("{:#}", Target::find("no-such-target").unwrap_err());
        assert!(e.contains("ringbuf"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
