//! The layout guard. The kernel runs bindgen with `--no-layout-tests`, so a type whose Rust
//! layout differs from C's goes unnoticed, and the kernel crate then reads the wrong fields (seen:
//! without `CONFIG_SCHEDSTATS`, the empty `____cacheline_aligned` `struct sched_statistics` is
//! emitted without its alignment, and every `task_struct` field from `stats` on sits 48 bytes
//! early, `Task::pid()` included). After each kernel build this regenerates the bindings with the
//! tree's own bindgen command but with layout tests, and type-checks them with the tree's own
//! rustc command: a mismatch fails the build and names the types. It runs once per kernel build.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Instant;
use xshell::{cmd, Shell};

use crate::kernel::Kernel;

/// Written into the build tree once the guard passed for its current stamp.
const STAMP: &str = ".pcmsig-layout-ok";

/// Checks the kernel crate's bindings of `kernel` unless already done for this build.
pub fn check(kernel: &Kernel) -> Result<()> {
    let build = &kernel.build_dir;
    let stamp = std::fs::read_to_string(build.join(crate::kernel::STAMP)).unwrap_or_default();
    let done = build.join(STAMP);
    if !stamp.is_empty() && std::fs::read_to_string(&done).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    let t = Instant::now();
    println!("xtask: checking the kernel crate's bindings against C's layouts (once per build)");
    let tmp = build.join("pcmsig-layout");
    let _ = std::fs::remove_dir_all(&tmp);
    let bindings_dir = tmp.join("rust/bindings");
    std::fs::create_dir_all(&bindings_dir)
        .with_context(|| format!("creating {}", bindings_dir.display()))?;
    let helpers = build.join("rust/bindings/bindings_helpers_generated.rs");
    std::fs::copy(&helpers, bindings_dir.join("bindings_helpers_generated.rs"))
        .with_context(|| format!("copying {}", helpers.display()))?;
    let bindgen = bindgen_command(build, &tmp)?;
    run_in(build, &bindgen, "bindgen with layout tests")?;
    let rustc = rustc_command(build, &tmp)?;
    let sh = Shell::new()?;
    sh.change_dir(build);
    let out = cmd!(sh, "sh -c {rustc}")
        // As the kernel's Makefile exports it: its flags use unstable (`-Z`) options.
        .env("RUSTC_BOOTSTRAP", "1")
        .quiet()
        .ignore_status()
        .output()
        .context("running the kernel's rustc command for the bindings")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let log = tmp.join("rustc.log");
        let _ = std::fs::write(&log, stderr.as_bytes());
        let types = mismatched_types(&stderr);
        if types.is_empty() {
            bail!(
                "type-checking the layout-tested bindings failed (not a layout test); log: {}",
                log.display()
            );
        }
        bail!(
            "the kernel crate's bindings disagree with C on the layout of: {} (bindgen with \
             layout tests, then rustc; log: {}). Kernel code reading these types reads the wrong \
             fields: fix the config or the bindgen parameters.",
            types.join(", "),
            log.display()
        );
    }
    std::fs::write(&done, &stamp).with_context(|| format!("writing {}", done.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "xtask: every layout agrees ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The first line of a kbuild `.cmd` file, without its `savedcmd_TARGET := ` prefix.
fn saved_command(cmd_file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(cmd_file)
        .with_context(|| format!("reading {}", cmd_file.display()))?;
    let first = text.lines().next().unwrap_or_default();
    let (_, cmd) = first
        .split_once(" := ")
        .with_context(|| format!("{}: no `savedcmd_... :=` line", cmd_file.display()))?;
    Ok(cmd.trim().to_string())
}

/// Replaces `from` by `to` in `cmd`, failing if `from` is absent (the tree's command changed).
fn swap(cmd: String, from: &str, to: &str) -> Result<String> {
    if !cmd.contains(from) {
        bail!("the kernel's command no longer contains {from:?}: the layout guard needs updating");
    }
    Ok(cmd.replace(from, to))
}

/// The tree's bindgen command for `bindings_generated.rs`, with layout tests, writing into `tmp`.
fn bindgen_command(build: &Path, tmp: &Path) -> Result<String> {
    let cmd = saved_command(&build.join("rust/bindings/.bindings_generated.rs.cmd"))?;
    let cmd = cmd.replace("$(pound)", "#");
    let cmd = swap(cmd, " --no-layout-tests", "")?;
    let cmd = swap(
        cmd,
        "-o rust/bindings/bindings_generated.rs",
        &format!("-o {}/rust/bindings/bindings_generated.rs", tmp.display()),
    )?;
    swap(
        cmd,
        "-Wp,-MMD,rust/bindings/.bindings_generated.rs.d",
        &format!("-Wp,-MMD,{}/bindings.d", tmp.display()),
    )
}

/// The tree's rustc command for the `bindings` crate, reading `tmp`'s bindings, emitting only
/// metadata into `tmp`.
fn rustc_command(build: &Path, tmp: &Path) -> Result<String> {
    let cmd = saved_command(&build.join("rust/.bindings.o.cmd"))?;
    let cmd = swap(
        cmd,
        &format!("OBJTREE={}", build.display()),
        &format!("OBJTREE={}", tmp.display()),
    )?;
    swap(
        cmd,
        "--emit=dep-info=rust/.bindings.o.d --emit=obj=rust/bindings.o --emit=metadata=rust/libbindings.rmeta",
        &format!("--emit=metadata={}/libbindings.rmeta", tmp.display()),
    )
}

fn run_in(dir: &Path, cmd: &str, what: &str) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(dir);
    let out = cmd!(sh, "sh -c {cmd}")
        .env("LIBCLANG_PATH", crate::tools::LIBCLANG_DIR)
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The types whose layout tests failed, from rustc's errors (`["Size of task_struct"]`, ...).
pub fn mismatched_types(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in stderr.lines() {
        for prefix in ["[\"Size of ", "[\"Alignment of ", "[\"Offset of field: "] {
            if let Some(rest) = l.split(prefix).nth(1) {
                let name = rest.split('"').next().unwrap_or_default();
                let ty = name.split("::").next().unwrap_or(name).to_string();
                if !ty.is_empty() && !out.contains(&ty) {
                    out.push(ty);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bindgen defect behind the `task_struct` shift, reproduced on two structs: an empty
    /// struct aligned to 64 is emitted without its alignment. The layout tests the guard turns on
    /// must catch it, and the guard must name the types.
    #[test]
    fn the_guard_fails_on_a_known_bad_binding_and_names_the_types() {
        let tools_bindgen = crate::tools::bindgen_path();
        assert!(
            tools_bindgen.is_file(),
            "{} is missing: run `cargo xtask deps` first",
            tools_bindgen.display()
        );
        let dir = std::env::temp_dir().join(format!("pcmsig-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("h.h"),
            "struct sched_statistics {} __attribute__((aligned(64)));\n\
             struct task_struct { int state; struct sched_statistics stats; int pid; };\n\
             struct fine { int a; long b; };\n",
        )
        .unwrap();
        let sh = Shell::new().unwrap();
        sh.change_dir(&dir);
        cmd!(
            sh,
            "{tools_bindgen} h.h --use-core --rust-target 1.85 -o b.rs"
        )
        .env("LIBCLANG_PATH", crate::tools::LIBCLANG_DIR)
        .run()
        .expect("bindgen");
        std::fs::write(
            dir.join("lib.rs"),
            "#![no_std]\n#![allow(non_camel_case_types)]\ninclude!(\"b.rs\");\n",
        )
        .unwrap();
        let rmeta = dir.join("x.rmeta");
        let out = cmd!(
            sh,
            "rustc --edition 2021 --crate-type lib --emit=metadata -o {rmeta} lib.rs"
        )
        .ignore_status()
        .output()
        .unwrap();
        assert!(!out.status.success(), "the bad layout must not compile");
        let types = mismatched_types(&String::from_utf8_lossy(&out.stderr));
        assert!(types.contains(&"task_struct".to_string()), "{types:?}");
        assert!(types.contains(&"sched_statistics".to_string()), "{types:?}");
        assert!(!types.contains(&"fine".to_string()), "{types:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_rewrites_fail_loudly_when_the_tree_changed() {
        assert!(swap("a --no-layout-tests b".into(), " --no-layout-tests", "").is_ok());
        let e = swap("a b".into(), " --no-layout-tests", "").unwrap_err();
        assert!(e.to_string().contains("needs updating"), "{e}");
    }
}
