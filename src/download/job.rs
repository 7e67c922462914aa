//! What a download is asked to do ([`Job`], with `-n` as [`Connections`]) and what it reports
//! when it is done ([`Outcome`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::ftp::pool::HostPool;
use crate::ftp::ratelimit::RateLimit;
use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, Timeouts, Verify};
use crate::storage::{Io, Storage};
use crate::ui::{connections, human_bytes, human_elapsed};

/// Everything one download needs to know.
#[derive(Clone, Debug)]
pub struct Job {
    pub url: FtpUrl,
    pub creds: Credentials,
    pub output: PathBuf,
    /// Connections to use (with `auto_connections`, the most that may be used).
    pub connections: usize,
    /// `-n auto`: start with few connections and add more while throughput still rises
    /// (the tuner in `download/autotune.rs`).
    pub auto_connections: bool,
    pub min_range: u64,
    pub timeouts: Timeouts,
    /// How long to wait for a missing network before giving up (`--network-wait`); time
    /// without a network does not count towards `max_tries`.
    pub network_wait: Duration,
    /// Failed attempts in a row (without progress) on one range before giving up.
    pub max_tries: u32,
    pub force: bool,
    pub restart: bool,
    pub checkpoint_interval: Duration,
    /// Connect PASV data connections to the address in the server's reply (off: the control
    /// connection's peer, so a hostile server cannot aim our connections elsewhere).
    pub use_pasv_address: bool,
    /// Active mode (`--active`): the server connects to us for data (`PORT`/`EPRT`).
    pub active: bool,
    /// How the server's certificate is checked, when the URL uses TLS (`job.url.tls`).
    pub verify: Verify,
    /// How long a connection the server refused as "too many" waits before trying again
    /// (doubling each time it is refused, at most 2 minutes).
    pub busy_retry: Duration,
    /// Never use `RANG`, even where the server offers it (for comparisons).
    pub no_rang: bool,
    /// A range without progress for this long is taken over by a free connection (long
    /// before `--stall-timeout` gives up on the stalled one).
    pub straggler_timeout: Duration,
    /// The server's connection budget and idle sessions, shared with the other files of a
    /// batch (`crate::ftp::pool`): every connection takes a permit first, and hands its session back
    /// when it is done. `None`: connect freely, log out at the end.
    pub pool: Option<Arc<HostPool>>,
    /// Fetch only the first `limit` bytes of the file (`ftpseg bench --bytes`).
    pub limit: Option<u64>,
    /// Limits shared beyond this download (`--limit-rate`: one for every file of the run).
    pub rate_limits: Vec<Arc<RateLimit>>,
    /// `--limit-rate-per-file`: bytes per second for this file's connections together.
    pub per_file_rate: Option<u64>,
    /// Sequential digests (`--checksum` SHA-2/SHA-1/MD5) that follow the written prefix
    /// during the download (`integrity/digest.rs`); the caller finishes them. Not with
    /// `Storage::Discard` (refused: there is nothing to read back).
    pub digest: Option<Arc<crate::integrity::digest::PrefixDigest>>,
    /// Where the bytes go: `<out>.part` then `<out>`, or nowhere (`ftpseg bench --discard`).
    pub storage: Storage,
    /// How they get into the `.part` (`--io`; `storage/io.rs`).
    pub io: Io,
    /// More servers of the same file (`--mirror`, a Metalink): the download uses them all at
    /// once, each within `per_mirror` connections; `connections` is the total.
    pub mirrors: Vec<Mirror>,
    /// Connections to one server at most (`--max-connections-per-host`), each mirror its own.
    pub per_mirror: Option<usize>,
    /// A Metalink's piece hashes: every piece is checked before the file is committed, and
    /// one that fails is fetched again from another server (`download/pieces.rs`).
    pub pieces: Option<crate::integrity::metalink::Pieces>,
    /// The size a Metalink gives: a server whose `SIZE` differs serves another file.
    pub expected_size: Option<u64>,
}

/// Another server of the same file: its URL (whose path `RETR` asks for), login and TLS
/// checks.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub url: FtpUrl,
    pub creds: Credentials,
    pub verify: Verify,
}

