//! The SVG chart of a benchmark, pure and unit-tested: throughput against connections, one
//! line per mirror, round ticks, a dashed perfect-scaling line from each mirror's single
//! stream, the recommended point labelled.

use std::fmt::Write as _;

use super::report::{Report, per_stream};
use crate::ui::human_bytes;

/// The round steps of an axis: 1, 2, 2.5 and 5 times a power of ten.
const STEPS: [f64; 4] = [1.0, 2.0, 2.5, 5.0];

/// The y-axis ticks for values up to `max`: 0 and the multiples of the finest round step
/// (1, 2, 2.5 or 5 x 10^k) that covers `max` in at most 6 steps, so 3 to 7 ticks in all, the
/// last one at or above `max`. A `max` that is not positive and finite counts as 1.
pub fn round_ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    // Start with steps too fine for sure (more than 60 of them); each candidate is at most
    // twice the previous one, so the first that fits takes at least 3 steps.
    let mut k = (max / 6.0).log10().floor() as i32 - 1;
    loop {
        for m in STEPS {
            // Integer multiples over a power of ten stay exact decimals (0.3, not 0.30000000000000004).
            let tick = |i: usize| {
                if k >= 0 {
                    i as f64 * m * 10f64.powi(k)
                } else {
                    i as f64 * m / 10f64.powi(-k)
                }
            };
            let n = (max / tick(1) - 1e-9).ceil().max(1.0) as usize;
            if n <= 6 {
                return (0..=n).map(tick).collect();
            }
        }
        k += 1;
    }
}

/// A tick's label with no more decimals than it needs (`0`, `2.5`, `0.25`, `20`).
pub fn tick_label(v: f64) -> String {
    (0..10)
        .map(|d| format!("{v:.d$}"))
        .find(|s| {
            s.parse::<f64>()
                .is_ok_and(|p| (p - v).abs() <= v.abs() * 1e-9)
        })
        .unwrap_or_else(|| format!("{v}"))
}

/// The perfect-scaling reference of one mirror: `n x per_stream` MiB/s for `n` from `from` to
/// `to` connections, as `(n, MiB/s)` points close enough on the log2 axis (8 per doubling) for
/// a polyline, clipped at `ymax`: the line ends where it leaves the plot (no point when it
/// starts above it, one when it ends where it starts).
pub fn scaling_line(per_stream: f64, from: f64, to: f64, ymax: f64) -> Vec<(f64, f64)> {
    if !(per_stream > 0.0 && from > 0.0 && to >= from) {
        return Vec::new();
    }
    let end = to.min(ymax / per_stream);
    if end < from {
        return Vec::new();
    }
    let (x0, x1) = (from.log2(), end.log2());
    let segments = ((x1 - x0) * 8.0).ceil() as usize;
    (0..=segments)
        .map(|i| {
            let n = if i == segments {
                end
            } else {
                (x0 + (x1 - x0) * i as f64 / segments as f64).exp2()
            };
            (n, (n * per_stream).min(ymax))
        })
        .collect()
}

/// The colours of the mirrors' lines, in order (repeated past the eighth).
const COLOURS: [&str; 8] = [
    "#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7d8c", "#57606a",
];

/// An SVG line chart of median throughput against connections (log2 axis), self-contained:
/// one line per report in its own colour, with its perfect-scaling line dashed, its
/// recommended point ringed and labelled, and a legend.
pub fn svg_chart(reports: &[Report]) -> String {
    let series: Vec<Vec<(f64, usize)>> = reports
        .iter()
        .map(|r| {
            r.rows
                .iter()
                .map(|r| (r.mib_per_second, r.connections))
                .collect()
        })
        .collect();
    let chart = Chart::fit(&series, reports.len() + 1);
    let mut s = String::new();
    let (w, h) = (W, chart.height);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let size = match reports.split_first() {
        Some((first, rest)) if rest.iter().all(|r| r.bytes_per_run == first.bytes_per_run) => {
            human_bytes(first.bytes_per_run)
        }
        _ => "bytes per run vary".to_owned(),
    };
    let discard = reports.first().is_some_and(|r| r.discard);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">ftpseg bench: throughput against connections ({}{})</text>"#,
        W / 2.0,
        xml_escape(&size),
        if discard { ", discarded" } else { "" }
    );
    chart.axes(&mut s);
    for (i, (report, pts)) in reports.iter().zip(&series).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        if let Some(one) = per_stream(report) {
            chart.reference(&mut s, one, colour);
        }
        chart.series(&mut s, pts, report.recommended, colour);
    }
    chart.legend(&mut s, reports);
    s.push_str("</svg>\n");
    s
}

/// The chart's width and margins (left, right, top), the plot's height, and a legend line's
/// height, in pixels.
const W: f64 = 640.0;
const L: f64 = 70.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const PLOT_H: f64 = 300.0;
const LINE: f64 = 18.0;

/// The scales of the chart: log2(connections) across, MiB/s up to the last round tick.
struct Chart {
    /// Every measured count, once, in order.
    counts: Vec<usize>,
    xmin: f64,
    xspan: f64,
    ticks: Vec<f64>,
    ymax: f64,
    height: f64,
}

