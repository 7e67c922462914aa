//! The arithmetic of a benchmark, pure and unit-tested: each count's median run, the
//! recommendation, the table, the JSON report and the SVG chart.

use std::fmt::Write as _;

use serde::Serialize;

use crate::ui::human_bytes;

/// A count is recommended when its throughput is within this fraction of the best one.
pub const RECOMMEND_WITHIN: f64 = 0.05;

/// Version of the JSON report's layout (bumped on any incompatible change).
pub const SCHEMA: u32 = 1;

pub(super) const MIB: f64 = 1048576.0;

/// One download of the benchmark.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub connections: usize,
    /// Bytes fetched in this run.
    pub bytes: u64,
    pub seconds: f64,
    /// From the start of the run to the first byte of file data.
    pub first_byte_seconds: Option<f64>,
    /// User + system CPU of this process during the run.
    pub cpu_seconds: f64,
    /// Control connections opened (reconnections included).
    pub connections_opened: usize,
}

impl Sample {
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9)
    }

    pub fn cpu_seconds_per_gib(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 / (1u64 << 30) as f64).max(1e-12)
    }
}

/// The median run of one connection count (by throughput), with all its runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub connections: usize,
    pub median: Sample,
    pub mib_per_second: f64,
    pub runs: Vec<Sample>,
}

/// The whole benchmark, as written to `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub schema: u32,
    pub ftpseg_version: &'static str,
    /// The URL with any password removed.
    pub url: String,
    pub bytes_per_run: u64,
    /// The bytes were received and dropped (`--discard`), not written to a temporary file.
    pub discard: bool,
    pub rows: Vec<Row>,
    /// Connections of the fastest median run.
    pub best: usize,
    /// The smallest count within [`RECOMMEND_WITHIN`] of the best throughput.
    pub recommended: usize,
}

/// Groups the samples by connection count (in the order the counts were first run) and picks
/// each count's median run by throughput (the lower middle for an even number of runs).
pub fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut order: Vec<usize> = Vec::new();
    for s in samples {
        if !order.contains(&s.connections) {
            order.push(s.connections);
        }
    }
    order
        .into_iter()
        .map(|n| {
            let mut runs: Vec<Sample> = samples
                .iter()
                .filter(|s| s.connections == n)
                .cloned()
                .collect();
            let mut sorted = runs.clone();
            sorted.sort_by(|a, b| a.bytes_per_second().total_cmp(&b.bytes_per_second()));
            let median = sorted[(sorted.len() - 1) / 2].clone();
            runs.shrink_to_fit();
            Row {
                connections: n,
                mib_per_second: median.bytes_per_second() / MIB,
                median,
                runs,
            }
        })
        .collect()
}

/// `(best, recommended)`: the count with the highest median throughput, and the smallest count
/// whose throughput is within [`RECOMMEND_WITHIN`] of it. `None` without rows.
pub fn recommend(rows: &[Row]) -> Option<(usize, usize)> {
    let best = rows
        .iter()
        .max_by(|a, b| a.mib_per_second.total_cmp(&b.mib_per_second))?;
    let good = rows
        .iter()
        .filter(|r| r.mib_per_second >= best.mib_per_second * (1.0 - RECOMMEND_WITHIN))
        .min_by_key(|r| r.connections)?;
    Some((best.connections, good.connections))
}

