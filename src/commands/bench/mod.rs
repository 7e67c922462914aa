//! `ftpseg bench URL`: how fast one server serves one file with 1, 2, 4, ... connections.
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
//! The arithmetic (medians, the recommendation, the table, the JSON, the chart) is pure and
//! unit-tested; only [`run`] does I/O.

mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Stop;
use crate::download::{self, Job};
use crate::error::Error;
use crate::storage::Storage;
use crate::ui::human_bytes;
use crate::ui::progress::{Mode, Progress};

use report::MIB;
pub use report::{Report, SCHEMA, Sample, recommend, rows, svg_chart, table};

/// What `ftpseg bench` is asked to do: one download, run with each count.
pub struct BenchPlan {
    /// The download of each run (its `connections` set per run): `--force --restart`, into
    /// a temporary file, or nowhere with [`Storage::Discard`]; `limit` is `--bytes`.
    pub job: Job,
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

/// `ftpseg bench`: runs the downloads and prints (and writes) the report.
pub async fn run(plan: BenchPlan, stop: &Stop) -> Result<(), Error> {
    let to_stdout = plan.json.as_deref() == Some(Path::new("-"));
    let say = |line: &str| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let job = &plan.job;
    let place = match job.storage {
        Storage::File => format!("temporary file in {}", plan.dir.display()),
        Storage::Discard => "bytes discarded (nothing stored)".to_owned(),
    };
    say(&format!(
        "ftpseg bench {}: {} run(s) per count, connections {:?}, {place}",
        job.url.redacted(),
        plan.repeat,
        plan.counts,
    ));
    let (samples, size) = measure(&plan, stop, &say).await?;
    let rows = rows(&samples);
    let (best, recommended) = recommend(&rows).expect("at least one run");
    let report = Report {
        schema: SCHEMA,
        ftpseg_version: env!("CARGO_PKG_VERSION"),
        url: job.url.redacted(),
        bytes_per_run: size,
        discard: job.storage == Storage::Discard,
        rows,
        best,
        recommended,
    };
    say("");
    say(&table(&report));
    if let Some(path) = &plan.json {
        let json = serde_json::to_string_pretty(&report).expect("report serializes") + "\n";
        if to_stdout {
            print!("{json}");
        } else {
            std::fs::write(path, json).map_err(|e| Error::io("cannot write", path, e))?;
        }
    }
    if let Some(path) = &plan.plot {
        std::fs::write(path, svg_chart(&report)).map_err(|e| Error::io("cannot write", path, e))?;
        say(&format!("chart: {}", path.display()));
    }
    Ok(())
}

/// Every run: each count once per repetition, a line each. Returns the samples and the
/// file's size.
async fn measure(
    plan: &BenchPlan,
    stop: &Stop,
    say: &impl Fn(&str),
) -> Result<(Vec<Sample>, u64), Error> {
    let job = &plan.job;
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
    Ok((samples, size))
}

#[cfg(test)]
mod tests;
