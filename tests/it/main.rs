//! ftpseg's integration tests, in one binary so the crate is linked once (`cargo test --test
//! it`; one area: `cargo test --test it resume::`). Each module is one area; `common` holds the
//! fixture (an in-process server, the real binary with a time limit) and `fake` the scriptable
//! hostile server.
//!
//! The crash, resume, disk-full, damaged-chunk and real-server tests, and the TLS downloads, run
//! once per store of `--io` ([`common::per_store!`]: `resume::<test>::mmap`, `::splice`,
//! `::pwrite`); `stores` checks that list against the binary and that each value selects its
//! store.
//!
//! The tests of every area run in parallel with each other. Those that use the real servers of
//! `scripts/ftp-servers.sh` (`interop`, `bulk_interop`, `upload_interop`, and the real-server
//! cases of `active`) read `$FTPSEG_SERVERS_DIR/servers.json`; the ones that fill a `-limited`
//! instance's per-IP slots take [`common::LIMITED`] so that they never share the limit.

mod common;
mod fake;

mod active;
mod bench_command;
mod bulk;
mod bulk_interop;
mod config;
mod crash;
mod download;
mod errors;
mod ftps;
mod hostile;
mod inhibit;
mod interop;
mod mirrors;
mod mirrors_interop;
mod netns;
mod netns_put;
mod netns_support;
mod resume;
mod sessions;
mod stores;
mod upload;
mod upload_interop;
