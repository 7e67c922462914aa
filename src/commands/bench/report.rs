//! The arithmetic of a benchmark, pure and unit-tested: each count's median run, the
//! recommendation, the table, the JSON report, the ranking of several mirrors and the SVG
//! chart (its round ticks and perfect-scaling lines).

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

/// One URL of `ftpseg bench URL1 URL2 ...`: its report, or why it could not be measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// The URL with any password removed.
    pub url: String,
    /// The report, or the one-line error that stopped this mirror's sweep.
    pub result: Result<Report, String>,
}

/// One line of the ranking of several mirrors (the JSON's `ranking[]`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ranked {
    /// The URL with any password removed.
    pub url: String,
    /// `false`: the mirror could not be measured (`error` says why; the numbers are `null`).
    pub ok: bool,
    /// The highest median throughput, and at which count.
    pub best_mib_per_second: Option<f64>,
    pub best_connections: Option<usize>,
    /// The median throughput of one connection (`null` when 1 was not among the counts).
    pub single_stream_mib_per_second: Option<f64>,
    /// The median time to the first byte of the 1-connection runs (of all runs without them).
    pub first_byte_seconds: Option<f64>,
    pub recommended: Option<usize>,
    pub error: Option<String>,
}

/// `--json` with several URLs: each measured mirror's [`Report`] and the ranking.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MirrorsReport {
    pub schema: u32,
    /// The mirrors that were measured, in the order given (a failed one is only in `ranking`).
    pub mirrors: Vec<Report>,
    /// Every URL, best first, the failed ones last.
    pub ranking: Vec<Ranked>,
}

/// The median of the values, the lower middle for an even number (as [`rows`]).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[(v.len() - 1) / 2])
}

/// The median time to first byte of a report's 1-connection runs, or of all its runs when it
/// has none.
pub fn first_byte(report: &Report) -> Option<f64> {
    let of = |single: bool| {
        median(
            report
                .rows
                .iter()
                .filter(|r| !single || r.connections == 1)
                .flat_map(|r| &r.runs)
                .filter_map(|s| s.first_byte_seconds)
                .collect(),
        )
    };
    of(true).or_else(|| of(false))
}

/// The median throughput of one connection, when 1 was measured.
pub fn single_stream(report: &Report) -> Option<f64> {
    report
        .rows
        .iter()
        .find(|r| r.connections == 1)
        .map(|r| r.mib_per_second)
}

/// MiB/s of one connection for the perfect-scaling line: the 1-connection median, or without
/// one the smallest count's median divided by that count.
pub fn per_stream(report: &Report) -> Option<f64> {
    single_stream(report).or_else(|| {
        let r = report.rows.iter().min_by_key(|r| r.connections)?;
        Some(r.mib_per_second / r.connections as f64)
    })
}

/// Every mirror's line of the ranking: the measured ones by best median throughput (highest
/// first, the order given on a tie), then the failed ones in the order given.
pub fn ranking(mirrors: &[Mirror]) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = mirrors
        .iter()
        .map(|m| match &m.result {
            Ok(r) => Ranked {
                url: m.url.clone(),
                ok: true,
                best_mib_per_second: r
                    .rows
                    .iter()
                    .find(|row| row.connections == r.best)
                    .map(|row| row.mib_per_second),
                best_connections: Some(r.best),
                single_stream_mib_per_second: single_stream(r),
                first_byte_seconds: first_byte(r),
                recommended: Some(r.recommended),
                error: None,
            },
            Err(e) => Ranked {
                url: m.url.clone(),
                ok: false,
                best_mib_per_second: None,
                best_connections: None,
                single_stream_mib_per_second: None,
                first_byte_seconds: None,
                recommended: None,
                error: Some(e.clone()),
            },
        })
        .collect();
    // Stable: ties keep the order given; a failed mirror sorts as below any rate.
    ranked.sort_by(|a, b| {
        let rate = |r: &Ranked| r.best_mib_per_second.unwrap_or(f64::NEG_INFINITY);
        b.ok.cmp(&a.ok).then(rate(b).total_cmp(&rate(a)))
    });
    ranked
}

/// The ranking as a table a person reads.
pub fn ranking_table(ranking: &[Ranked]) -> String {
    let width = ranking
        .iter()
        .map(|r| r.url.chars().count())
        .chain(["mirror".len()])
        .max()
        .unwrap_or(0);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:>4}  {:<width$}  {:>10}  {:>5}  {:>14}  {:>10}  {:>11}",
        "rank", "mirror", "best MiB/s", "at -n", "1 stream MiB/s", "1st byte s", "recommended"
    );
    let num = |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |v| format!("{v:.prec$}"));
    for (i, r) in ranking.iter().enumerate() {
        let rank = if r.ok {
            (i + 1).to_string()
        } else {
            "-".to_owned()
        };
        if let Some(e) = &r.error {
            let _ = writeln!(t, "{rank:>4}  {:<width$}  failed: {e}", r.url);
            continue;
        }
        let _ = writeln!(
            t,
            "{rank:>4}  {:<width$}  {:>10}  {:>5}  {:>14}  {:>10}  {:>11}",
            r.url,
            num(r.best_mib_per_second, 1),
            r.best_connections.map_or("-".to_owned(), |n| n.to_string()),
            num(r.single_stream_mib_per_second, 1),
            num(r.first_byte_seconds, 3),
            r.recommended.map_or("-".to_owned(), |n| format!("-n {n}")),
        );
    }
    t.pop();
    t
}

/// The download command that uses the measured mirrors in rank order: `-n` the sum of their
/// recommended counts, `--max-connections-per-host` the largest of them, the best mirror as the
/// URL. `None` when no mirror was measured.
pub fn suggestion(ranking: &[Ranked]) -> Option<String> {
    let ok: Vec<(&str, usize)> = ranking
        .iter()
        .filter_map(|r| Some((r.url.as_str(), r.recommended?)))
        .collect();
    let (first, rest) = ok.split_first()?;
    let total: usize = ok.iter().map(|m| m.1).sum();
    let per_host = ok.iter().map(|m| m.1).max()?;
    let mut cmd = format!("ftpseg -n {total} --max-connections-per-host {per_host}");
    for (url, _) in rest {
        cmd.push_str(" --mirror ");
        cmd.push_str(&shell_word(url));
    }
    cmd.push(' ');
    cmd.push_str(&shell_word(first.0));
    Some(cmd)
}

/// A word the shell reads back unchanged: as it is when it is made of safe characters, else in
/// single quotes.
fn shell_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/:._-@%+=,~[]".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

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
