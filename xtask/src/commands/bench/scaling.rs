//! The cost curves of `cargo xtask bench`: how delivery latency and throughput change with the
//! number of listeners, and a period's latency and GET_STATS's time with the number of open
//! files (the guest's `Scale` records, aggregated over runs), as a table and `scaling.svg`.

use std::fmt::Write as _;

use crate::commands::bench::stats::{spread, Spread};
use pcmsig_contract::bench::{
    pct, Record, FILES, FILE_COUNTS, LISTENERS, LISTENER_COUNTS, OTHER_USER, OTHER_USER_FILE_COUNTS,
};

/// One point of a curve, over the runs.
#[derive(Debug)]
pub struct Point {
    pub what: &'static str,
    pub n: u32,
    pub p50_us: Spread,
    pub p99_us: Spread,
    /// Deliveries per second to all listeners together (listeners only).
    pub per_s: Spread,
    /// One GET_STATS, µs (files only).
    pub get_stats_us: Spread,
    pub runs: usize,
}

/// Every point of both curves the records hold.
pub fn aggregate(records: &[Record]) -> Vec<Point> {
    let curves = [
        (LISTENERS, &LISTENER_COUNTS[..]),
        (FILES, &FILE_COUNTS[..]),
        (OTHER_USER, &OTHER_USER_FILE_COUNTS[..]),
    ];
    let mut out = Vec::new();
    for (what, counts) in curves {
        for &n in counts {
            let runs: Vec<(&[u64; 8], Option<f64>, Option<u64>)> = records
                .iter()
                .filter_map(|r| match r {
                    Record::Scale {
                        what: w,
                        n: m,
                        pcts_ns,
                        per_s,
                        get_stats_ns,
                        ..
                    } if w == what && *m == n => Some((pcts_ns, *per_s, *get_stats_ns)),
                    _ => None,
                })
                .collect();
            if runs.is_empty() {
                continue;
            }
            let us =
                |i: usize| spread(&runs.iter().map(|r| r.0[i] as f64 / 1e3).collect::<Vec<_>>());
            out.push(Point {
                what,
                n,
                p50_us: us(pct::P50),
                p99_us: us(pct::P99),
                per_s: spread(&runs.iter().filter_map(|r| r.1).collect::<Vec<_>>()),
                get_stats_us: spread(
                    &runs
                        .iter()
                        .filter_map(|r| r.2.map(|ns| ns as f64 / 1e3))
                        .collect::<Vec<_>>(),
                ),
                runs: runs.len(),
            });
        }
    }
    out
}

/// The curves as two tables.
pub fn table(md: &mut String, points: &[Point]) {
    let _ = writeln!(
        md,
        "\n| listeners | p50 µs | p99 µs | deliveries/s (all listeners) |\n|---|---|---|---|"
    );
    for p in points.iter().filter(|p| p.what == LISTENERS) {
        let _ = writeln!(
            md,
            "| {} | {:.0} ({:.0} to {:.0}) | {:.0} | {:.0} ({:.0} to {:.0}) |",
            p.n,
            p.p50_us.median,
            p.p50_us.min,
            p.p50_us.max,
            p.p99_us.median,
            p.per_s.median,
            p.per_s.min,
            p.per_s.max
        );
    }
    let _ = writeln!(
        md,
        "\n| open files | period p50 µs | period p99 µs | GET_STATS µs |\n|---|---|---|---|"
    );
    for p in points.iter().filter(|p| p.what == FILES) {
        let _ = writeln!(
            md,
            "| {} | {:.0} ({:.0} to {:.0}) | {:.0} | {:.1} ({:.1} to {:.1}) |",
            p.n,
            p.p50_us.median,
            p.p50_us.min,
            p.p50_us.max,
            p.p99_us.median,
            p.get_stats_us.median,
            p.get_stats_us.min,
            p.get_stats_us.max
        );
    }
    if points.iter().any(|p| p.what == OTHER_USER) {
        let _ = writeln!(
            md,
            "\n| another user's open files | this user's 1 ms period p50 µs | p99 µs |\n|---|---|---|"
        );
    }
    for p in points.iter().filter(|p| p.what == OTHER_USER) {
        let _ = writeln!(
            md,
            "| {} | {:.0} ({:.0} to {:.0}) | {:.0} ({:.0} to {:.0}) |",
            p.n,
            p.p50_us.median,
            p.p50_us.min,
            p.p50_us.max,
            p.p99_us.median,
            p.p99_us.min,
            p.p99_us.max
        );
    }
}

/// The curves for `bench.json`.
pub fn json(points: &[Point]) -> serde_json::Value {
    points
        .iter()
        .map(|p| {
            serde_json::json!({"what": p.what, "n": p.n, "p50_us": p.p50_us.median,
                "p99_us": p.p99_us.median, "per_s": (p.what == LISTENERS).then_some(p.per_s.median),
                "get_stats_us": (p.what == FILES).then_some(p.get_stats_us.median), "runs": p.runs})
        })
        .collect()
}

/// One series of a panel: its name, colour and a value per x.
type Series<'a> = (&'a str, &'a str, Vec<f64>);

