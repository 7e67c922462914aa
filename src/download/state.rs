//! The state the workers, the run loop and the checkpointer of one download share, grouped by
//! job: what is fetched ([`Target`]), how sessions are opened and what the server turned out
//! to support ([`Server`]), the retry and take-over rules ([`Limits`]), where the bytes go
//! ([`Output`]), the bytes not yet covered by a checkpoint ([`Stake`]), the run's flags and
//! measurements ([`RunState`]), and each connection's counters ([`ConnStat`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::download::Job;
use crate::download::checkpoint::{InlineHashes, resume_budget};
use crate::download::sched::{Scheduler, Segment};
use crate::ftp::pool::{HostPool, Permit};
use crate::ftp::ratelimit::RateLimit;
use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, Session, Timeouts, TlsClient};
use crate::retry::network::Network;
use crate::storage::manifest::Manifest;
use crate::storage::{PartFile, PartWriter};
use crate::ui::progress::{ConnState, ConnView, View};

/// State shared by the workers of one download.
pub(super) struct Shared {
    pub sched: Arc<Scheduler>,
    pub target: Target,
    /// The servers of the file: the URL's first, then the mirrors that passed their checks
    /// (`download/mirrors.rs`). Each connection reads from one ([`ConnStat::mirror`]).
    pub servers: Vec<Server>,
    pub limits: Limits,
    pub output: Output,
    pub stake: Stake,
    pub run: RunState,
    pub conns: Vec<ConnStat>,
}

/// What is fetched.
pub(super) struct Target {
    /// Bytes to fetch: the file's size, or less with `Job::limit`.
    pub size: u64,
    /// The file's size on the server (where a transfer without RANG ends by itself).
    pub remote_size: u64,
    /// The manifest's chunk hashes, which the writers take as they write.
    pub chunking: Chunking,
}

/// The chunk grid of the manifest's hashes (`chunk_size` 0: none are kept).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Chunking {
    pub chunk_size: u64,
    pub file_size: u64,
}

impl Chunking {
    /// The chunk grid of `manifest`'s hashes; none when the bytes are not kept (`keeps_files`
    /// false) or the size is unknown.
    pub fn of(manifest: &Manifest, keeps_files: bool) -> Chunking {
        match (keeps_files, manifest.size) {
            (true, Some(size)) => Chunking {
                chunk_size: manifest.chunk_size,
                file_size: size,
            },
            _ => Chunking::default(),
        }
    }
}

/// How this download opens sessions to one server of the file, and what it learned about it.
pub(super) struct Server {
    /// The file's URL on this server (its path is what `RETR` asks for), and as shown.
    pub url: FtpUrl,
    pub label: String,
    /// Set when this mirror failed for good: its connections stop, the others take its
    /// ranges over. Never set on the last server left.
    pub dropped: AtomicBool,
    /// Failed attempts and logins in a row on this server, by any of its connections (reset
    /// by a range done); with mirrors, `--max-tries` of them drop it.
    pub failures: AtomicU32,
    /// Whether the network is there (`--network-wait`), shared by the connections; it also
    /// holds the server's addresses (looked up again after a sleep or an outage).
    pub net: Arc<Network>,
    /// The TLS client when the URL uses TLS: each new session gets its own config from it.
    pub tls: Option<Arc<TlsClient>>,
    pub creds: Credentials,
    pub timeouts: Timeouts,
    /// `REST` support learned by the probe: (`REST n` works, `REST 0` works).
    pub rest: (bool, bool),
    pub epsv: AtomicBool,
    /// Ranged transfers use `RANG` (the server offers it, and `--no-rang` was not given).
    pub rang: AtomicBool,
    pub use_pasv_address: bool,
    pub active: bool,
    /// The batch's connection budget for this server (see `Job::pool`).
    pub pool: Option<Arc<HostPool>>,
    /// The permit each worker holds while it has (or may open) a connection, with a pool.
    pub slots: Vec<Mutex<Option<Permit>>>,
    /// Sessions opened by this download.
    pub opened: AtomicU64,
}