impl Job {
    /// A download of `url` to `output` with the command line's defaults: 8 connections,
    /// ranges of at least 1 MiB, 8 tries, a checkpoint every second, the default timeouts, the
    /// system's TLS roots, never overwriting `output` and resuming from its manifest. The login
    /// is the URL's user and password (an empty password if the URL has none), or anonymous.
    /// Change any field before the run; `cli/tests.rs` checks these defaults against the
    /// command line's.
    pub fn new(url: FtpUrl, output: impl Into<PathBuf>) -> Job {
        let creds = match &url.user {
            Some(user) => Credentials {
                user: user.clone(),
                password: url.password.clone().unwrap_or_default(),
            },
            None => Credentials::anonymous(),
        };
        Job {
            url,
            creds,
            output: output.into(),
            connections: crate::download::plan::DEFAULT_CONNECTIONS,
            auto_connections: false,
            min_range: crate::download::plan::DEFAULT_MIN_RANGE,
            timeouts: Timeouts::default(),
            network_wait: crate::retry::network::DEFAULT_WAIT,
            max_tries: 8,
            force: false,
            restart: false,
            checkpoint_interval: Duration::from_secs(1),
            use_pasv_address: false,
            active: false,
            verify: Verify::default(),
            busy_retry: Duration::from_secs(15),
            no_rang: false,
            straggler_timeout: Duration::from_secs(3),
            pool: None,
            limit: None,
            rate_limits: Vec::new(),
            per_file_rate: None,
            digest: None,
            storage: Storage::File,
            io: Io::Auto,
            mirrors: Vec::new(),
            per_mirror: None,
            pieces: None,
            expected_size: None,
        }
    }
}

/// `-n`: a fixed number of connections, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    Fixed(usize),
    Auto,
}

impl std::fmt::Display for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connections::Fixed(n) => write!(f, "{n}"),
            Connections::Auto => f.write_str("auto"),
        }
    }
}

/// What a finished download reports.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub path: PathBuf,
    pub size: u64,
    pub elapsed: Duration,
    /// Bytes fetched in this run (excluding what was resumed, including any fetched twice).
    pub fetched: u64,
    /// Bytes found already on disk from an earlier run.
    pub resumed: u64,
    /// The file's BLAKE3; `None` when the bytes were discarded (`Storage::Discard`).
    pub blake3: Option<blake3::Hash>,
    /// Time spent hashing at the end.
    pub hash_time: Duration,
    /// Whether the BLAKE3 was merged from the chunk hashes taken during the download (rather
    /// than read in one pass at the end).
    pub hash_from_chunks: bool,
    /// Connections that were opened.
    pub connections: usize,
    /// With mirrors: each server (its URL without password) and the bytes it sent in this run.
    pub sources: Vec<(String, u64)>,
    /// Pieces that failed their Metalink hash and were fetched again (digests that followed
    /// the download are then stale).
    pub pieces_repaired: bool,
    /// The remote file's modification time from `MDTM` (`YYYYMMDDHHMMSS`, UTC), if known.
    pub remote_mtime: Option<String>,
    /// From the start of the run to the first byte of file data.
    pub first_byte: Option<Duration>,
}

impl Outcome {
    /// The line a download ends with: `saved PATH (SIZE) in TIME, RATE/s, N connections`, and
    /// what was resumed or verified (`verified`: the algorithms checked, as "sha256") when that
    /// happened. One line of at most 80 columns for a short path; the BLAKE3 is in
    /// [`Outcome::hash_line`] (`-v`) and in `--json`.
    pub fn summary(&self, verified: &[&str]) -> String {
        let o = self;
        let secs = o.elapsed.as_secs_f64().max(1e-6);
        let mut line = format!(
            "saved {} ({}) in {}, {}/s, {}",
            o.path.display(),
            human_bytes(o.size),
            human_elapsed(o.elapsed),
            human_bytes((o.fetched as f64 / secs) as u64),
            connections(o.connections),
        );
        if o.sources.len() > 1 {
            line += &format!(" to {} servers", o.sources.len());
        }
        if o.resumed > 0 {
            line += &format!(", {} resumed", human_bytes(o.resumed));
        }
        if !verified.is_empty() {
            line += &format!(", verified {}", verified.join(" and "));
        }
        line
    }

    /// With several servers: what each sent, for `-v` ("ftp://a/x.iso: 1.20 GiB").
    pub fn source_lines(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|(url, bytes)| format!("from {url}: {}", human_bytes(*bytes)))
            .collect()
    }

    /// The file's BLAKE3 and how it was obtained, for `-v`: `None` when the bytes were
    /// discarded.
    pub fn hash_line(&self) -> Option<String> {
        let how = if self.hash_from_chunks {
            "merged from the chunk hashes taken during the download"
        } else {
            "read in one pass at the end"
        };
        self.blake3.map(|h| {
            format!(
                "BLAKE3 {} ({how}, {:.2} s)",
                h.to_hex(),
                self.hash_time.as_secs_f64()
            )
        })
    }
}
