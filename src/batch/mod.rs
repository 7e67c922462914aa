//! Many files in one run: several URLs, `-i FILE` (one URL a line), globs in the last path
//! component, `-r` folders (MLSD, with LIST and NLST as fallbacks), all downloaded into `-d DIR`
//! with safe local names, `-j` files at once, one connection budget per server shared by every
//! file in flight (`--max-connections-per-host`, [`crate::ftp::pool`]), logged-in sessions reused
//! across files, checksums (`--checksum`, `--checksum-file FILE|auto`, `--verify-remote`), and
//! one summary at the end (`--json` for scripts, [`crate::ui::events`]).
//!
//! The batch is given plain [`Settings`] and a [`JobFor`] that builds each server's download
//! job (the command line's second stage implements it); it never sees clap. The parts, by job:
//! `inputs` (URLs, `-i`, the checksum file, folder URLs), `walk` (globs and folders into
//! files, on the server's sessions), `run` (the downloads, `-j` at a time, and the skip
//! decision), `checks` (checksums and the server's hash), `report` (each file's end, the
//! summary, the exit code). A file that fails is reported with its reason and the others go on; the
//! exit code is non-zero when any file failed. Design: docs/bulk.md.

mod checks;
mod inputs;
mod report;
mod run;
mod walk;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::download::{Job, Outcome};
use crate::error::Error;
use crate::ftp::pool::HostPool;
use crate::ftp::url::FtpUrl;
use crate::integrity::checksum::{Expected, SumLine};
use crate::ui::events::Events;
use crate::ui::progress::Mode;

pub use inputs::Inputs;

/// What a batch is asked to do, checked (built from the command line, but free of clap).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The URLs given on the command line, in order.
    pub urls: Vec<String>,
    /// `-i FILE` (`-` for standard input).
    pub input_file: Option<String>,
    /// A Metalink file (`--metalink FILE`, or `FILE.meta4` as the URL): its files, mirrors
    /// and hashes.
    pub metalink: Option<PathBuf>,
    /// `-o`: the output of the single file.
    pub output: Option<PathBuf>,
    /// `-d`: the folder files go into [default: the current folder].
    pub dir: Option<PathBuf>,
    /// `-r`: folders with everything in them.
    pub recursive: bool,
    /// `-j`: files downloaded at once.
    pub jobs: usize,
    /// Connections to one server at once, across the files in flight.
    pub budget: usize,
    /// `--checksum` of the single file.
    pub checksum: Option<Expected>,
    /// `--checksum-file`.
    pub sums: Sums,
    /// `--verify-remote`.
    pub verify_remote: bool,
    /// `--json`: events on standard output, no human summary.
    pub json: bool,
    /// `-q`: errors only.
    pub quiet: bool,
    /// `-v`: each file's notes too.
    pub verbose: bool,
    /// The progress display of each download.
    pub mode: Mode,
}

/// Where expected checksums come from (`--checksum-file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sums {
    None,
    /// A local file of checksum lines.
    File(String),
    /// `auto`: a checksum file in each file's folder on the server.
    Auto,
}

/// Builds the download job of one URL with the run's options. `raw` is a file URL, or a
/// folder URL ending in `/` (then only its server, login and options count, as the template
/// of the server's files); `output` the local path [default: the remote file's name]. The
/// command line's second stage implements it, so the batch never sees the arguments.
pub trait JobFor: Sync {
    fn job_for(&self, raw: &str, output: Option<PathBuf>) -> Result<Job, Error>;

    /// Another server of a file of the batch (a tab-separated URL of its `-i` line).
    fn mirror_for(&self, raw: &str) -> Result<crate::download::Mirror, Error> {
        let job = self.job_for(raw, Some(PathBuf::from("unused")))?;
        Ok(crate::download::Mirror {
            url: job.url,
            creds: job.creds,
            verify: job.verify,
        })
    }

    /// The connection budget of the servers of `host`, when it has its own (a config file's
    /// host table); else the batch's.
    fn budget_for(&self, _host: &str) -> Option<usize> {
        None
    }
}

/// A checksum file: its name and its lines.
type SumsFile = (String, Vec<SumLine>);

