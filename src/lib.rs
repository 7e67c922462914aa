//! ftpseg: segmented, resumable, crash-safe parallel FTP downloads.
//!
//! The folders are the layers (docs/architecture.md has the map). One rule for imports:
//! `cli -> commands -> {download, upload, batch} -> {ftp, storage, integrity, ui, retry, error}`,
//! nothing pointing back up.
//! * [`cli`]: the arguments (clap), then the checked jobs; [`commands`]: `get`, `put`,
//!   `bench`, `demo`, `serve`, each run with the one [`commands::Stop`] (Ctrl-C, SIGTERM).
//! * [`download`]: one file over N connections (plan, schedule, workers, checkpoints, commit).
//! * [`upload`]: `ftpseg put`, resumable, atomic, verified uploads (docs/upload.md).
//! * [`batch`]: many files (several URLs, `-i`, globs, `-r`), budgets per host, checks.
//! * [`ftp`]: control sessions (suppaftp behind our own type), reply parsers, URLs, netrc,
//!   listings, the per-server connection pool, rate limits.
//! * [`storage`]: the preallocated `.part` and the manifest; [`integrity`]: chunk hashes,
//!   digests, checksum files; [`ui`]: progress, `--json` events, trace; [`retry`]: when to try
//!   again; [`error`]: exit codes and the one mapping of session failures to them.
//! * [`testserver`]: an in-process FTP server with fault injection (demo, tests, benches).

pub mod batch;
pub mod cli;
pub mod commands;
pub mod download;
pub mod error;
pub mod ftp;
pub mod integrity;
pub mod retry;
pub mod storage;
pub mod testserver;
pub mod ui;
pub mod upload;

pub use error::{Error, exit};
