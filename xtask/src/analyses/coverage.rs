//! Line coverage of `module/*.rs` from every context the module runs in: the analysis behind
//! `cargo xtask coverage` (`commands/coverage.rs`) and `test --edit-first`'s map.
//!
//! Method. KCOV records only for the task that enabled it, so it misses the hrtimer callback and
//! the edu interrupt handler (hard IRQ) and the delivery work (softirq), where this driver
//! delivers; gcov does not instrument Rust. So a copy of the module (like the seeded bugs', never
//! the real one) is built with LLVM's SanitizerCoverage (`-Cpasses=sancov-module`, edge level,
//! trace-pc, no pruning of blocks) and line tables, and linked with `xtask/coverage/sancov.c`,
//! whose `__sanitizer_cov_trace_pc` counts every call in a lock-free table, whatever the context,
//! with the set of tests that made it. The guest suite names the running test and sends the
//! table to a serial port before each unload and at the end (`pcmsig-tests/coverage.rs`). Here,
//! `objdump -d -r -l --inlines` of the instrumented module gives every call site of the callback
//! and the source lines (with their inlining chains) of every instruction; each instruction
//! belongs to the site that starts its basic block (the last site before it in its function),
//! and a line of `module/*.rs` is hit when a site one of its instructions belongs to ran.
//!
//! Output in `target/pcmsig/coverage/`: `lcov.info` (an lcov tracefile), `summary.txt` (per
//! file, then each line never run, with its source), `tests.txt` (per test, the lines that test
//! alone runs).

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::paths::project_root;
use pcmsig_contract::{COVERAGE_TABLE_BEGIN, COVERAGE_TABLE_END, COVERAGE_TEST};

/// The sections with instrumented code, each with the anchor the guest's offsets are from.
const SECTIONS: [(&str, &str); 3] = [
    (".text", "__sanitizer_cov_trace_pc"),
    (".init.text", "init_module"),
    (".exit.text", "cleanup_module"),
];
/// The name of the coverage callback in relocations.
const CALLBACK: &str = "__sanitizer_cov_trace_pc";
use crate::kbuild::COVERAGE_CRATE_ROOT as CRATE_ROOT;

/// Where the coverage build's copy of the module goes, in the command's output directory.
pub fn build_dir(out: &Path) -> PathBuf {
    out.join("build")
}

/// The last coverage build in `out`: the instrumented module and its copy's directory.
pub fn last_build(out: &Path) -> (PathBuf, PathBuf) {
    let module = build_dir(out).join("module");
    (module.join("pcmsig.ko"), module)
}

/// A source line of the module: file name in `module/` and line number.
pub type Line = (String, u32);

/// Where the instrumented code's call sites are, and which lines each one's block covers.
#[derive(Debug, Default)]
pub struct Map {
    /// Per section: each site's return address (what the guest records), with its lines.
    sites: HashMap<&'static str, BTreeMap<u64, BTreeSet<Line>>>,
    /// Per section: its anchor's address.
    anchors: HashMap<&'static str, u64>,
    /// Every line of the module with code (with or without a site of its own).
    lines: BTreeSet<Line>,
    /// Functions left out: never referenced (out-of-line copies of code the compiler inlined
    /// into every caller, which nothing can call).
    pub dead: Vec<String>,
}

/// One instruction: its address, function start, and the module lines its code comes from.
struct Insn {
    addr: u64,
    func: u64,
    lines: Vec<Line>,
}

/// Parses `objdump -d -r -l --inlines` of the instrumented module. `copy_dir` is the module
/// copy the debug info names (its files are mapped back to `module/`); `referenced`: every
/// symbol a relocation names (calls, and function pointers in data): a function outside it can
/// never run, and its lines are left out.
pub fn parse_objdump(text: &str, copy_dir: &str, relocated: &HashSet<String>) -> Result<Map> {
    let mut referenced = direct_targets(text);
    referenced.extend(relocated.iter().cloned());
    let mut map = Map::default();
    let mut section: Option<&'static str> = None;
    let mut insns: HashMap<&'static str, Vec<Insn>> = HashMap::new();
    let mut calls: HashMap<&'static str, Vec<(u64, u64)>> = HashMap::new();
    let mut func = 0u64;
    let mut live = true;
    let mut frames: Vec<Line> = Vec::new();
    let mut after_insn = true;
    for raw in text.lines() {
        if let Some(name) = raw
            .strip_prefix("Disassembly of section ")
            .and_then(|r| r.strip_suffix(':'))
        {
            section = SECTIONS.iter().find(|(s, _)| *s == name).map(|(s, _)| *s);
            continue;
        }
        let Some(sec) = section else { continue };
        if let Some((addr, sym)) = function_header(raw) {
            func = addr;
            live = referenced.contains(sym) || referenced.contains(&format!("{sec}@{addr:x}"));
            if let Some((_, anchor)) = SECTIONS.iter().find(|(s, _)| *s == sec) {
                if sym == *anchor {
                    map.anchors.insert(sec, addr);
                    live = true;
                }
            }
            if !live {
                map.dead.push(sym.to_string());
            }
            continue;
        }
        if !live {
            continue;
        }
        if let Some(rest) = raw.strip_prefix("inlined by ") {
            if after_insn {
                // A new chain for the same innermost line (objdump repeats only what changed).
                frames.truncate(1);
                after_insn = false;
            }
            if let Some(l) = module_line(rest, copy_dir) {
                frames.push(l);
            } else {
                frames.push((String::new(), 0));
            }
            continue;
        }
        if raw.starts_with('/') {
            frames = vec![module_line(raw, copy_dir).unwrap_or((String::new(), 0))];
            after_insn = false;
            continue;
        }
        if let Some(off) = callback_reloc(raw) {
            // The 5-byte `call rel32` starts a byte before its relocation; it returns after it.
            calls
                .entry(sec)
                .or_default()
                .push((off.saturating_sub(1), off + 4));
            continue;
        }
        if let Some(addr) = insn_addr(raw) {
            after_insn = true;
            let lines: Vec<Line> = frames
                .iter()
                .filter(|(f, _)| !f.is_empty())
                .cloned()
                .collect();
            insns
                .entry(sec)
                .or_default()
                .push(Insn { addr, func, lines });
        }
    }
    for (sec, list) in insns {
        let mut sites: Vec<(u64, u64)> = calls.remove(sec).unwrap_or_default();
        sites.sort_unstable();
        let by_call: BTreeMap<u64, u64> = sites.iter().copied().collect();
        let entry = map.sites.entry(sec).or_default();
        for (_, ret) in &sites {
            entry.entry(*ret).or_default();
        }
        for i in &list {
            map.lines.extend(i.lines.iter().cloned());
            // The site that starts this instruction's block: the last call at or before it in
            // its function, else (the prologue) the function's first.
            let owner = by_call
                .range(i.func..=i.addr)
                .next_back()
                .or_else(|| by_call.range(i.func..).next())
                .map(|(_, ret)| *ret);
            if let Some(ret) = owner {
                entry
                    .entry(ret)
                    .or_default()
                    .extend(i.lines.iter().cloned());
            }
        }
    }
    if map.sites.values().all(BTreeMap::is_empty) {
        bail!("the instrumented module has no call of {CALLBACK}: was it built with sancov?");
    }
    Ok(map)
}

