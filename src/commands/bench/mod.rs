//! `ftpseg bench URL [URL...]`: how fast one server serves one file with 1, 2, 4, ...
//! connections, and with several URLs (mirrors of one file) which of them to use.
//!
//! Each connection count downloads the file (or its first `--bytes`) once per repetition with
//! the normal engine, to a temporary file that is removed afterwards (or, with `--discard`, to
//! [`Storage::Discard`]: nothing is stored, so disk, page cache and hashing are out of the
//! measurement), and records the wall
//! time, the time to the first byte of data and the CPU time of this process. The result is a
//! table on standard output (the median run of each count), a recommendation (the smallest
//! count within [`report::RECOMMEND_WITHIN`] of the best throughput), and on request a JSON report
//! (`--json`, schema [`SCHEMA`]) and an SVG chart of throughput against connections (`--plot`).
//!
//! With several URLs each one is measured in turn, the same way; a mirror that fails (no
//! connection, login refused, ...) is recorded with its error and the next one runs. Then comes
//! a ranking (best throughput first, see [`ranking`]) and the download command that would use
//! the mirrors ([`suggestion`]); the JSON is a [`MirrorsReport`] and the chart has one line per
//! mirror.
//!
//! The arithmetic (medians, the recommendation, the table, the JSON, the chart) is pure and
//! unit-tested; only [`run`] does I/O.

mod chart;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Stop;
use crate::download::{self, Job};
use crate::error::Error;
use crate::storage::Storage;
use crate::ui::human_bytes;
use crate::ui::progress::{Mode, Progress};

pub use chart::svg_chart;
use report::MIB;
pub use report::{
    Mirror, MirrorsReport, Report, SCHEMA, Sample, ranking, ranking_table, recommend, rows,
    suggestion, table,
};

