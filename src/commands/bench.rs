//! `ftpseg bench URL`: how fast one server serves one file with 1, 2, 4, ... connections.
//!
//! Each connection count downloads the file (or its first `--bytes`) once per repetition with
//! the normal engine, to a temporary file that is removed afterwards (or, with `--discard`, to
//! [`Storage::Discard`]: nothing is stored, so disk, page cache and hashing are out of the
//! measurement), and records the wall
//! time, the time to the first byte of data and the CPU time of this process. The result is a
//! table on standard output (the median run of each count), a recommendation (the smallest
//! count within [`RECOMMEND_WITHIN`] of the best throughput), and on request a JSON report
//! (`--json`, schema [`SCHEMA`]) and an SVG chart of throughput against connections (`--plot`).
//!
//! The arithmetic (medians, the recommendation, the table, the JSON, the chart) is pure and
//! unit-tested; only [`run`] does I/O.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cli::{BenchArgs, Cli, download_with_ctrl_c, job_from_args};
use crate::error::Error;
use crate::storage::Storage;
use crate::ui::human_bytes;
use crate::ui::progress::{Mode, Progress};

/// A count is recommended when its throughput is within this fraction of the best one.
pub const RECOMMEND_WITHIN: f64 = 0.05;

/// Version of the JSON report's layout (bumped on any incompatible change).
pub const SCHEMA: u32 = 1;

const MIB: f64 = 1048576.0;

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
        "recommended: -n {} (the fewest connections within {:.0}% of the best, {} connection(s) \
         at {:.1} MiB/s)",
        report.recommended,
        RECOMMEND_WITHIN * 100.0,
        report.best,
        best
    );
    t
}