/// A server as the setup found it, for [`Shared::new`].
pub(super) struct ServerSetup {
    pub url: FtpUrl,
    pub creds: Credentials,
    pub net: Arc<Network>,
    pub tls: Option<Arc<TlsClient>>,
    /// What its probed first session learned: REST, EPSV, RANG.
    pub rest: (bool, bool),
    pub epsv: bool,
    pub rang: bool,
    pub pool: Option<Arc<HostPool>>,
}

impl ServerSetup {
    /// The setup of the server `first` was opened to.
    pub fn of(
        url: &FtpUrl,
        creds: &Credentials,
        net: Arc<Network>,
        tls: Option<Arc<TlsClient>>,
        first: &Session,
    ) -> ServerSetup {
        ServerSetup {
            url: url.clone(),
            creds: creds.clone(),
            net,
            tls,
            rest: first.rest_support(),
            epsv: first.uses_epsv(),
            rang: first.uses_rang(),
            pool: None,
        }
    }
}

impl Server {
    /// The address the sessions connect to, for messages.
    pub fn host(&self) -> String {
        self.net
            .addrs()
            .first()
            .map(|a| a.ip().to_string())
            .unwrap_or_default()
    }

    /// Applies what this download learned about the server to a session opened for it or
    /// handed over from another file.
    pub fn adopt(&self, s: &mut Session) {
        s.set_rest_support(self.rest);
        s.set_rang(self.rang.load(Ordering::Relaxed));
        s.set_use_pasv_address(self.use_pasv_address);
        s.set_active(self.active);
        s.set_epsv(self.epsv.load(Ordering::Relaxed));
    }

