//! ftpseg: segmented, resumable, crash-safe parallel FTP downloads.
//!
//! The modules, in the order data flows (see docs/architecture.md):
//! * [`cli`]: arguments, run, exit codes; [`url`]: FTP URLs and safe output names.
//! * [`ftp`]: one control session (suppaftp behind our own type) and pure reply parsers.
//! * [`plan`]: pure range arithmetic; [`sched`]: live ranges, work stealing, snapshots;
//!   [`autotune`]: how many connections `-n auto` allows.
//! * [`store`]: the preallocated, memory-mapped `.part` file; [`manifest`]: the on-disk
//!   progress record.
//! * [`engine`]: workers, retries, checkpoints, commit; [`progress`]: what the user sees.
//! * [`batch`]: many files (several URLs, `-i`, globs, `-r`), budgets per host, checksums,
//!   the summary; [`listing`]: listing parsers, globs, safe names; [`checksum`]: digests and
//!   checksum files; [`pool`]: a server's shared connection budget and idle sessions;
//!   [`events`]: `--json` output.
//! * [`bench`]: `ftpseg bench`, throughput against the number of connections.
//! * [`put`]: `ftpseg put`, resumable, atomic, verified uploads (docs/upload.md).
//! * [`testserver`]: an in-process FTP server with fault injection (demo, tests, benches).
//! * [`trace`]: `FTPSEG_TRACE=1` prints each scheduling decision, for diagnosis.

pub mod autotune;
pub mod batch;
pub mod bench;
pub mod checksum;
pub mod cli;
pub mod demo;
pub mod digest;
pub mod engine;
pub mod error;
pub mod events;
pub mod ftp;
pub mod listing;
pub mod manifest;
pub mod netrc;
pub mod pipe;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod put;
pub mod ratelimit;
pub mod sched;
pub mod store;
pub mod testserver;
pub mod trace;
pub mod url;
pub mod verify;

pub use error::{Error, exit};