/// One panel at `left`: log-scaled x (the counts) and y, a polyline per series, a legend.
fn panel(s: &mut String, left: f64, title: &str, xs: &[u32], series: &[Series<'_>]) {
    let (w, h, top) = (300.0, 220.0, 50.0);
    let vals: Vec<f64> = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = crate::commands::bench::stats::log_decades(&vals, 1e-3);
    let xmax = xs.iter().copied().max().unwrap_or(1).max(2) as f64;
    let x = |n: u32| left + 40.0 + (f64::from(n.max(1)).log10() / xmax.log10()) * (w - 60.0);
    let y = |v: f64| top + h - (v.max(1e-3).log10() - lo) / (hi - lo) * h;
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"{:.0}\" font-size=\"13\">{title}</text>",
        top - 20.0
    );
    for d in (lo as i32)..=(hi as i32) {
        let v = 10f64.powi(d);
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{left}\" y=\"{:.1}\">{v}</text>",
            left + 40.0,
            y(v),
            left + w,
            y(v),
            y(v) + 4.0
        );
    }
    for &n in xs {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{n}</text>",
            x(n),
            top + h + 16.0
        );
    }
    for (i, (name, colour, v)) in series.iter().enumerate() {
        let pts: Vec<String> = xs
            .iter()
            .zip(v)
            .map(|(n, v)| format!("{:.1},{:.1}", x(*n), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{name}</text>",
            pts.join(" "),
            left + 45.0,
            top + 14.0 * (i as f64 + 1.0)
        );
    }
}

/// `scaling.svg`: latency and throughput against listeners; a period's latency and
/// GET_STATS against open files (medians over runs, log scales).
pub fn svg(points: &[Point]) -> String {
    let mut s = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1020\" height=\"320\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
    );
    let of = |what: &str| -> Vec<&Point> { points.iter().filter(|p| p.what == what).collect() };
    let (listeners, files) = (of(LISTENERS), of(FILES));
    let xs = |ps: &[&Point]| ps.iter().map(|p| p.n).collect::<Vec<_>>();
    let col = |ps: &[&Point], f: fn(&Point) -> f64| ps.iter().map(|p| f(p)).collect::<Vec<_>>();
    panel(
        &mut s,
        10.0,
        "latency (µs) against listeners",
        &xs(&listeners),
        &[
            ("p50", "#06c", col(&listeners, |p| p.p50_us.median)),
            ("p99", "#c30", col(&listeners, |p| p.p99_us.median)),
        ],
    );
    panel(
        &mut s,
        350.0,
        "deliveries/s against listeners",
        &xs(&listeners),
        &[("all listeners", "#080", col(&listeners, |p| p.per_s.median))],
    );
    panel(
        &mut s,
        690.0,
        "µs against open files",
        &xs(&files),
        &[
            ("period p50", "#06c", col(&files, |p| p.p50_us.median)),
            ("period p99", "#c30", col(&files, |p| p.p99_us.median)),
            ("GET_STATS", "#808", col(&files, |p| p.get_stats_us.median)),
        ],
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(what: &str, n: u32, run: u32, p50: u64, per_s: Option<f64>) -> Record {
        Record::Scale {
            what: what.into(),
            n,
            run,
            pcts_ns: [1, 2, 3, p50, 5, 6, 7_000, 8],
            per_s,
            get_stats_ns: (what == FILES).then_some(2_500),
        }
    }

    #[test]
    fn points_are_medians_over_runs_per_count() {
        let records = [
            scale(LISTENERS, 4, 1, 1_000, Some(10.0)),
            scale(LISTENERS, 4, 2, 3_000, Some(30.0)),
            scale(LISTENERS, 4, 3, 2_000, Some(20.0)),
            scale(FILES, 100, 1, 5_000, None),
            scale(OTHER_USER, 10_000, 1, 9_000, None),
            scale(OTHER_USER, 10_000, 2, 11_000, None),
            Record::Error("x".into()),
        ];
        let points = aggregate(&records);
        assert_eq!(points.len(), 3);
        let l = &points[0];
        assert_eq!((l.what, l.n, l.runs), (LISTENERS, 4, 3));
        assert_eq!(
            (l.p50_us.median, l.p50_us.min, l.p50_us.max),
            (2.0, 1.0, 3.0)
        );
        assert_eq!((l.p99_us.median, l.per_s.median), (7.0, 20.0));
        let f = &points[1];
        assert_eq!((f.what, f.n, f.get_stats_us.median), (FILES, 100, 2.5));
        let mut md = String::new();
        table(&mut md, &points);
        assert!(
            md.contains("| 4 | 2 (1 to 3) | 7 | 20 (10 to 30) |"),
            "{md}"
        );
        assert!(
            md.contains("| 100 | 5 (5 to 5) | 7 | 2.5 (2.5 to 2.5) |"),
            "{md}"
        );
        let o = &points[2];
        assert_eq!((o.what, o.n, o.runs), (OTHER_USER, 10_000, 2));
        assert!(
            md.contains("| another user's open files |")
                && md.contains("| 10000 | 10 (9 to 11) | 7 (7 to 7) |"),
            "{md}"
        );
        let svg = svg(&points);
        assert!(svg.contains("<polyline"));
        // Grid lines are horizontal, inside their panel.
        assert!(svg.contains("<line x1=\"50.0\" y1="), "{svg}");
    }
}