    /// Takes worker `id`'s permit of the pool, if it holds one.
    pub fn take_permit(&self, id: usize) -> Option<Permit> {
        self.slots[id]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// When a connection tries again, gives up, or lets another take over.
pub(super) struct Limits {
    /// Failed attempts in a row (without progress) on one range before giving up.
    pub max_tries: u32,
    /// First wait before a connection refused as "too many" tries again (doubles each time).
    pub busy_retry: Duration,
    /// No progress for this long, while another connection is free: that one takes over.
    /// `None` when it would not come well before the stall timeout.
    pub straggler_timeout: Option<Duration>,
    /// Rate limits every read of this download obeys (`--limit-rate`, per file and total).
    pub rate_limits: Vec<Arc<RateLimit>>,
}

/// Where the bytes go.
pub(super) struct Output {
    pub writer: PartWriter,
    pub part_path: PathBuf,
    /// Bytes a connection writes before releasing them from RSS.
    pub write_back_every: u64,
    /// Chunks the writers hashed as they wrote them, for the checkpointer.
    pub hashed_inline: Arc<InlineHashes>,
    /// With Metalink piece hashes: which servers wrote into each piece.
    pub provenance: Option<crate::download::pieces::Provenance>,
}

/// Bytes written into the file in this run, and how many of them the last checkpoint had seen
/// (all durable since). Readers pause while `limit` bytes or more (times
/// [`crate::download::checkpoint::STAKE_PAUSE`]) are not yet covered by a checkpoint, so a
/// kill never costs much more than that fetched again.
pub(super) struct Stake {
    pub fetched: AtomicU64,
    pub durable_fetched: AtomicU64,
    pub limit: u64,
    /// Notified after each checkpoint.
    pub checkpointed: tokio::sync::Notify,
}

/// The run's flags and measurements.
pub(super) struct RunState {
    /// When the download started, and the first data byte after it (µs; `u64::MAX`: none).
    pub started: Instant,
    pub first_byte_us: AtomicU64,
    /// Seconds from `REST`+`RETR` on an open session to the first byte (running average, as
    /// `f64` bits; 0: not measured yet).
    pub setup: AtomicU64,
    /// Set when one worker hit a permanent error: the others stop.
    pub failed: AtomicBool,
    /// Workers with an id below this may work (`-n auto` raises it; otherwise all of them).
    pub allowed: AtomicUsize,
    /// Set when the server refused a connection as one too many.
    pub refused: AtomicBool,
}

impl RunState {
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// µs since the download started.
    pub fn micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

/// Written bytes all connections together leave to the kernel's own write-back before starting
/// it themselves (each connection gets an equal share, at least [`WRITE_BACK_MIN`]).
const WRITE_BACK_BUDGET: u64 = 16 << 20;
const WRITE_BACK_MIN: u64 = 512 << 10;

/// What the setup of a download decided, for [`Shared::new`].
pub(super) struct Setup<'a> {
    pub started: Instant,
    /// The servers: the URL's, then the mirrors.
    pub servers: Vec<ServerSetup>,
    /// The server each worker reads from.
    pub assignment: Vec<usize>,
    pub sched: Arc<Scheduler>,
    pub part: &'a PartFile,
    /// Bytes to fetch, and the file's size on the server.
    pub size: u64,
    pub remote_size: u64,
    /// Workers in all, and how many of them may work from the start.
    pub workers: usize,
    pub allowed: usize,
    pub chunking: Chunking,
}

impl Shared {
    pub fn new(job: &Job, s: Setup) -> Shared {
        let workers = s.workers;
        Shared {
            sched: s.sched,
            target: Target {
                size: s.size,
                remote_size: s.remote_size,
                chunking: s.chunking,
            },
            servers: s
                .servers
                .into_iter()
                .map(|v| Server {
                    label: v.url.redacted(),
                    url: v.url,
                    dropped: AtomicBool::new(false),
                    failures: AtomicU32::new(0),
                    net: v.net,
                    tls: v.tls,
                    creds: v.creds,
                    timeouts: job.timeouts,
                    rest: v.rest,
                    epsv: AtomicBool::new(v.epsv),
                    rang: AtomicBool::new(v.rang && !job.no_rang),
                    use_pasv_address: job.use_pasv_address,
                    active: job.active,
                    pool: v.pool,
                    slots: (0..workers).map(|_| Mutex::new(None)).collect(),
                    opened: AtomicU64::new(1),
                })
                .collect(),
            limits: Limits {
                max_tries: job.max_tries,
                busy_retry: job.busy_retry,
                // Taking over pays only well before the stall timeout would replace the
                // connection.
                straggler_timeout: (job.straggler_timeout * 2 <= job.timeouts.data_idle)
                    .then_some(job.straggler_timeout),
                rate_limits: job
                    .rate_limits
                    .iter()
                    .cloned()
                    .chain(job.per_file_rate.map(|r| Arc::new(RateLimit::new(r))))
                    .collect(),
            },
            output: Output {
                writer: s.part.writer(),
                part_path: s.part.path().to_owned(),
                write_back_every: (WRITE_BACK_BUDGET / workers as u64).max(WRITE_BACK_MIN),
                hashed_inline: Arc::new(InlineHashes::default()),
                provenance: job
                    .pieces
                    .as_ref()
                    .map(crate::download::pieces::Provenance::new),
            },
            stake: Stake {
                fetched: AtomicU64::new(0),
                durable_fetched: AtomicU64::new(0),
                limit: resume_budget(s.size, workers),
                checkpointed: tokio::sync::Notify::new(),
            },
            run: RunState {
                started: s.started,
                first_byte_us: AtomicU64::new(u64::MAX),
                setup: AtomicU64::new(0),
                failed: AtomicBool::new(false),
                allowed: AtomicUsize::new(s.allowed),
                refused: AtomicBool::new(false),
            },
            conns: (0..workers)
                .map(|id| ConnStat::new(id, s.assignment[id]))
                .collect(),
        }
    }

    /// The server connection `id` reads from.
    pub fn server(&self, id: usize) -> &Server {
        &self.servers[self.conns[id].mirror]
    }

    /// Drops server `k` (a mirror that failed for good) if another is live: its connections
    /// are kicked, so that they hand their ranges back at once (`download/failover.rs`).
    /// `Some(n)`: dropped now, `n` others left; `None`: the last live server (never dropped),
    /// or dropped already.
    pub fn drop_server(&self, k: usize) -> Option<usize> {
        let others = (0..self.servers.len())
            .filter(|&j| j != k && !self.servers[j].dropped.load(Ordering::SeqCst))
            .count();
        if others == 0 || self.servers[k].dropped.swap(true, Ordering::SeqCst) {
            return None;
        }
        for c in self.conns.iter().filter(|c| c.mirror == k) {
            c.kick.notify_one();
        }
        Some(others)
    }

    /// The download failed, or every range is done: a waiting connection has nothing to wait
    /// for.
    pub fn over(&self) -> bool {
        self.run.failed() || !self.sched.unfinished()
    }

    /// What the progress view shows now.
    pub fn view(&self) -> View {
        let conns: Vec<ConnView> = self
            .conns
            .iter()
            .map(|c| {
                let v = c.view.lock().unwrap_or_else(|p| p.into_inner());
                ConnView {
                    bytes: c.bytes.load(Ordering::Relaxed),
                    range: v.0.as_ref().map(|s| (s.pos(), s.end())),
                    state: v.1,
                    server: c.mirror,
                }
            })
            .collect();
        let net = &self.servers[0].net;
        View {
            done: self.target.size - self.sched.remaining(),
            total: Some(self.target.size),
            conns,
            network_missing: net.missing_since().map(|t| (t.elapsed(), net.wait_limit())),
            servers: match self.servers.len() {
                1 => Vec::new(),
                _ => self
                    .servers
                    .iter()
                    .map(|s| format!("{}:{}", s.url.host_for_connect(), s.url.port))
                    .collect(),
            },
        }
    }
}

/// Per-connection counters the progress view and the scheduler read.
pub(super) struct ConnStat {
    /// The worker's id (for the trace).
    id: usize,
    /// The server it reads from (an index of [`Shared::servers`]).
    pub mirror: usize,
    pub bytes: AtomicU64,
    pub view: Mutex<(Option<Arc<Segment>>, ConnState)>,
    /// Recent throughput while reading, bytes/s as `f64` bits (0: not measured yet). Updated
    /// by the worker itself (`meter::RateProbe`) and, for a reader that gets nothing, decayed
    /// by `meter::RateMeter`; the scheduler uses it to decide whom a free connection helps.
    pub rate: AtomicU64,
    /// When `rate` last took a sample, µs since the download started.
    pub sampled_at: AtomicU64,
    /// Since when the connection has been reading its current transfer (its first byte).
    pub reading_since: Mutex<Option<Instant>>,
    /// The run loop's "start over now": after the machine slept, or when the network came back
    /// while this connection got nothing. The attempt (or its wait) ends at once, without
    /// counting a try.
    pub kick: tokio::sync::Notify,
}

impl ConnStat {
    pub fn new(id: usize, mirror: usize) -> ConnStat {
        ConnStat {
            id,
            mirror,
            bytes: AtomicU64::new(0),
            view: Mutex::new((None, ConnState::default())),
            rate: AtomicU64::new(0),
            sampled_at: AtomicU64::new(0),
            reading_since: Mutex::new(None),
            kick: tokio::sync::Notify::new(),
        }
    }

    /// What the connection does now (and on which range): the value the progress view shows,
    /// the rate meter reads, and the trace records when it changes.
    pub fn set(&self, seg: Option<Arc<Segment>>, state: ConnState) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        if v.1 != state {
            crate::trace!("conn {} is {state}", self.id);
        }
        *v = (seg, state);
        *self.reading_since.lock().unwrap_or_else(|p| p.into_inner()) =
            (state == ConnState::Reading).then(Instant::now);
    }

    /// What the connection does now.
    pub fn state(&self) -> ConnState {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Whether the connection is receiving data now.
    pub fn reading(&self) -> bool {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).1 == ConnState::Reading
    }

    /// Seconds this connection has been reading its current transfer (0 when not reading).
    pub fn reading_for(&self) -> f64 {
        self.reading_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(0.0, |t| t.elapsed().as_secs_f64())
    }
}