/// The table a person reads.
pub fn table(report: &Report) -> String {
    let mut t = String::new();
    let best = report
        .rows
        .iter()
        .map(|r| r.mib_per_second)
        .fold(0.0, f64::max);
    let _ = writeln!(
        t,
        "{:>11}  {:>9}  {:>9}  {:>10}  {:>7}  {:>9}  {:>7}",
        "connections", "time s", "MiB/s", "1st byte s", "CPU s", "CPU s/GiB", "of best"
    );
    for r in &report.rows {
        let m = &r.median;
        let _ = writeln!(
            t,
            "{:>11}  {:>9.2}  {:>9.1}  {:>10}  {:>7.2}  {:>9.2}  {:>6.0}%{}",
            r.connections,
            m.seconds,
            r.mib_per_second,
            m.first_byte_seconds
                .map_or("-".to_owned(), |s| format!("{s:.3}")),
            m.cpu_seconds,
            m.cpu_seconds_per_gib(),
            100.0 * r.mib_per_second / best.max(1e-12),
            if r.connections == report.recommended {
                "  <- recommended"
            } else {
                ""
            }
        );
    }
    let _ = write!(
        t,
        "recommended: -n {} (within {:.0}% of the best, {:.1} MiB/s at -n {})",
        report.recommended,
        RECOMMEND_WITHIN * 100.0,
        best,
        report.best
    );
    t
}

/// An SVG line chart of median throughput against connections (log2 axis), self-contained.
pub fn svg_chart(report: &Report) -> String {
    let pts: Vec<(f64, f64, usize)> = report
        .rows
        .iter()
        .map(|r| {
            (
                (r.connections as f64).log2(),
                r.mib_per_second,
                r.connections,
            )
        })
        .collect();
    let chart = Chart::fit(&pts);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">ftpseg bench: throughput against connections ({}{})</text>"#,
        W / 2.0,
        xml_escape(&human_bytes(report.bytes_per_run)),
        if report.discard { ", discarded" } else { "" }
    );
    chart.axes(&mut s, &pts);
    chart.series(&mut s, &pts, report.recommended);
    s.push_str("</svg>\n");
    s
}

/// The chart's size and margins (left, right, top, bottom), in pixels.
const W: f64 = 640.0;
const H: f64 = 400.0;
const L: f64 = 70.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 60.0;

/// The scales of the chart: log2(connections) across, MiB/s up.
struct Chart {
    xmin: f64,
    xspan: f64,
    ymax: f64,
}

impl Chart {
    /// Scales that fit the points `(log2 connections, MiB/s, connections)`.
    fn fit(pts: &[(f64, f64, usize)]) -> Chart {
        let xmin = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let xmax = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        let ymax = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
        let xspan = if xmax > xmin { xmax - xmin } else { 1.0 };
        Chart { xmin, xspan, ymax }
    }

    fn x(&self, v: f64) -> f64 {
        L + (v - self.xmin.min(v)) / self.xspan * (W - L - R)
    }

    fn y(&self, v: f64) -> f64 {
        H - B - v / self.ymax * (H - T - B)
    }

    /// The axes, their grid lines and labels.
    fn axes(&self, s: &mut String, pts: &[(f64, f64, usize)]) {
        let _ = writeln!(
            s,
            r#"<path d="M{L} {T} V{} H{}" fill="none" stroke="black"/>"#,
            H - B,
            W - R
        );
        for i in 0..=4 {
            let v = self.ymax / 1.1 * f64::from(i) / 4.0;
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text><path d="M{L} {:.1} H{}" stroke="#ddd"/>"##,
                L - 6.0,
                self.y(v) + 4.0,
                self.y(v),
                W - R
            );
        }
        for &(lx, _, n) in pts {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{n}</text>"#,
                self.x(lx),
                H - B + 18.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">connections</text>"#,
            (L + W - R) / 2.0,
            H - 16.0
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">MiB/s</text>"#,
            (T + H - B) / 2.0,
            (T + H - B) / 2.0
        );
    }

    /// The line and the points; the recommended count is marked.
    fn series(&self, s: &mut String, pts: &[(f64, f64, usize)], recommended: usize) {
        let path: Vec<String> = pts
            .iter()
            .map(|&(lx, v, _)| format!("{:.1},{:.1}", self.x(lx), self.y(v)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2"/>"##,
            path.join(" ")
        );
        for &(lx, v, n) in pts {
            let fill = if n == recommended {
                "#d1242f"
            } else {
                "#1f6feb"
            };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{fill}"><title>{n} connection(s): {v:.1} MiB/s</title></circle>"#,
                self.x(lx),
                self.y(v)
            );
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