/// Every symbol named by a relocation in `objdump -r` output (`OFFSET TYPE SYMBOL-0x4`) of a
/// section that can use it (code, data; not debug information); a
/// relocation against a section (`.text+0x4d1c`: a local function, often by pointer) names
/// `SECTION@ADDRESS`, for the address and the address 4 bytes on (a PC-relative addend).
pub fn referenced_symbols(relocs: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    // Debug information, unwind tables and the tables of instrumented places (`objtool`'s
    // endbr seal list) name every function: they are no reference.
    let mut counts = true;
    for l in relocs.lines() {
        if let Some(sec) = l
            .strip_prefix("RELOCATION RECORDS FOR [")
            .and_then(|r| r.strip_suffix("]:"))
        {
            counts = ![
                ".debug",
                ".eh_frame",
                ".ibt_endbr_seal",
                ".orc_unwind",
                ".return_sites",
            ]
            .iter()
            .any(|p| sec.starts_with(p));
            continue;
        }
        if !counts {
            continue;
        }
        let mut f = l.split_whitespace();
        let (Some(_), Some(kind), Some(target)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !kind.starts_with("R_") {
            continue;
        }
        let end = target
            .find(['-', '+'])
            .filter(|&i| i > 0)
            .unwrap_or(target.len());
        let (name, addend) = target.split_at(end);
        if name.starts_with('.') {
            let value = |hex: &str| i64::from_str_radix(hex.trim_start_matches("0x"), 16).ok();
            let addend = match addend.split_at_checked(1) {
                Some(("+", v)) => value(v),
                Some(("-", v)) => value(v).map(|v| -v),
                _ => Some(0),
            };
            if let Some(a) = addend {
                for at in [a, a + 4] {
                    out.insert(format!("{name}@{at:x}"));
                }
            }
        } else {
            out.insert(name.to_string());
        }
    }
    out
}

/// The functions that instructions call or jump to directly, with no relocation (a local
/// function in the same section). An instruction with a relocation shows its unrelocated bytes'
/// target, which means nothing: it is ignored.
fn direct_targets(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut pending: Option<&str> = None;
    for line in text.lines() {
        if line.starts_with("\t\t\t") {
            // The previous instruction's relocation.
            pending = None;
            continue;
        }
        if insn_addr(line).is_none() {
            continue;
        }
        if let Some(t) = pending.take() {
            out.insert(t.to_string());
        }
        // `call   c4b8 <symbol>`: a whole function, not `<symbol+0x12>`.
        pending = line
            .rsplit_once(" <")
            .and_then(|(_, t)| t.strip_suffix('>'))
            .filter(|t| !t.contains('+'));
    }
    if let Some(t) = pending {
        out.insert(t.to_string());
    }
    out
}

/// `0000000000000010 <symbol>:` -> (0x10, symbol).
fn function_header(line: &str) -> Option<(u64, &str)> {
    let (addr, rest) = line.split_once(' ')?;
    if addr.len() != 16 {
        return None;
    }
    let sym = rest.strip_prefix('<')?.strip_suffix(">:")?;
    Some((u64::from_str_radix(addr, 16).ok()?, sym))
}

/// `\t\t\t4370: R_X86_64_PLT32\t__sanitizer_cov_trace_pc-0x4` -> 0x4370.
fn callback_reloc(line: &str) -> Option<u64> {
    let rest = line.trim_start();
    let (off, what) = rest.split_once(": ")?;
    let target = what.split_whitespace().nth(1)?;
    if !what.starts_with("R_X86_64_") || target.split(['-', '+']).next() != Some(CALLBACK) {
        return None;
    }
    u64::from_str_radix(off, 16).ok()
}

/// `    4374:\t31 c0  \txor ...` -> 0x4374.
fn insn_addr(line: &str) -> Option<u64> {
    if !line.starts_with(' ') {
        return None;
    }
    let (addr, rest) = line.trim_start().split_once(":\t")?;
    if rest.is_empty() {
        return None;
    }
    u64::from_str_radix(addr, 16).ok()
}

/// `/copy/module/stream.rs:897 (discriminator 2)` -> ("stream.rs", 897) if in the module.
fn module_line(loc: &str, copy_dir: &str) -> Option<Line> {
    let loc = loc.split(" (").next()?.trim();
    let (path, line) = loc.rsplit_once(':')?;
    let name = path.strip_prefix(copy_dir)?.strip_prefix('/')?;
    if name.contains('/') || !name.ends_with(".rs") {
        return None;
    }
    let name = if name == CRATE_ROOT {
        "pcmsig.rs"
    } else {
        name
    };
    // Line 0 is the compiler's "no source line" (code it made up, such as a drop glue's
    // landing pad): not a line anyone can run or explain. It was counted as one in every file
    // that had it, and a filtered run that never reached it panicked (`0 - 1`, below).
    let n: u32 = line.parse().ok()?;
    (n > 0).then(|| (name.to_string(), n))
}

/// What the guest sent: the tests' names, and the tables (merged: one per module load).
#[derive(Debug, Default)]
pub struct Tables {
    /// Test number -> name.
    pub tests: BTreeMap<u32, String>,
    /// (section offsets from the three anchors) -> (hits, test numbers).
    pub entries: Vec<([i64; 3], u64, BTreeSet<u32>)>,
    /// Table slots that were full (never expected: the table has 16384).
    pub overflow: u64,
    /// Tables sent.
    pub tables: usize,
}

/// Parses one VM's coverage port text.
pub fn parse_port(text: &str) -> Result<Tables> {
    let mut t = Tables::default();
    let mut in_table = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(COVERAGE_TEST) {
            let (n, name) = rest.split_once(' ').context("a test line without a name")?;
            t.tests.insert(n.parse()?, name.to_string());
        } else if line == COVERAGE_TABLE_BEGIN {
            in_table = true;
            t.tables += 1;
        } else if line == COVERAGE_TABLE_END {
            in_table = false;
        } else if let Some(n) = line.strip_prefix("overflow ") {
            t.overflow += n.parse::<u64>()?;
        } else if let Some(why) = line.strip_prefix("no table: ") {
            bail!("the guest could not read its coverage table: {why}");
        } else if in_table {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                bail!("a coverage table line of {} fields: {line:?}", f.len());
            }
            let offs = [f[0].parse()?, f[1].parse()?, f[2].parse()?];
            let tests = f.get(4).map(|l| parse_bitmap_list(l)).transpose()?;
            t.entries
                .push((offs, f[3].parse()?, tests.unwrap_or_default()));
        }
    }
    if in_table {
        bail!("a coverage table was cut short (the VM ended while sending it)");
    }
    Ok(t)
}