/// One file to download.
#[derive(Clone, Debug)]
struct FileJob {
    /// Index of the server ([`Ctx::hosts`]).
    host: usize,
    url: FtpUrl,
    output: PathBuf,
    /// The remote folder (relative to the login folder, `""` for it) and the file's name.
    folder: String,
    name: String,
    /// From the listing, when it said.
    size: Option<u64>,
    mdtm: Option<String>,
    /// Its other servers.
    mirrors: Vec<crate::download::Mirror>,
    /// A Metalink's piece hashes of it, and its size there.
    pieces: Option<crate::integrity::metalink::Pieces>,
    expected_size: Option<u64>,
}

/// A server of the batch: its job template (credentials, options) and its budget.
struct Host {
    template: Job,
    pool: Arc<HostPool>,
    /// The login folder (PWD of the first session), to come back to after a listing.
    home: tokio::sync::Mutex<Option<String>>,
}

/// What every step of the run shares.
struct Ctx {
    hosts: Vec<Host>,
    events: Events,
    mode: Mode,
    quiet: bool,
    verbose: bool,
    checksum: Option<Expected>,
    /// `--checksum-file FILE`: its name and lines.
    sums: Option<SumsFile>,
    sums_auto: bool,
    /// `--checksum-file auto`: per (host, folder), the checksum files found there.
    auto_sums: tokio::sync::Mutex<HashMap<(usize, String), Vec<SumsFile>>>,
    verify_remote: bool,
    stop: watch::Receiver<bool>,
}

/// How one file ended.
enum FileEnd {
    Done {
        outcome: Outcome,
        checks: Vec<checks::Check>,
    },
    Skipped(String),
    Failed(Error),
}

/// One line of the result: the input's label, the local path (when known), how it ended.
type Ended = (String, Option<PathBuf>, FileEnd);

/// Runs a batch over `inputs` (read first, [`Inputs::read`]); `stop` turning true stops every
/// download after its final checkpoint. The summary is printed (or emitted as JSON); the
/// error, if any, says how many files failed and carries the batch's exit code.
pub async fn run(
    settings: &Settings,
    inputs: Inputs,
    jobs: &dyn JobFor,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let inputs_started = inputs.started;
    let base = settings.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&base).map_err(|e| Error::io("cannot create the folder", &base, e))?;
    let mut ctx = Ctx {
        hosts: Vec::new(),
        events: Events::new(settings.json),
        mode: settings.mode,
        quiet: settings.quiet,
        verbose: settings.verbose,
        checksum: settings.checksum.clone(),
        sums: inputs.sums,
        sums_auto: settings.sums == Sums::Auto,
        auto_sums: tokio::sync::Mutex::new(HashMap::new()),
        verify_remote: settings.verify_remote,
        stop,
    };
    let mut planner = walk::Planner::new(&mut ctx, settings, jobs, &base);
    let (files, mut results) = planner.expand_all(&inputs.list).await;
    let files = unique_outputs(files, &mut results);
    if ctx.checksum.is_some() && files.len() + results.len() > 1 {
        return Err(Error::Usage(
            "--checksum is for one file; for several use --checksum-file".into(),
        ));
    }
    for (label, path, end) in &results {
        report::file_end(&ctx, label, path.as_deref(), end);
    }
    let ctx = Arc::new(ctx);
    results.extend(run::download_all(&ctx, files, settings.jobs).await);
    let reused: u64 = ctx.hosts.iter().map(|h| h.pool.reused()).sum();
    for h in &ctx.hosts {
        h.pool.close_idle().await;
    }
    report::summary(
        &ctx,
        &results,
        inputs_started.elapsed(),
        reused,
        settings.json,
    )
}

/// Drops the files whose output another file of the batch already has (each fails instead:
/// nothing is clobbered).
fn unique_outputs(files: Vec<FileJob>, results: &mut Vec<Ended>) -> Vec<FileJob> {
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    for f in files {
        if seen.insert(f.output.clone()) {
            unique.push(f);
        } else {
            let e = Error::Usage(format!(
                "{} is the output of another file of this batch; give this one another name",
                f.output.display()
            ));
            results.push((f.url.redacted(), Some(f.output.clone()), FileEnd::Failed(e)));
        }
    }
    unique
}

#[cfg(test)]
mod tests;