/// What `ftpseg bench` is asked to do: one download per URL, each run with each count.
pub struct BenchPlan {
    /// The download of each run of the first URL (its `connections` set per run): `--force
    /// --restart`, into a temporary file, or nowhere with [`Storage::Discard`]; `limit` is
    /// `--bytes`.
    pub job: Job,
    /// The same download from each further URL, in the order given (empty: one server).
    pub mirrors: Vec<Job>,
    /// The connection counts, in order.
    pub counts: Vec<usize>,
    /// Runs per count.
    pub repeat: u16,
    /// The folder of the temporary file (for the messages).
    pub dir: PathBuf,
    /// `--json FILE` (`-`: standard output, the table then on standard error).
    pub json: Option<PathBuf>,
    /// `--plot FILE.svg`.
    pub plot: Option<PathBuf>,
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

/// Prints a line on standard output, or on standard error when the JSON takes standard output.
struct Say {
    to_stderr: bool,
}

impl Say {
    fn line(&self, line: &str) {
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// `ftpseg bench`: runs the downloads and prints (and writes) the report.
pub async fn run(plan: BenchPlan, stop: &Stop) -> Result<(), Error> {
    let say = Say {
        to_stderr: plan.json.as_deref() == Some(Path::new("-")),
    };
    if !plan.mirrors.is_empty() {
        return run_mirrors(&plan, stop, &say).await;
    }
    let report = sweep(&plan, &plan.job, "", stop, &say).await?;
    say.line("");
    say.line(&table(&report));
    if let Some(path) = &plan.json {
        write_json(path, &report, &say)?;
    }
    if let Some(path) = &plan.plot {
        write_plot(path, std::slice::from_ref(&report), &say)?;
    }
    Ok(())
}

/// Several URLs: each one's sweep in turn, then the ranking and the suggested command. Fails
/// only when every mirror failed, with the first mirror's error (and its exit code).
async fn run_mirrors(plan: &BenchPlan, stop: &Stop, say: &Say) -> Result<(), Error> {
    let jobs: Vec<&Job> = std::iter::once(&plan.job).chain(&plan.mirrors).collect();
    let mut mirrors = Vec::new();
    let mut first_error = None;
    for (i, job) in jobs.iter().enumerate() {
        if i > 0 {
            say.line("");
        }
        let which = format!(" (mirror {} of {})", i + 1, jobs.len());
        let result = match sweep(plan, job, &which, stop, say).await {
            Ok(report) => {
                say.line("");
                say.line(&table(&report));
                Ok(report)
            }
            // Ctrl-C stops the whole benchmark, not one mirror.
            Err(e) if interrupted(&e, stop) => return Err(e),
            Err(e) => {
                let line = e.to_string().replace('\n', " ");
                say.line(&format!("  failed: {line}"));
                first_error.get_or_insert(e);
                Err(line)
            }
        };
        mirrors.push(Mirror {
            url: job.url.redacted(),
            result,
        });
    }
    let ranked = ranking(&mirrors);
    say.line("");
    say.line(&ranking_table(&ranked));
    if let Some(cmd) = suggestion(&ranked) {
        say.line(&format!("suggested: {cmd}"));
    }
    let reports: Vec<Report> = mirrors.into_iter().filter_map(|m| m.result.ok()).collect();
    if let Some(path) = &plan.json {
        let all = MirrorsReport {
            schema: SCHEMA,
            mirrors: reports.clone(),
            ranking: ranked,
        };
        write_json(path, &all, say)?;
    }
    match (&plan.plot, reports.is_empty()) {
        (Some(path), false) => write_plot(path, &reports, say)?,
        (Some(path), true) => say.line(&format!(
            "no chart ({}): no mirror was measured",
            path.display()
        )),
        (None, _) => {}
    }
    match first_error {
        Some(e) if reports.is_empty() => Err(e),
        _ => Ok(()),
    }
}

/// Whether the benchmark was stopped (Ctrl-C, SIGTERM) rather than the mirror failing.
fn interrupted(e: &Error, stop: &Stop) -> bool {
    matches!(e, Error::Interrupted(_) | Error::InterruptedDiscarding) || *stop.receiver().borrow()
}

/// `--json FILE` (or `-`).
fn write_json(path: &Path, value: &impl serde::Serialize, say: &Say) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(value).expect("report serializes") + "\n";
    if say.to_stderr {
        print!("{json}");
        Ok(())
    } else {
        std::fs::write(path, json).map_err(|e| Error::io("cannot write", path, e))
    }
}

/// `--plot FILE.svg`.
fn write_plot(path: &Path, reports: &[Report], say: &Say) -> Result<(), Error> {
    std::fs::write(path, svg_chart(reports)).map_err(|e| Error::io("cannot write", path, e))?;
    say.line(&format!("chart: {}", path.display()));
    Ok(())
}

/// One URL's sweep: its header line (`which` names the mirror among several), every run, and
/// its report.
async fn sweep(
    plan: &BenchPlan,
    job: &Job,
    which: &str,
    stop: &Stop,
    say: &Say,
) -> Result<Report, Error> {
    let place = match job.storage {
        Storage::File => format!("temporary file in {}", plan.dir.display()),
        Storage::Discard => "bytes discarded (nothing stored)".to_owned(),
    };
    say.line(&format!(
        "ftpseg bench {}{which}: {} run(s) per count, connections {:?}, {place}",
        job.url.redacted(),
        plan.repeat,
        plan.counts,
    ));
    let (samples, size) = measure(plan, job, stop, say).await?;
    let rows = rows(&samples);
    let (best, recommended) = recommend(&rows).expect("at least one run");
    Ok(Report {
        schema: SCHEMA,
        ftpseg_version: env!("CARGO_PKG_VERSION"),
        url: job.url.redacted(),
        bytes_per_run: size,
        discard: job.storage == Storage::Discard,
        rows,
        best,
        recommended,
    })
}

/// Every run: each count once per repetition, a line each. Returns the samples and the
/// file's size.
async fn measure(
    plan: &BenchPlan,
    job: &Job,
    stop: &Stop,
    say: &Say,
) -> Result<(Vec<Sample>, u64), Error> {
    let mut samples = Vec::new();
    let mut size = 0;
    for rep in 0..plan.repeat {
        for &n in &plan.counts {
            let mut run_job = job.clone();
            run_job.connections = n;
            let mut progress = Progress::new(Mode::Quiet);
            let cpu0 = cpu_seconds();
            let result = download::download(&run_job, &mut progress, stop.receiver()).await;
            let cpu = cpu_seconds() - cpu0;
            if job.storage == Storage::File {
                clean(&job.output);
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
            say.line(&format!(
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
    Ok((samples, size))
}

#[cfg(test)]
mod tests;