impl Chart {
    /// Scales that fit every series of `(MiB/s, connections)`, and room for `legend` lines.
    fn fit(series: &[Vec<(f64, usize)>], legend: usize) -> Chart {
        let mut counts: Vec<usize> = series.iter().flatten().map(|p| p.1).collect();
        counts.sort_unstable();
        counts.dedup();
        let log = |n: usize| (n.max(1) as f64).log2();
        let xmin = counts.first().map_or(0.0, |&n| log(n));
        let xmax = counts.last().map_or(0.0, |&n| log(n));
        let top = series.iter().flatten().map(|p| p.0).fold(0.0, f64::max);
        let ticks = round_ticks(top);
        let ymax = ticks.last().copied().unwrap_or(1.0);
        let xspan = if xmax > xmin { xmax - xmin } else { 1.0 };
        Chart {
            counts,
            xmin,
            xspan,
            ticks,
            ymax,
            height: T + PLOT_H + 56.0 + LINE * legend as f64,
        }
    }

    /// Across, for a count of connections.
    fn x(&self, n: f64) -> f64 {
        let v = n.max(1e-9).log2();
        L + (v - self.xmin.min(v)) / self.xspan * (W - L - R)
    }

    /// Up, for MiB/s.
    fn y(&self, v: f64) -> f64 {
        T + PLOT_H - v / self.ymax * PLOT_H
    }

    /// The axes, the grid lines at the round ticks, the measured counts, the axis names.
    fn axes(&self, s: &mut String) {
        let bottom = T + PLOT_H;
        let _ = writeln!(
            s,
            r#"<path d="M{L} {T} V{bottom} H{}" fill="none" stroke="black"/>"#,
            W - R
        );
        for &v in &self.ticks {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{:.1}" text-anchor="end" class="ytick">{}</text><path d="M{L} {:.1} H{}" stroke="#ddd"/>"##,
                L - 6.0,
                self.y(v) + 4.0,
                tick_label(v),
                self.y(v),
                W - R
            );
        }
        for &n in &self.counts {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle" class="xtick">{n}</text>"#,
                self.x(n as f64),
                bottom + 18.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">connections</text>"#,
            (L + W - R) / 2.0,
            bottom + 38.0
        );
        let mid = T + PLOT_H / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="18" y="{mid}" text-anchor="middle" transform="rotate(-90 18 {mid})">MiB/s</text>"#,
        );
    }

    /// The dashed line of perfect scaling from `per_stream` MiB/s a connection, across the
    /// measured counts, clipped to the plot.
    fn reference(&self, s: &mut String, per_stream: f64, colour: &str) {
        let (Some(&from), Some(&to)) = (self.counts.first(), self.counts.last()) else {
            return;
        };
        let pts = scaling_line(per_stream, from as f64, to as f64, self.ymax);
        let d: Vec<String> = pts
            .iter()
            .enumerate()
            .map(|(i, &(n, v))| {
                let op = if i == 0 { 'M' } else { 'L' };
                format!("{op}{:.1} {:.1}", self.x(n), self.y(v))
            })
            .collect();
        if d.len() > 1 {
            let _ = writeln!(
                s,
                r#"<path class="scaling" d="{}" fill="none" stroke="{colour}" stroke-opacity="0.6" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
                d.join(" ")
            );
        }
    }

    /// One mirror's line and points; its recommended count is ringed and labelled.
    fn series(&self, s: &mut String, pts: &[(f64, usize)], recommended: usize, colour: &str) {
        let path: Vec<String> = pts
            .iter()
            .map(|&(v, n)| format!("{:.1},{:.1}", self.x(n as f64), self.y(v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline class="mirror" points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for &(v, n) in pts {
            let (x, y) = (self.x(n as f64), self.y(v));
            let title = format!("<title>{n} connection(s): {v:.1} MiB/s</title>");
            if n == recommended {
                let _ = writeln!(
                    s,
                    r#"<circle class="recommended" cx="{x:.1}" cy="{y:.1}" r="6" fill="{colour}" stroke="black" stroke-width="2">{title}</circle>"#
                );
                let _ = writeln!(
                    s,
                    r#"<text class="recommended-label" x="{x:.1}" y="{:.1}" text-anchor="middle" fill="{colour}" font-weight="bold">-n {n}</text>"#,
                    (y - 11.0).max(T - 4.0)
                );
            } else {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{colour}">{title}</circle>"#
                );
            }
        }
    }

    /// Under the axis: each mirror's colour and URL, then what the dashed lines are.
    fn legend(&self, s: &mut String, reports: &[Report]) {
        let top = T + PLOT_H + 56.0;
        let line = |s: &mut String, i: usize, colour: &str, dash: &str, text: &str| {
            let y = top + LINE * i as f64;
            let _ = writeln!(
                s,
                r#"<path d="M{L} {:.1} h24" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{:.1}" class="legend">{}</text>"#,
                y - 4.0,
                L + 30.0,
                y,
                xml_escape(text)
            );
        };
        for (i, r) in reports.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            line(
                s,
                i,
                colour,
                "",
                &format!("{} (recommended -n {})", r.url, r.recommended),
            );
        }
        line(
            s,
            reports.len(),
            "#57606a",
            r#" stroke-dasharray="6 4""#,
            "dashed: perfect scaling, n x the single-stream rate",
        );
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
