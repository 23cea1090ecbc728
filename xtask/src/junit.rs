//! JUnit XML from a KTAP report, for CI systems that display test results.

use crate::ktap::{Failure, Report, Splat, Status};

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// One `<testsuite>` with a `<testcase>` per top-level KTAP test, plus a `vm` test case that
/// fails with the run-level reasons (panic, timeout, short plan...) when there are any.
///
/// A kernel splat attributed to a test (by the marker the suite writes to `/dev/kmsg`) fails
/// that test, with the splat as its message, whatever the test itself reported.
pub fn render(report: &Report, failures: &[Failure], splats: &[Splat], seconds: f64) -> String {
    let splat_of = |name: &str| splats.iter().find(|s| s.test.as_deref() == Some(name));
    let run_level: Vec<String> = failures
        .iter()
        .filter(|f| !matches!(f, Failure::Failed(_)))
        .map(ToString::to_string)
        .collect();
    let c = report.counts();
    let splatted = report
        .tests
        .iter()
        .filter(|t| t.status != Status::NotOk && splat_of(&t.name).is_some())
        .count();
    let extra = usize::from(!run_level.is_empty());
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites>\n  <testsuite name=\"pcmsig\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{seconds:.3}\">\n",
        report.tests.len() + extra,
        c.failed + splatted + extra,
        c.skipped
    ));
    for t in &report.tests {
        x.push_str(&format!(
            "    <testcase classname=\"pcmsig.guest\" name=\"{}\">",
            esc(&t.name)
        ));
        match &t.status {
            Status::Ok => {}
            Status::Skip(reason) => x.push_str(&format!("<skipped message=\"{}\"/>", esc(reason))),
            Status::NotOk => {
                let first = t
                    .diagnostics
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "not ok".into());
                x.push_str(&format!(
                    "<failure message=\"{}\">{}</failure>",
                    esc(&first),
                    esc(&t.diagnostics.join("\n"))
                ));
            }
        }
        x.push_str("</testcase>\n");
    }
    if !run_level.is_empty() {
        x.push_str(&format!(
            "    <testcase classname=\"pcmsig.harness\" name=\"vm\"><failure message=\"{}\">{}</failure></testcase>\n",
            esc(&run_level[0]),
            esc(&run_level.join("\n"))
        ));
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::{parse, verdict, Ending};

    /// A minimal well-formedness check: tags balance and attribute values hold no raw `<&"`.
    fn well_formed(x: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = x;
        while let Some(i) = rest.find('<') {
            let text = &rest[..i];
            if text.contains('>') || (text.contains('&') && !text.contains(';')) {
                return Err(format!("raw markup in text {text:?}"));
            }
            let end = rest[i..].find('>').ok_or("unclosed tag")? + i;
            let tag = &rest[i + 1..end];
            if tag.starts_with('?') {
            } else if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("mismatched </{name}>"));
                }
            } else {
                let name = tag
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_end_matches('/')
                    .to_string();
                let attrs = &tag[name.len()..];
                if attrs
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .any(|v| v.contains('<') || v.contains('&') && !v.contains(';'))
                {
                    return Err(format!("bad attribute in <{tag}>"));
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    #[test]
    fn counts_match_the_ktap_and_text_is_escaped() {
        let console = "KTAP version 1\n1..3\nok 1 a\n# left: <1> & \"2\"\nnot ok 2 b<&>\nok 3 c # SKIP no \"edu\"\n";
        let r = parse(console);
        let f = verdict(console, &r, &Ending::Exited(Some(0)));
        let x = render(&r, &f, &[], 1.5);
        well_formed(&x).unwrap();
        assert!(
            x.contains("tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{x}"
        );
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert_eq!(x.matches("<skipped ").count(), 1);
        assert!(x.contains("name=\"b&lt;&amp;&gt;\""));
        assert!(x.contains("left: &lt;1&gt; &amp; &quot;2&quot;"));
    }

    #[test]
    fn run_level_failures_become_a_failing_vm_case() {
        let console = "KTAP version 1\n1..2\nok 1 a\n[ 1.0] Kernel panic - not syncing: boom\n";
        let r = parse(console);
        let f = verdict(console, &r, &Ending::Exited(Some(0)));
        let x = render(&r, &f, &crate::ktap::splats(console), 0.0);
        well_formed(&x).unwrap();
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains(
            "name=\"vm\"><failure message=\"kernel problem on the console: Kernel panic"
        ));
        assert!(x.contains("short run: 1 of 2"));
    }
}
