//! The arithmetic of a benchmark, pure and unit-tested: each count's median run, the
//! recommendation, the table, the JSON report and the ranking of several mirrors (the SVG
//! chart is [`super::chart`]).

use std::fmt::Write as _;

use serde::Serialize;

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
