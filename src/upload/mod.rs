//! `ftpseg put`: resumable, atomic, verified uploads (docs/upload.md).
//!
//! One file goes up like this:
//! 1. Connect and probe as downloads do. Refuse a remote final name that exists (`--force`
//!    replaces it). Load the upload manifest `<local>.ftpseg-put` if there is one.
//! 2. Resume or start: a single stream resumes from the remote `SIZE` of the temporary name
//!    (what actually arrived), after checking the local bytes below it still hash as recorded;
//!    parallel pieces resume from the manifest's acknowledged pieces (a piece counts only once
//!    its `STOR` got `226`). A fresh upload hashes the local file (BLAKE3 per chunk), decides
//!    single or parallel (parallel only where a probe on a scratch file proved that `REST n` +
//!    `STOR` writes in place, also past the end, without truncating), and saves the manifest
//!    before the first byte is sent.
//! 3. Send: one stream (`REST n` + `STOR`, or `APPE` where REST+STOR is refused), or N
//!    connections taking pieces from a queue. Failures reconnect with backoff, as downloads do.
//! 4. Verify: remote `SIZE` equals the local size, and the server's hash (`HASH`, `XSHA256`,
//!    `XMD5`, `SITE MD5`) equals ours where the server offers one. A mismatch keeps the
//!    temporary file and fails.
//! 5. `RNFR`/`RNTO` to the final name (not with `--no-temp`), remove the manifest.
//!
//! The pure parts (names, piece plan, resume decisions, the manifest) are separate from the
//! I/O and unit tested (`tests.rs`).
//!
//! Where each part lives: `plan` (pure: names, pieces, resume decisions), `manifest` (the
//! `<local>.ftpseg-put` record), `inputs` (which files go where), `file` (the run for one
//! file, steps 1-5), `probe` (can the server take parallel pieces), `single` and `parallel`
//! (sending, over `send`'s one-range step), `verify` (what the server holds), `local` (the
//! local file's state and hashes), `connect` (sessions, retries, the refused-step error).

mod connect;
mod file;
mod inputs;
mod local;
mod manifest;
mod parallel;
mod plan;
mod probe;
mod send;
mod single;
#[cfg(test)]
mod tests;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Error;
use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, Timeouts, Verify};
use crate::ui::progress::Progress;
use crate::ui::{connections, human_bytes, human_elapsed};

pub use inputs::files_to_upload;
pub use manifest::manifest_path;
pub use plan::DEFAULT_TEMP_SUFFIX;

/// What one `ftpseg put` run is asked to do.
#[derive(Clone, Debug)]
pub struct PutJob {
    /// The server, login, and the remote path: a file, or a folder when `into_dir`.
    pub url: FtpUrl,
    pub creds: Credentials,
    /// Local files (or folders with `recursive`).
    pub locals: Vec<PathBuf>,
    /// The URL's path is a folder: each file goes into it under its own name.
    pub into_dir: bool,
    pub recursive: bool,
    pub connections: usize,
    pub timeouts: Timeouts,
    /// How long to wait for a missing network (`--network-wait`), not counted as tries.
    pub network_wait: std::time::Duration,
    pub max_tries: u32,
    pub force: bool,
    pub restart: bool,
    /// `None`: `--no-temp`, write the final name directly.
    pub temp_suffix: Option<String>,
    pub use_pasv_address: bool,
    /// Active mode (`--active`): the server connects to us for data.
    pub active: bool,
    pub verify: Verify,
    pub busy_retry: Duration,
}

/// What one uploaded file reports.
#[derive(Clone, Debug)]
pub struct PutOutcome {
    pub local: PathBuf,
    pub remote: String,
    pub size: u64,
    /// Bytes sent in this run (a piece sent twice counts twice).
    pub sent: u64,
    /// Bytes already on the server from an earlier run.
    pub resumed: u64,
    pub connections: usize,
    pub parallel: bool,
    /// How the remote copy was checked, weakest first: "SIZE", "XSHA256"; empty when the
    /// server offers neither.
    pub verified_by: Vec<String>,
    pub elapsed: Duration,
}

impl PutOutcome {
    /// The line an upload ends with: `uploaded PATH (SIZE) in TIME, RATE/s, N connections`, what
    /// was resumed, and how the remote copy was checked. One line of at most 80 columns for a
    /// short path; [`PutOutcome::details`] says more (`-v`).
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let mut line = format!(
            "uploaded {} ({}) in {}, {}/s, {}",
            self.local.display(),
            human_bytes(self.size),
            human_elapsed(self.elapsed),
            human_bytes((self.sent as f64 / secs) as u64),
            connections(self.connections),
        );
        if self.resumed > 0 {
            line += &format!(", {} resumed", human_bytes(self.resumed));
        }
        match self.verified_by.last() {
            Some(strongest) => line + &format!(", {strongest} ok"),
            None => line + ", not verified (no SIZE, no hash)",
        }
    }

    /// Where the file went, what was sent and how it was checked, for `-v`.
    pub fn details(&self) -> String {
        let verified = match self.verified_by.is_empty() {
            true => "nothing (the server offers neither SIZE nor a hash)".to_owned(),
            false => self.verified_by.join(" and "),
        };
        format!(
            "to {}; {} bytes sent in this run{}; verified by {verified}",
            self.remote,
            self.sent,
            if self.parallel {
                ", in parallel pieces"
            } else {
                ""
            }
        )
    }
}

/// Uploads every file of the job, one after another. `stop` turning true (Ctrl-C) ends the
/// run with [`Error::Interrupted`]; the manifest keeps what is needed to resume.
pub async fn put(
    job: &PutJob,
    progress: &mut Progress,
    stop: watch::Receiver<bool>,
) -> Result<Vec<PutOutcome>, Error> {
    let files = files_to_upload(job)?;
    if files.is_empty() {
        return Err(Error::Usage("nothing to upload (no files found)".into()));
    }
    let conn = Arc::new(connect::Conn::open(job).await?);
    let mut made_dirs: Vec<String> = Vec::new();
    let mut outcomes = Vec::new();
    for (local, remote) in files {
        if job.recursive || job.into_dir {
            inputs::make_parents(&conn, job, &remote, &mut made_dirs).await?;
        }
        let outcome = file::put_file(job, &conn, &local, &remote, progress, stop.clone()).await?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