/// `%*pbl`: `0,3-5,9` -> {0, 3, 4, 5, 9}.
fn parse_bitmap_list(s: &str) -> Result<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u32>()?..=b.parse::<u32>()?),
            None => {
                out.insert(part.parse()?);
            }
        }
    }
    Ok(out)
}

/// One line's result: how often its most-run site ran, and which tests (by name) ran it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hit {
    pub count: u64,
    pub tests: BTreeSet<String>,
}

/// Every module line with code, with what ran it (count 0: never run); and the table entries
/// that matched no site (never expected).
pub fn lines_hit(map: &Map, runs: &[Tables]) -> (BTreeMap<Line, Hit>, usize) {
    let mut hits: BTreeMap<Line, Hit> = map
        .lines
        .iter()
        .map(|l| (l.clone(), Hit::default()))
        .collect();
    let mut unmapped = 0;
    // Per site: summed count and test names, over every table of every VM.
    let mut sites: HashMap<(&str, u64), Hit> = HashMap::new();
    for run in runs {
        for (offs, count, tests) in &run.entries {
            let found = SECTIONS.iter().zip(offs).find_map(|((sec, _), off)| {
                let anchor = *map.anchors.get(sec)?;
                let ret = anchor.checked_add_signed(*off)?;
                map.sites
                    .get(sec)?
                    .contains_key(&ret)
                    .then_some((*sec, ret))
            });
            let Some(key) = found else {
                unmapped += 1;
                continue;
            };
            let h = sites.entry(key).or_default();
            h.count += count;
            h.tests.extend(tests.iter().map(|n| {
                run.tests
                    .get(n)
                    .cloned()
                    .unwrap_or_else(|| format!("test {n}"))
            }));
        }
    }
    for ((sec, ret), site_hit) in &sites {
        let Some(lines) = map.sites.get(sec).and_then(|s| s.get(ret)) else {
            continue;
        };
        for l in lines {
            let h = hits.entry(l.clone()).or_default();
            h.count = h.count.max(site_hit.count);
            h.tests.extend(site_hit.tests.iter().cloned());
        }
    }
    (hits, unmapped)
}

/// The lcov tracefile of `hits`.
pub fn lcov(hits: &BTreeMap<Line, Hit>, module_dir: &Path) -> String {
    let mut out = String::from("TN:pcmsig\n");
    for (file, lines) in by_file(hits) {
        out += &format!("SF:{}\n", module_dir.join(&file).display());
        for (n, h) in &lines {
            out += &format!("DA:{n},{}\n", h.count);
        }
        let hit = lines.iter().filter(|(_, h)| h.count > 0).count();
        out += &format!("LF:{}\nLH:{hit}\nend_of_record\n", lines.len());
    }
    out
}

fn by_file(hits: &BTreeMap<Line, Hit>) -> BTreeMap<String, Vec<(u32, &Hit)>> {
    let mut files: BTreeMap<String, Vec<(u32, &Hit)>> = BTreeMap::new();
    for ((f, n), h) in hits {
        files.entry(f.clone()).or_default().push((*n, h));
    }
    files
}

/// Why a line of the module is never run: an entry of `xtask/coverage/unreached.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub line: Line,
    /// The line's source, trimmed: an entry whose line changed is stale.
    pub source: String,
    pub why: String,
}

/// The explanations file: `FILE:LINE | SOURCE | WHY` lines, `#` comments.
pub const UNREACHED: &str = "xtask/coverage/unreached.txt";

/// The lines only fault injection reaches, explained for a run on a kernel without it.
pub const UNREACHED_WITHOUT_FAULTS: &str = "xtask/coverage/unreached-without-faults.txt";

/// Parses the explanations file.
pub fn parse_reasons(text: &str) -> Result<Vec<Reason>> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts = l.splitn(3, " | ");
        let (Some(at), Some(source), Some(why)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("{UNREACHED}:{}: not `FILE:LINE | SOURCE | WHY`: {l}", i + 1);
        };
        let (file, n) = at.rsplit_once(':').context("FILE:LINE")?;
        out.push(Reason {
            line: (
                file.to_string(),
                n.parse().with_context(|| format!("line number in {at}"))?,
            ),
            source: source.trim().to_string(),
            why: why.trim().to_string(),
        });
    }
    Ok(out)
}

/// A line never run: where, its source, and its explanation if one matches.
pub type NeverRun<'a> = (Line, String, Option<&'a Reason>);

/// The lines never run, each with its source and its explanation if one matches: same file and
/// source, at the same line or, when the code above it moved, the nearest (each explanation
/// explains one line); and the explanations that match no such line (the line runs now, or it
/// changed).
pub fn never_run<'a>(
    hits: &BTreeMap<Line, Hit>,
    module_dir: &Path,
    reasons: &'a [Reason],
) -> (Vec<NeverRun<'a>>, Vec<&'a Reason>) {
    let mut sources: HashMap<String, Vec<String>> = HashMap::new();
    let mut out: Vec<NeverRun<'a>> = Vec::new();
    for ((file, n), h) in hits {
        if h.count > 0 {
            continue;
        }
        let text = sources.entry(file.clone()).or_insert_with(|| {
            std::fs::read_to_string(module_dir.join(file))
                .unwrap_or_default()
                .lines()
                .map(|l| l.trim().to_string())
                .collect()
        });
        let src = (*n as usize)
            .checked_sub(1)
            .and_then(|i| text.get(i))
            .cloned()
            .unwrap_or_default();
        out.push(((file.clone(), *n), src, None));
    }
    let mut used = vec![false; reasons.len()];
    // Exact places first, then the nearest line with the same source.
    for exact in [true, false] {
        for (line, src, why) in out.iter_mut().filter(|(_, _, w)| w.is_none()) {
            let best = reasons
                .iter()
                .enumerate()
                .filter(|(i, r)| !used[*i] && r.line.0 == line.0 && r.source == *src)
                .filter(|(_, r)| !exact || r.line.1 == line.1)
                .min_by_key(|(_, r)| r.line.1.abs_diff(line.1));
            if let Some((i, r)) = best {
                used[i] = true;
                *why = Some(r);
            }
        }
    }
    let stale = reasons
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(r, _)| r)
        .collect();
    (out, stale)
}

