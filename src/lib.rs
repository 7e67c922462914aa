//! ftpseg: segmented, resumable, crash-safe parallel FTP downloads.
//!
//! # Embedding a download
//!
//! A program builds a [`Job`] (the URL, the output file and the options, with the command
//! line's defaults from [`Job::new`]), chooses how progress is shown ([`Progress`]: bars,
//! plain lines, nothing, or its own callback with [`Progress::observed`]) and runs
//! [`download()`] with a stop signal (send `true` to stop after a final checkpoint). The result
//! is the [`Outcome`] or an [`Error`], whose [`Error::exit_code`] is the command line's
//! (table in [`exit`]). The partial file is [`part_path`]; running the same job again resumes
//! it. Uploads are the same with [`PutJob`] and [`put`]. `examples/download.rs` runs one
//! against the built-in server ([`testserver`]). The library never installs signal handlers.
//!
//! ```no_run
//! # async fn run() -> Result<(), ftpseg::Error> {
//! let url = ftpseg::FtpUrl::parse("ftp://ftp.example.org/pub/big.iso")?;
//! let mut job = ftpseg::Job::new(url, "big.iso");
//! job.connections = 8;
//! let mut progress = ftpseg::Progress::observed(|view| eprintln!("{} bytes", view.done));
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! let outcome = ftpseg::download(&job, &mut progress, stopped).await?;
//! println!("{}", outcome.summary(&[]));
//! # Ok(())
//! # }
//! ```
//!
//! # The layers (docs/architecture.md has the map)
//!
//! One rule for imports: `cli -> commands -> {download, upload, batch} -> {retry, error,
//! storage, ftp, integrity, ui}`, nothing pointing back up; inside the bottom layer
//! `retry -> error -> storage -> {ftp, integrity} -> ui`.
//! * `cli`: the arguments (clap), then the checked jobs; `commands`: `get`, `put`, `bench`,
//!   `demo`, `serve`, each run with the one `Stop` (Ctrl-C, SIGTERM).
//! * `download`: one file over N connections (plan, schedule, workers, checkpoints, commit);
//!   `upload`: `ftpseg put` (docs/upload.md); `batch`: many files (several URLs, `-i`, globs,
//!   `-r`), budgets per host, checks.
//! * `ftp`: control sessions (suppaftp behind our own type), reply parsers, URLs, netrc,
//!   listings, the per-server connection pool, rate limits; `storage`: the preallocated
//!   `.part` and the manifest; `integrity`: chunk hashes, digests, checksum files; `ui`:
//!   progress, `--json` events, trace; `retry`: when to try again; `error`: exit codes and the
//!   one mapping of session failures to them.
//! * [`testserver`]: an in-process FTP server with fault injection (demo, tests, benches).

mod batch;
mod cli;
mod commands;
mod download;
mod error;
mod ftp;
mod integrity;
mod retry;
mod storage;
pub mod testserver;
mod ui;
mod upload;

pub use download::{Connections, Job, Outcome, download};
pub use error::{Error, exit};
pub use ftp::url::{FtpUrl, UrlError};
pub use ftp::{Credentials, Timeouts, Verify};
pub use storage::{Io, part_path};
pub use ui::progress::{ConnState, ConnView, Mode, Observer, Progress, View};
pub use upload::{PutJob, PutOutcome, put};

/// The binary's entry point: parses the command line, runs it, returns the exit code.
#[doc(hidden)]
pub fn main() -> i32 {
    cli::main(std::env::args_os().collect())
}

/// Internals that ftpseg's own tests and benches reach into; not an API (no stability, no
/// documentation promises).
#[doc(hidden)]
pub mod internals {
    pub use crate::cli::parse_size;
    pub use crate::ftp::{DataStream, Session, TlsClient};
    pub use crate::integrity::verify;
    pub use crate::storage::manifest;
    pub use crate::upload::manifest_path;
}