/// An SVG line chart of median throughput against connections (log2 axis), self-contained.
pub fn svg_chart(report: &Report) -> String {
    const W: f64 = 640.0;
    const H: f64 = 400.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const B: f64 = 60.0;
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
    let xmin = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let xmax = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let ymax = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let xspan = if xmax > xmin { xmax - xmin } else { 1.0 };
    let x = |v: f64| L + (v - xmin.min(v)) / xspan * (W - L - R);
    let y = |v: f64| H - B - v / ymax * (H - T - B);
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
    // Axes.
    let _ = writeln!(
        s,
        r#"<path d="M{L} {T} V{} H{}" fill="none" stroke="black"/>"#,
        H - B,
        W - R
    );
    for i in 0..=4 {
        let v = ymax / 1.1 * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text><path d="M{L} {:.1} H{}" stroke="#ddd"/>"##,
            L - 6.0,
            y(v) + 4.0,
            y(v),
            W - R
        );
    }
    for &(lx, _, n) in &pts {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{n}</text>"#,
            x(lx),
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
    // The line and the points; the recommended count is marked.
    let path: Vec<String> = pts
        .iter()
        .map(|&(lx, v, _)| format!("{:.1},{:.1}", x(lx), y(v)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2"/>"##,
        path.join(" ")
    );
    for &(lx, v, n) in &pts {
        let fill = if n == report.recommended {
            "#d1242f"
        } else {
            "#1f6feb"
        };
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{fill}"><title>{n} connection(s): {v:.1} MiB/s</title></circle>"#,
            x(lx),
            y(v)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Removes a run's output and its leftovers (after a failed or interrupted run).
fn clean(output: &Path) {
    let _ = std::fs::remove_file(output);
    let _ = std::fs::remove_file(crate::storage::part_path(output));
    let _ = std::fs::remove_file(crate::storage::manifest::Manifest::path_for(output));
}

/// The arguments of a normal download that the benchmark's runs share.
fn base_argv(args: &BenchArgs, output: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec![
        "ftpseg".into(),
        "-q".into(),
        "--force".into(),
        "--restart".into(),
        "-o".into(),
        output.into(),
    ];
    if args.ftps {
        v.push("--ftps".into());
    }
    if args.insecure {
        v.push("--insecure".into());
    }
    if let Some(ca) = &args.ca_file {
        v.push("--ca-file".into());
        v.push(ca.into());
    }
    if let Some(netrc) = &args.netrc_file {
        v.push("--netrc-file".into());
        v.push(netrc.into());
    }
    if args.no_netrc {
        v.push("--no-netrc".into());
    }
    if args.use_pasv_address {
        v.push("--use-pasv-address".into());
    }
    if args.active {
        v.push("--active".into());
    }
    v.push("--".into());
    v.push(args.url.clone().into());
    v
}

/// `ftpseg bench`: runs the downloads and prints (and writes) the report.
pub async fn run(args: BenchArgs) -> Result<(), Error> {
    use clap::Parser;
    if args.connections.is_empty() {
        return Err(Error::Usage(
            "--connections needs at least one count".into(),
        ));
    }
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let storage = if args.discard {
        Storage::Discard
    } else {
        Storage::File
    };
    if storage == Storage::File && !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--dir {}: no such folder; give an existing folder for the temporary downloads",
            dir.display()
        )));
    }
    // With --discard the engine never creates this file (nor its .part or manifest).
    let output: PathBuf = dir.join(format!("ftpseg-bench-{}.tmp", std::process::id()));
    let cli = Cli::try_parse_from(base_argv(&args, &output))
        .map_err(|e| Error::Usage(e.to_string().lines().next().unwrap_or("").to_owned()))?;
    let mut job = job_from_args(&cli.get)?;
    job.limit = args.bytes;
    job.storage = storage;
    let to_stdout = args.json.as_deref() == Some(Path::new("-"));
    let say = |line: &str| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let place = match storage {
        Storage::File => format!("temporary file in {}", dir.display()),
        Storage::Discard => "bytes discarded (nothing stored)".to_owned(),
    };
    say(&format!(
        "ftpseg bench {}: {} run(s) per count, connections {:?}, {place}",
        job.url.redacted(),
        args.repeat,
        args.connections,
    ));

    let mut samples = Vec::new();
    let mut size = 0;
    for rep in 0..args.repeat {
        for &n in &args.connections {
            let mut run_job = job.clone();
            run_job.connections = n;
            let mut progress = Progress::new(Mode::Quiet);
            let cpu0 = cpu_seconds();
            let result = download_with_ctrl_c(&run_job, &mut progress).await;
            let cpu = cpu_seconds() - cpu0;
            if storage == Storage::File {
                clean(&output);
            }
            let outcome = result.map_err(|e| e.scrub(&job.creds.password))?;
            size = outcome.size;
            let sample = Sample {
                connections: n,
                bytes: outcome.fetched,
                seconds: outcome.elapsed.as_secs_f64(),
                first_byte_seconds: outcome.first_byte.map(|d| d.as_secs_f64()),
                cpu_seconds: cpu,
                connections_opened: outcome.connections,
            };
            say(&format!(
                "  run {}: {n:>2} connection(s): {:.1} MiB/s ({} in {:.2} s)",
                rep + 1,
                sample.bytes_per_second() / MIB,
                human_bytes(sample.bytes),
                sample.seconds
            ));
            samples.push(sample);
            // Let the server notice the closed sessions before the next run (per-IP limits).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let rows = rows(&samples);
    let (best, recommended) = recommend(&rows).expect("at least one run");
    let report = Report {
        schema: SCHEMA,
        ftpseg_version: env!("CARGO_PKG_VERSION"),
        url: job.url.redacted(),
        bytes_per_run: size,
        discard: args.discard,
        rows,
        best,
        recommended,
    };
    say("");
    say(&table(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("report serializes") + "\n";
        if to_stdout {
            print!("{json}");
        } else {
            std::fs::write(path, json).map_err(|e| Error::io("cannot write", path, e))?;
        }
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, svg_chart(&report)).map_err(|e| Error::io("cannot write", path, e))?;
        say(&format!("chart: {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, mib_s: f64) -> Sample {
        Sample {
            connections: n,
            bytes: 1 << 30,
            seconds: 1024.0 / mib_s,
            first_byte_seconds: Some(0.01),
            cpu_seconds: 1.0,
            connections_opened: n,
        }
    }

    fn report(samples: &[Sample]) -> Report {
        let rows = rows(samples);
        let (best, recommended) = recommend(&rows).unwrap();
        Report {
            schema: SCHEMA,
            ftpseg_version: "test",
            url: "ftp://h/f".into(),
            bytes_per_run: 1 << 30,
            discard: false,
            rows,
            best,
            recommended,
        }
    }

    #[test]
    fn recommends_the_fewest_connections_near_the_best() {
        let r = rows(&[
            sample(1, 20.0),
            sample(2, 40.0),
            sample(4, 78.0),
            sample(8, 80.0),
            sample(16, 79.0),
        ]);
        assert_eq!(recommend(&r), Some((8, 4)));
        // A flat curve: one connection is enough.
        let r = rows(&[sample(1, 100.0), sample(4, 103.0)]);
        assert_eq!(recommend(&r), Some((4, 1)));
        assert_eq!(recommend(&[]), None);
    }

    #[test]
    fn median_run_per_count_in_first_seen_order() {
        let r = rows(&[
            sample(4, 50.0),
            sample(1, 10.0),
            sample(4, 70.0),
            sample(1, 12.0),
            sample(4, 60.0),
            sample(1, 11.0),
        ]);
        assert_eq!(r.iter().map(|r| r.connections).collect::<Vec<_>>(), [4, 1]);
        assert!((r[0].mib_per_second - 60.0).abs() < 1e-9);
        assert!((r[1].mib_per_second - 11.0).abs() < 1e-9);
        assert_eq!(r[0].runs.len(), 3);
    }

    #[test]
    fn table_json_and_chart_carry_every_count() {
        let rep = report(&[sample(1, 20.0), sample(2, 39.0), sample(4, 41.0)]);
        let t = table(&rep);
        assert_eq!(t.lines().count(), 5, "{t}");
        assert!(t.contains("recommended: -n 2"), "{t}");
        let json: serde_json::Value = serde_json::to_value(&rep).unwrap();
        assert_eq!(json["recommended"], 2);
        assert_eq!(json["rows"].as_array().unwrap().len(), 3);
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["discard"], false);
        let svg = svg_chart(&rep);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(
            svg.matches("#d1242f").count(),
            1,
            "the recommended point is marked"
        );
        // One count only: no division by zero in the axis.
        let one = svg_chart(&report(&[sample(8, 10.0)]));
        assert!(!one.contains("NaN") && !one.contains("inf"), "{one}");
    }
}