/// The coverage verdict: every line never run explained, no explanation stale.
pub fn explained(never: &[NeverRun<'_>], stale: &[&Reason]) -> Result<()> {
    let unexplained: Vec<String> = never
        .iter()
        .filter(|(_, _, w)| w.is_none())
        .map(|((f, n), src, _)| format!("{f}:{n} | {src} | WHY"))
        .collect();
    if !unexplained.is_empty() || !stale.is_empty() {
        bail!(
            "every line of the module must run or be explained: {} lines never run have no \
             explanation in {UNREACHED}, {} explanations there are stale:\n{}",
            unexplained.len(),
            stale.len(),
            unexplained.join("\n")
        );
    }
    Ok(())
}

/// The readable summary: per file lines hit / lines, the total, then every line never run with
/// its source and why (or UNEXPLAINED), and the explanations that no longer match.
pub fn summary(
    hits: &BTreeMap<Line, Hit>,
    (never, stale): (&[NeverRun<'_>], &[&Reason]),
    dead: usize,
) -> String {
    let files = by_file(hits);
    let mut out = String::new();
    let (mut all, mut all_hit) = (0, 0);
    for (file, lines) in &files {
        let hit = lines.iter().filter(|(_, h)| h.count > 0).count();
        out += &format!(
            "{file:<12} {hit:>4} / {:>4} lines ({:.1}%)\n",
            lines.len(),
            pct(hit, lines.len())
        );
        all += lines.len();
        all_hit += hit;
    }
    out += &format!(
        "{:<12} {all_hit:>4} / {all:>4} lines ({:.1}%)\n",
        "total",
        pct(all_hit, all)
    );
    let unexplained = never.iter().filter(|(_, _, w)| w.is_none()).count();
    out += &format!(
        "never run: {} lines, {} explained in {UNREACHED}, {unexplained} unexplained; {} stale \
         explanations\n",
        never.len(),
        never.len() - unexplained,
        stale.len()
    );
    out += &format!(
        "left out: {dead} functions no relocation refers to (copies of code inlined into every \
         caller, which nothing can call; listed in left-out.txt)\n"
    );
    out += "\nLines never run:\n";
    for ((file, n), src, why) in never {
        let why = match why {
            None => "UNEXPLAINED".to_string(),
            Some(w) if w.line.1 != *n => format!("{} (listed at line {})", w.why, w.line.1),
            Some(w) => w.why.clone(),
        };
        out += &format!("{file}:{n} | {src} | {why}\n");
    }
    if !stale.is_empty() {
        out += "\nStale explanations (the line runs now, or it changed):\n";
        for r in stale {
            out += &format!("{}:{} | {} | {}\n", r.line.0, r.line.1, r.source, r.why);
        }
    }
    out
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

/// Per test: the lines it runs, and those no other test runs (what removing it would lose).
pub fn per_test(hits: &BTreeMap<Line, Hit>) -> String {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut alone: BTreeMap<&str, Vec<&Line>> = BTreeMap::new();
    for (line, h) in hits {
        for t in &h.tests {
            *count.entry(t).or_default() += 1;
        }
        if h.tests.len() == 1 {
            if let Some(t) = h.tests.first() {
                alone.entry(t).or_default().push(line);
            }
        }
    }
    let mut out = String::new();
    for (t, n) in &count {
        let only = alone.get(t).map_or(&[][..], Vec::as_slice);
        out += &format!("{t}: {n} lines, {} only by this test", only.len());
        if !only.is_empty() {
            let list: Vec<String> = only.iter().map(|(f, l)| format!("{f}:{l}")).collect();
            out += &format!(": {}", list.join(" "));
        }
        out.push('\n');
    }
    out
}

/// Per line that ran: `file:line: test test ...` (`lines.txt`), the map `cargo xtask mutants`
/// reads to boot a module mutant with the tests that reach its lines first.
pub fn per_line(hits: &BTreeMap<Line, Hit>) -> String {
    let mut out = String::new();
    for ((f, l), h) in hits {
        if h.count == 0 || h.tests.is_empty() {
            continue;
        }
        // Guest tests only: not the module's load or the time between tests.
        let tests: Vec<&str> = h
            .tests
            .iter()
            .map(String::as_str)
            .filter(|t| !t.contains(char::is_whitespace))
            .collect();
        if tests.is_empty() {
            continue;
        }
        out += &format!("{f}:{l}: {}\n", tests.join(" "));
    }
    out
}

/// `lines.txt` read back: (file, line) -> the tests that ran it.
pub fn parse_per_line(text: &str) -> Result<BTreeMap<Line, Vec<String>>> {
    let mut map = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        let parsed = l.split_once(": ").and_then(|(at, tests)| {
            let (f, n) = at.rsplit_once(':')?;
            let tests: Vec<String> = tests.split_whitespace().map(str::to_string).collect();
            Some(((f.to_string(), n.parse::<u32>().ok()?), tests))
        });
        let Some((line, tests)) = parsed else {
            bail!("line {}: not `file:line: test...`: {l:?}", i + 1);
        };
        map.insert(line, tests);
    }
    Ok(map)
}

/// The whole report from the instrumented module and each VM's port file, written to `out`;
/// returns the summary's first lines (per file and total) for the console.
pub fn report(
    ko: &Path,
    copy_dir: &Path,
    ports: &[PathBuf],
    out: &Path,
    faults: bool,
) -> Result<String> {
    let objdump = |args: &[&str]| -> Result<String> {
        let o = std::process::Command::new("objdump")
            .args(args)
            .arg(ko)
            .output()
            .context("running objdump (package: binutils)")?;
        if !o.status.success() {
            bail!(
                "objdump {args:?} of {} failed: {}",
                ko.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).to_string())
    };
    let referenced = referenced_symbols(&objdump(&["-r"])?);
    let mut args = vec!["-d", "-r", "-l", "--inlines"];
    for (s, _) in SECTIONS {
        args.extend(["-j", s]);
    }
    let map = parse_objdump(&objdump(&args)?, &copy_dir.to_string_lossy(), &referenced)?;
    let mut runs = Vec::new();
    for p in ports {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let t = parse_port(&text).with_context(|| format!("in {}", p.display()))?;
        if t.tables == 0 {
            bail!(
                "{} holds no coverage table: did the suite run with the coverage build?",
                p.display()
            );
        }
        if t.overflow > 0 {
            bail!(
                "{}: the coverage table overflowed {} times",
                p.display(),
                t.overflow
            );
        }
        runs.push(t);
    }
    let (hits, unmapped) = lines_hit(&map, &runs);
    if unmapped > 0 {
        bail!("{unmapped} table entries match no call site of the instrumented module");
    }
    let module_dir = project_root().join("module");
    // Without fault injection, the error paths only the fault sweep reaches are explained too
    // (an entry there that a test reaches on such a kernel is stale, like any other).
    let mut files = vec![UNREACHED];
    if !faults {
        files.push(UNREACHED_WITHOUT_FAULTS);
    }
    let mut reasons = Vec::new();
    for f in files {
        let p = project_root().join(f);
        reasons.extend(parse_reasons(
            &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        )?);
    }
    // The lines never run and the stale explanations: once, for the summary and the verdict.
    let (never, stale) = never_run(&hits, &module_dir, &reasons);
    let files = [
        ("lcov.info", lcov(&hits, &module_dir)),
        (
            "summary.txt",
            summary(&hits, (&never, &stale), map.dead.len()),
        ),
        ("tests.txt", per_test(&hits)),
        ("lines.txt", per_line(&hits)),
        ("left-out.txt", map.dead.join("\n") + "\n"),
    ];
    for (name, text) in &files {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let head: String = files[1]
        .1
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    explained(&never, &stale)
        .map_err(|e| anyhow::anyhow!("{head}{e} (see {})", out.join("summary.txt").display()))?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_map_round_trips_and_leaves_out_lines_never_run() {
        let hit = |count, tests: &[&str]| Hit {
            count,
            tests: tests.iter().map(|t| t.to_string()).collect(),
        };
        let hits: BTreeMap<Line, Hit> = [
            (("stream.rs".to_string(), 7), hit(3, &["b_test", "a_test"])),
            (("stream.rs".to_string(), 8), hit(0, &[])),
            (("pcmsig.rs".to_string(), 12), hit(1, &["a_test"])),
            (("pcmsig.rs".to_string(), 20), hit(1, &["(module load)"])),
        ]
        .into_iter()
        .collect();
        let text = per_line(&hits);
        assert_eq!(text, "pcmsig.rs:12: a_test\nstream.rs:7: a_test b_test\n");
        let back = parse_per_line(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[&("stream.rs".to_string(), 7)], ["a_test", "b_test"]);
        assert!(parse_per_line("stream.rs 7 a_test\n").is_err());
        // A line that never ran is no line of the map, whatever tests its hit names.
        let never: BTreeMap<Line, Hit> = [(("stream.rs".to_string(), 9), hit(0, &["a_test"]))]
            .into_iter()
            .collect();
        assert_eq!(per_line(&never), "");
    }

    /// A function with two blocks: the first always runs, the second only when a branch is
    /// taken; line 11 is inlined from another module file into line 5 of the caller.
    const OBJDUMP: &str = "\
Disassembly of section .text:

0000000000000000 <__sanitizer_cov_trace_pc>:
       0:\tc3                   \tret

0000000000000010 <_RNvf>:
_RNvf():
/copy/module/stream.rs:3
      10:\t55                   \tpush   %rbp
      11:\te8 00 00 00 00       \tcall   16 <_RNvf+0x6>
\t\t\t12: R_X86_64_PLT32\t__sanitizer_cov_trace_pc-0x4
/copy/module/stream.rs:4 (discriminator 1)
      16:\t85 c0                \ttest   %eax,%eax
      18:\t74 0a                \tje     24 <_RNvf+0x14>
/copy/module/stream.rs:5
      1a:\te8 00 00 00 00       \tcall   1f <_RNvf+0xf>
\t\t\t1b: R_X86_64_PLT32\t__sanitizer_cov_trace_pc-0x4
/usr/lib/rustlib/src/rust/library/core/src/ptr/mod.rs:10
inlined by /copy/module/signal.rs:11 (_RNvg)
inlined by /copy/module/stream.rs:5 (_RNvf)
      1f:\t90                   \tnop
/copy/module/pcmsig_main.rs:6
      24:\tc3                   \tret

0000000000000030 <_RNvdead>:
/copy/module/live.rs:28
      30:\te8 00 00 00 00       \tcall   35 <_RNvdead+0x5>
\t\t\t31: R_X86_64_PLT32\t__sanitizer_cov_trace_pc-0x4
      35:\tc3                   \tret
";

    fn referenced() -> HashSet<String> {
        referenced_symbols("0000000000000f64 R_X86_64_PLT32    _RNvf-0x0000000000000004\n")
    }

    #[test]
    fn objdump_gives_sites_and_the_lines_of_their_blocks() {
        let map = parse_objdump(OBJDUMP, "/copy/module", &referenced()).unwrap();
        let sites = &map.sites[".text"];
        let l = |f: &str, n: u32| (f.to_string(), n);
        assert_eq!(map.anchors[".text"], 0);
        assert_eq!(sites.len(), 2);
        // A function nothing refers to cannot run: its lines are left out, not "never run".
        assert_eq!(map.dead, vec!["_RNvdead".to_string()]);
        assert!(!map.lines.contains(&l("live.rs", 28)));
        assert_eq!(
            sites[&0x16],
            [l("stream.rs", 3), l("stream.rs", 4)].into_iter().collect()
        );
        // The crate root of the copy is module/pcmsig.rs; inlined lines count for every module
        // frame of their chain; the line after the block is the block's too.
        assert_eq!(
            sites[&0x1f],
            [l("stream.rs", 5), l("signal.rs", 11), l("pcmsig.rs", 6)]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn a_branch_no_test_takes_shows_zero_and_a_line_every_test_runs_shows_hits() {
        let map = parse_objdump(OBJDUMP, "/copy/module", &referenced()).unwrap();
        // Only the first site ran (return address 0x16, offset 0x16 from the anchor at 0).
        let port =
            "test 0 (load)\ntest 1 a\ntest 2 b\nbegin table\noverflow 0\n22 0 0 7 1-2\nend table\n";
        let tables = parse_port(port).unwrap();
        let (hits, unmapped) = lines_hit(&map, &[tables]);
        assert_eq!(unmapped, 0);
        let h = |f: &str, n: u32| hits[&(f.to_string(), n)].clone();
        assert_eq!(h("stream.rs", 3).count, 7);
        assert_eq!(
            h("stream.rs", 3).tests,
            ["a".to_string(), "b".to_string()].into_iter().collect()
        );
        assert_eq!(h("stream.rs", 5).count, 0);
        assert_eq!(h("signal.rs", 11).count, 0);
        let lcov = lcov(&hits, Path::new("/m"));
        assert!(
            lcov.contains("SF:/m/stream.rs\nDA:3,7\nDA:4,7\nDA:5,0\nLF:3\nLH:2\n"),
            "{lcov}"
        );
        // Two tables (two loads, or two VMs) add up.
        let again = parse_port(port).unwrap();
        let (hits, _) = lines_hit(&map, &[parse_port(port).unwrap(), again]);
        assert_eq!(hits[&("stream.rs".to_string(), 3)].count, 14);
    }

    #[test]
    fn port_text_is_read_strictly() {
        assert!(parse_port("begin table\n1 2 3 4\n").is_err(), "cut short");
        assert!(
            parse_port("begin table\n1 2\nend table\n").is_err(),
            "short line"
        );
        assert!(parse_port("no table: /sys/kernel/debug/pcmsig_coverage: ENOENT\n").is_err());
        let t = parse_port("begin table\n-5 7 9 1 \nend table\n").unwrap();
        assert_eq!(t.entries, vec![([-5, 7, 9], 1, BTreeSet::new())]);
        assert_eq!(
            parse_bitmap_list("0,3-5").unwrap(),
            [0, 3, 4, 5].into_iter().collect()
        );
    }

    #[test]
    fn an_explanation_follows_its_line_and_goes_stale_when_it_changes_or_runs() {
        let dir = crate::kernel::testing::scratch("coverage-reasons");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.rs"),
            "fn f() {\n    x();\n}\n    x();\n    y();\n",
        )
        .unwrap();
        let reasons = parse_reasons(
            "# comment\na.rs:1 | x(); | moved down a line\na.rs:5 | y(); | exact\na.rs:3 | z(); | changed\n",
        )
        .unwrap();
        let never = |n: u32| ((String::from("a.rs"), n), Hit::default());
        let hits: BTreeMap<Line, Hit> = [never(2), never(5)].into_iter().collect();
        let (lines, stale) = never_run(&hits, &dir, &reasons);
        let why: Vec<Option<&str>> = lines
            .iter()
            .map(|(_, _, w)| w.map(|w| w.why.as_str()))
            .collect();
        assert_eq!(why, vec![Some("moved down a line"), Some("exact")]);
        assert_eq!(stale, vec![&reasons[2]]);
        // Line 2 runs now: its explanation is stale, and nothing else is explained by it.
        let hits: BTreeMap<Line, Hit> = [never(5)].into_iter().collect();
        let (_, stale) = never_run(&hits, &dir, &reasons);
        assert_eq!(stale, vec![&reasons[0], &reasons[2]]);
        assert!(parse_reasons("a.rs:1 x();\n").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_c_table_writer_frames_its_tables_as_the_parser_reads_them() {
        let c = std::fs::read_to_string(project_root().join("xtask/coverage/sancov.c")).unwrap();
        for marker in [COVERAGE_TABLE_BEGIN, COVERAGE_TABLE_END] {
            assert!(
                c.contains(&format!("\"{marker}\\n\"")),
                "sancov.c lacks {marker:?}"
            );
        }
        // Its line format, as `cov_format` prints it: three offsets, hits, a %*pbl list.
        assert!(c.contains("\"%ld %ld %ld %ld %*pbl\\n\""));
        let t = parse_port(&format!(
            "{COVERAGE_TEST}1 a\n{COVERAGE_TABLE_BEGIN}\noverflow 0\n-8 40 72 3 1\n{COVERAGE_TABLE_END}\n"
        ))
        .unwrap();
        assert_eq!(
            t.entries,
            vec![([-8, 40, 72], 3, [1].into_iter().collect())]
        );
        assert_eq!(t.tests[&1], "a");
    }

    #[test]
    fn per_test_lists_the_lines_only_one_test_runs() {
        let mut hits = BTreeMap::new();
        let hit = |tests: &[&str]| Hit {
            count: 1,
            tests: tests.iter().map(|s| s.to_string()).collect(),
        };
        hits.insert(("a.rs".to_string(), 1), hit(&["t1", "t2"]));
        hits.insert(("a.rs".to_string(), 2), hit(&["t2"]));
        assert_eq!(
            per_test(&hits),
            "t1: 1 lines, 0 only by this test\nt2: 2 lines, 1 only by this test: a.rs:2\n"
        );
    }

    #[test]
    fn a_stale_or_missing_explanation_fails_the_coverage_check() {
        let dir = crate::kernel::testing::scratch("coverage-stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.rs"), "fn f() {\n    x();\n}\n").unwrap();
        let reasons = parse_reasons("a.rs:2 | x(); | why\n").unwrap();
        let line = |n: u32, count: u64| {
            (
                (String::from("a.rs"), n),
                Hit {
                    count,
                    ..Hit::default()
                },
            )
        };
        let check = |hits: Vec<(Line, Hit)>, reasons: &[Reason]| {
            let hits: BTreeMap<Line, Hit> = hits.into_iter().collect();
            let (never, stale) = never_run(&hits, &dir, reasons);
            explained(&never, &stale).map_err(|e| e.to_string())
        };
        // Explained: passes.
        assert_eq!(check(vec![line(2, 0)], &reasons), Ok(()));
        // The line now runs: its explanation is stale.
        let e = check(vec![line(2, 1)], &reasons).unwrap_err();
        assert!(e.contains("0 lines never run have no explanation in xtask/coverage/unreached.txt, 1 explanations there are stale"), "{e}");
        // The line no longer exists (the file is shorter, or gone): stale too.
        for gone in ["a.rs:9 | x(); | why\n", "b.rs:2 | x(); | why\n"] {
            let e = check(
                vec![line(2, 0)],
                &parse_reasons(&format!("{}{gone}", "a.rs:2 | x(); | why\n")).unwrap(),
            )
            .unwrap_err();
            assert!(e.contains("1 explanations there are stale"), "{gone}: {e}");
        }
        // Another file's explanation of the same source explains nothing here.
        let other = parse_reasons("b.rs:2 | x(); | why\n").unwrap();
        let e = check(vec![line(2, 0)], &other).unwrap_err();
        assert!(
            e.contains("1 lines never run") && e.contains("1 explanations there are stale"),
            "{e}"
        );
        // A line never run with no explanation fails, named.
        let e = check(vec![line(1, 0), line(2, 0)], &reasons).unwrap_err();
        assert!(
            e.contains("1 lines never run") && e.contains("a.rs:1 | fn f() { | WHY"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_report_reads_the_module_where_the_coverage_build_puts_it() {
        let out = Path::new("/t/pcmsig/coverage");
        assert_eq!(build_dir(out), PathBuf::from("/t/pcmsig/coverage/build"));
        // build_coverage_module(.., &build_dir(out)) writes DIR/module/pcmsig.ko, the copy in
        // DIR/module (the paths its debug information names): --report-only reads them there.
        assert_eq!(
            last_build(out),
            (
                PathBuf::from("/t/pcmsig/coverage/build/module/pcmsig.ko"),
                PathBuf::from("/t/pcmsig/coverage/build/module")
            )
        );
    }

    #[test]
    fn relocations_of_code_and_data_refer_to_functions_and_debug_information_does_not() {
        // `objdump -r` of a module: calls by symbol, a local function by section and addend
        // (PC-relative: the target is 4 bytes on), a function pointer in data, and the debug
        // information and unwind tables, which name every function.
        let relocs = "\
pcmsig.ko:     file format elf64-x86-64

RELOCATION RECORDS FOR [.text]:
OFFSET           TYPE              VALUE
0000000000000012 R_X86_64_PLT32    __sanitizer_cov_trace_pc-0x0000000000000004
0000000000000031 R_X86_64_PLT32    .text-0x0000000000000004
0000000000000047 R_X86_64_PLT32    .text+0x0000000000004d1c
0000000000000050 R_X86_64_32S      .rodata+0x0000000000000010


RELOCATION RECORDS FOR [.data]:
OFFSET           TYPE              VALUE
0000000000000008 R_X86_64_64       _RNvNtCs1_6pcmsig6stream8on_timer


RELOCATION RECORDS FOR [.debug_info]:
OFFSET           TYPE              VALUE
0000000000000008 R_X86_64_32       .debug_abbrev
000000000000001a R_X86_64_64       .text+0x0000000000000100
0000000000000038 R_X86_64_64       _RNvNtCs1_6pcmsig6stream10only_debug


RELOCATION RECORDS FOR [.orc_unwind_ip]:
OFFSET           TYPE              VALUE
0000000000000000 R_X86_64_PC32     _RNvNtCs1_6pcmsig6stream11only_unwind


RELOCATION RECORDS FOR [.init.text]:
OFFSET           TYPE              VALUE
0000000000000005 R_X86_64_PLT32    _RNvNtCs1_6pcmsig6stream4init-0x0000000000000004
";
        let got: BTreeSet<String> = referenced_symbols(relocs).into_iter().collect();
        let want: BTreeSet<String> = [
            "__sanitizer_cov_trace_pc",
            // `.text-0x4`: a call of the function at .text+0 (its addend as i64, in hex).
            ".text@fffffffffffffffc",
            ".text@0",
            ".text@4d1c",
            ".text@4d20",
            ".rodata@10",
            ".rodata@14",
            "_RNvNtCs1_6pcmsig6stream8on_timer",
            "_RNvNtCs1_6pcmsig6stream4init",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(got, want);
    }

    /// A caller that calls a local function directly (no relocation: objdump shows its target),
    /// another function through a relocation (not a site of the callback), and ends in a
    /// relocated call whose unrelocated bytes point at the next function (which means nothing).
    const DIRECT: &str = "\
Disassembly of section .text:

0000000000000000 <__sanitizer_cov_trace_pc>:
       0:\tc3                   \tret

0000000000000010 <_RNvcaller>:
/copy/module/stream.rs:3
      10:\te8 00 00 00 00       \tcall   15 <_RNvcaller+0x5>
\t\t\t11: R_X86_64_PLT32\t__sanitizer_cov_trace_pc-0x4
/copy/module/stream.rs:4
      15:\te8 00 00 00 00       \tcall   1a <_RNvcaller+0xa>
\t\t\t16: R_X86_64_PLT32\t_RNvother-0x4
      1a:\te8 11 00 00 00       \tcall   30 <_RNvlocal>
      1f:\te9 00 00 00 00       \tjmp    24 <_RNvnext>
\t\t\t20: R_X86_64_PLT32\t_RNvother-0x4

0000000000000024 <_RNvnext>:
/copy/module/stream.rs:9
      24:\tc3                   \tret

0000000000000030 <_RNvlocal>:
/copy/module/signal.rs:9
      30:\te8 00 00 00 00       \tcall   35 <_RNvlocal+0x5>
\t\t\t31: R_X86_64_PLT32\t__sanitizer_cov_trace_pc-0x4
/copy/module/signal.rs:10
      35:\tc3                   \tret
";

    #[test]
    fn a_function_called_directly_is_live_and_only_calls_of_the_callback_are_sites() {
        let relocated: HashSet<String> = ["_RNvcaller".to_string()].into_iter().collect();
        let map = parse_objdump(DIRECT, "/copy/module", &relocated).unwrap();
        let l = |f: &str, n: u32| (f.to_string(), n);
        // `_RNvlocal` is called with no relocation: it runs. `_RNvnext` only looks called.
        assert_eq!(map.dead, vec!["_RNvnext".to_string()]);
        let sites = &map.sites[".text"];
        assert_eq!(
            sites.keys().copied().collect::<Vec<u64>>(),
            vec![0x15, 0x35]
        );
        assert_eq!(
            sites[&0x15],
            [l("stream.rs", 3), l("stream.rs", 4)].into_iter().collect()
        );
        assert_eq!(
            sites[&0x35],
            [l("signal.rs", 9), l("signal.rs", 10)]
                .into_iter()
                .collect()
        );
        assert_eq!(
            map.lines,
            [
                l("signal.rs", 9),
                l("signal.rs", 10),
                l("stream.rs", 3),
                l("stream.rs", 4)
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn only_the_module_s_own_rust_files_are_its_lines() {
        let m = |loc: &str| module_line(loc, "/copy/module");
        assert_eq!(
            m("/copy/module/stream.rs:897 (discriminator 2)"),
            Some(("stream.rs".to_string(), 897))
        );
        // The compiler's "no line": not a line of the module.
        assert_eq!(m("/copy/module/stream.rs:0"), None);
        assert_eq!(
            m("/copy/module/pcmsig_main.rs:12"),
            Some(("pcmsig.rs".to_string(), 12))
        );
        // The coverage callback's C file is copied next to the module's sources; the UAPI
        // file and anything in a subdirectory are not the module's.
        assert_eq!(m("/copy/module/sancov.c:57"), None);
        assert_eq!(m("/copy/module/generated/bindings.rs:3"), None);
        assert_eq!(m("/copy/uapi/src/uapi.rs:40"), None);
    }

    #[test]
    fn every_table_sent_and_every_overflow_is_counted() {
        let port = format!(
            "{COVERAGE_TEST}1 a\n{COVERAGE_TABLE_BEGIN}\noverflow 2\n22 0 0 7 1\n{COVERAGE_TABLE_END}\n\
             {COVERAGE_TABLE_BEGIN}\noverflow 3\n22 0 0 1 1\n{COVERAGE_TABLE_END}\n"
        );
        let t = parse_port(&port).unwrap();
        assert_eq!(t.tables, 2);
        assert_eq!(t.overflow, 5);
        assert_eq!(t.entries.len(), 2);
    }

    #[test]
    fn table_entries_that_match_no_call_site_are_counted() {
        let map = parse_objdump(OBJDUMP, "/copy/module", &referenced()).unwrap();
        // 22 (0x16) is a site's return address; 23 is no site's, nor is 0x40.
        let port = "test 1 a\nbegin table\n22 0 0 7 1\n23 0 0 1 1\n64 0 0 2 1\nend table\n";
        let (hits, unmapped) = lines_hit(&map, &[parse_port(port).unwrap()]);
        assert_eq!(unmapped, 2);
        assert_eq!(hits[&("stream.rs".to_string(), 3)].count, 7);
    }

    #[test]
    fn an_explanation_at_a_line_s_own_place_wins_over_a_nearer_one_for_another_line() {
        let dir = crate::kernel::testing::scratch("coverage-exact");
        std::fs::write(dir.join("a.rs"), "fn f() {\n    x();\n}\n    x();\n").unwrap();
        // Line 4's explanation is nearer to line 2 than line 9's, but it is line 4's own.
        let reasons = parse_reasons("a.rs:4 | x(); | four\na.rs:9 | x(); | nine\n").unwrap();
        let never = |n: u32| ((String::from("a.rs"), n), Hit::default());
        let hits: BTreeMap<Line, Hit> = [never(2), never(4)].into_iter().collect();
        let (lines, stale) = never_run(&hits, &dir, &reasons);
        let why: Vec<(u32, Option<&str>)> = lines
            .iter()
            .map(|((_, n), _, w)| (*n, w.map(|w| w.why.as_str())))
            .collect();
        assert_eq!(why, vec![(2, Some("nine")), (4, Some("four"))]);
        assert!(stale.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_summary_counts_each_file_and_the_total_and_lists_what_never_ran() {
        let hit = |f: &str, n: u32, count: u64| {
            (
                (f.to_string(), n),
                Hit {
                    count,
                    ..Hit::default()
                },
            )
        };
        let hits: BTreeMap<Line, Hit> = [
            hit("a.rs", 1, 4),
            hit("a.rs", 2, 0),
            hit("a.rs", 3, 1),
            hit("a.rs", 4, 0),
            hit("a.rs", 5, 2),
            hit("b.rs", 1, 0),
        ]
        .into_iter()
        .collect();
        let reasons =
            parse_reasons("a.rs:2 | x(); | exact\na.rs:6 | y(); | moved\na.rs:9 | w(); | gone\n")
                .unwrap();
        let never: Vec<NeverRun<'_>> = vec![
            (
                ("a.rs".to_string(), 2),
                "x();".to_string(),
                Some(&reasons[0]),
            ),
            (
                ("a.rs".to_string(), 4),
                "y();".to_string(),
                Some(&reasons[1]),
            ),
            (("b.rs".to_string(), 1), "z();".to_string(), None),
        ];
        let text = summary(&hits, (&never, &[&reasons[2]]), 4);
        assert_eq!(
            text,
            "\
a.rs            3 /    5 lines (60.0%)
b.rs            0 /    1 lines (0.0%)
total           3 /    6 lines (50.0%)
never run: 3 lines, 2 explained in xtask/coverage/unreached.txt, 1 unexplained; 1 stale explanations
left out: 4 functions no relocation refers to (copies of code inlined into every caller, which nothing can call; listed in left-out.txt)

Lines never run:
a.rs:2 | x(); | exact
a.rs:4 | y(); | moved (listed at line 6)
b.rs:1 | z(); | UNEXPLAINED

Stale explanations (the line runs now, or it changed):
a.rs:9 | w(); | gone
"
        );
        // Nothing stale: no such section; no line at all: 0.0%, not NaN.
        let text = summary(&BTreeMap::new(), (&[], &[]), 0);
        assert!(
            text.starts_with("total           0 /    0 lines (0.0%)\n"),
            "{text}"
        );
        assert!(text.ends_with("\nLines never run:\n"), "{text}");
    }

    /// An instrumented module in miniature, as `as` assembles it: the callback (the .text
    /// anchor), `f` with two sites (returning at 6 and 15) whose code is lines 4-7 of
    /// `/copy/module/only_here.rs` (a file `module/` lacks: no explanation can match it), `f`
    /// referred to by a pointer in data, and `g`, which nothing refers to.
    const MINI_MODULE: &str = "\
\t.text
\t.globl __sanitizer_cov_trace_pc
\t.type __sanitizer_cov_trace_pc, @function
__sanitizer_cov_trace_pc:
\tret
\t.globl f
\t.type f, @function
f:
\t.file 1 \"/copy/module/only_here.rs\"
\t.loc 1 4
\tcall __sanitizer_cov_trace_pc
\t.loc 1 5
\ttestl %edi, %edi
\tje 1f
\t.loc 1 6
\tcall __sanitizer_cov_trace_pc
1:
\t.loc 1 7
\tret
\t.globl g
\t.type g, @function
g:
\t.loc 1 20
\tcall __sanitizer_cov_trace_pc
\tret
\t.data
\t.quad f
";

    /// Assembles [`MINI_MODULE`] in `dir` (binutils' `as`, which `objdump` comes with).
    fn mini_module(dir: &Path) -> PathBuf {
        let (s, o) = (dir.join("mini.s"), dir.join("mini.ko"));
        std::fs::write(&s, MINI_MODULE).unwrap();
        let st = std::process::Command::new("as")
            .arg("-o")
            .arg(&o)
            .arg(&s)
            .status()
            .expect("running as (package: binutils)");
        assert!(st.success(), "as failed");
        o
    }

    /// `report` of the mini module with one port holding `port`, faults or not.
    fn report_of(dir: &Path, ko: &Path, port: &str, faults: bool) -> String {
        let p = dir.join("coverage.txt");
        std::fs::write(&p, port).unwrap();
        report(ko, Path::new("/copy/module"), &[p], dir, faults)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_report_refuses_a_port_it_cannot_trust() {
        let dir = crate::kernel::testing::scratch("coverage-report-refuses");
        let ko = mini_module(&dir);
        let e = report_of(&dir, &ko, "test 1 a\n", true);
        assert!(
            e.ends_with(
                "coverage.txt holds no coverage table: did the suite run with the coverage build?"
            ),
            "{e}"
        );
        let e = report_of(
            &dir,
            &ko,
            "begin table\noverflow 2\n6 0 0 3 1\nend table\n",
            true,
        );
        assert!(
            e.ends_with("coverage.txt: the coverage table overflowed 2 times"),
            "{e}"
        );
        let e = report_of(
            &dir,
            &ko,
            "begin table\n6 0 0 3 1\n7 0 0 1 1\nend table\n",
            true,
        );
        assert_eq!(
            e,
            "1 table entries match no call site of the instrumented module"
        );
        // Not a module at all: objdump's failure, not an empty map.
        let bad = dir.join("bad.ko");
        std::fs::write(&bad, "not an ELF file\n").unwrap();
        let e = report(&bad, Path::new("/copy/module"), &[], &dir, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("objdump [\"-r\"] of {} failed: ", bad.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_report_maps_a_module_s_sites_to_its_lines_and_names_what_never_ran() {
        let dir = crate::kernel::testing::scratch("coverage-report");
        let ko = mini_module(&dir);
        // The first site of `f` ran 3 times, by test 1: lines 4 and 5, not 6 and 7.
        let port = "test 1 a_test\nbegin table\noverflow 0\n6 0 0 3 1\nend table\n";
        let reasons = |f: &str| {
            parse_reasons(&std::fs::read_to_string(project_root().join(f)).unwrap())
                .unwrap()
                .len()
        };
        // Every explanation of the real module is stale here: with faults, those of
        // UNREACHED; without, those of UNREACHED_WITHOUT_FAULTS too.
        for (faults, stale) in [
            (true, reasons(UNREACHED)),
            (
                false,
                reasons(UNREACHED) + reasons(UNREACHED_WITHOUT_FAULTS),
            ),
        ] {
            let e = report_of(&dir, &ko, port, faults);
            let head = format!(
                "\
only_here.rs    2 /    4 lines (50.0%)
total           2 /    4 lines (50.0%)
never run: 2 lines, 0 explained in xtask/coverage/unreached.txt, 2 unexplained; {stale} stale explanations
left out: 1 functions no relocation refers to (copies of code inlined into every caller, which nothing can call; listed in left-out.txt)
"
            );
            assert_eq!(
                e,
                format!(
                    "{head}every line of the module must run or be explained: 2 lines never run \
                     have no explanation in xtask/coverage/unreached.txt, {stale} explanations \
                     there are stale:\nonly_here.rs:6 |  | WHY\nonly_here.rs:7 |  | WHY (see {})",
                    dir.join("summary.txt").display()
                )
            );
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(
            read("lcov.info"),
            format!(
                "TN:pcmsig\nSF:{}\nDA:4,3\nDA:5,3\nDA:6,0\nDA:7,0\nLF:4\nLH:2\nend_of_record\n",
                project_root().join("module/only_here.rs").display()
            )
        );
        assert_eq!(
            read("lines.txt"),
            "only_here.rs:4: a_test\nonly_here.rs:5: a_test\n"
        );
        assert_eq!(read("left-out.txt"), "g\n");
        assert_eq!(
            read("tests.txt"),
            "a_test: 2 lines, 2 only by this test: only_here.rs:4 only_here.rs:5\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
