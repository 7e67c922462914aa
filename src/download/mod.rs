//! The download: plan, connections, retries, checkpoints, commit.
//!
//! Data flow: socket -> pipe (`Session::splice_data`) -> the `.part`'s page cache at the
//! range's offset (`PartWriter::write_from_pipe`; TLS: `Session::read_data` into a buffer, then
//! `pwrite`; each piece is hashed as written, see `InlineHashes`) -> `Segment::advance`. Every
//! `checkpoint_interval`, early when much arrived, and at the end, the checkpointer takes a
//! [`Snapshot`](crate::download::sched::Snapshot), makes the new bytes durable (`fdatasync`), then saves
//! the manifest atomically: the manifest never claims a byte that is not on disk.
//!
//! Order of a run:
//! 1. Refuse an existing output (unless `--force`), resolve the host, open the first session,
//!    probe it (`FEAT`, `REST`), ask `SIZE` and `MDTM`.
//! 2. Load the manifest if there is one and check it describes the same remote file; otherwise
//!    plan fresh ranges. Save the manifest, then preallocate and map `<out>.part`. With
//!    [`Storage::Discard`] (`ftpseg bench --discard`) steps 2 and 4 touch no file: fresh ranges,
//!    a manifest kept only in memory, a sink instead of `<out>.part`, no hash, no commit; the
//!    connections, scheduling and checkpoint rhythm are the same.
//! 3. Run N workers concurrently. Each connects (the first reuses the probe session), takes a
//!    range, reads it, stops early, takes the next (work stealing when none is free). A failed
//!    attempt drops the session and retries with backoff from where the range got to.
//! 4. When every range is done: final checkpoint, the file's BLAKE3 (merged from the chunk hashes), flush,
//!    rename `<out>.part` to `<out>`, remove the manifest.

pub mod autotune;
pub mod plan;
pub mod sched;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::download::sched::{READ_CHUNK, Scheduler, Segment, Speeds};
use crate::error::Error;
use crate::ftp::pool::{HostPool, Permit};
use crate::ftp::ratelimit::RateLimit;
use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, Session, SessionError, Timeouts, TlsClient, Transfer, Verify};
use crate::integrity::verify;
use crate::storage::manifest::{Manifest, RangeRecord};
use crate::storage::{self, Allocation, PartFile, PartWriter, Storage};
use crate::ui::human_bytes;
use crate::ui::progress::{ConnView, Progress, View};

/// Everything one download needs to know.
#[derive(Clone, Debug)]
pub struct Job {
    pub url: FtpUrl,
    pub creds: Credentials,
    pub output: PathBuf,
    /// Connections to use (with `auto_connections`, the most that may be used).
    pub connections: usize,
    /// `-n auto`: start with few connections and add more while throughput still rises
    /// ([`crate::download::autotune`]).
    pub auto_connections: bool,
    pub min_range: u64,
    pub timeouts: Timeouts,
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
    /// during the download ([`crate::integrity::digest`]); the caller finishes them. Not with
    /// [`Storage::Discard`] (refused: there is nothing to read back).
    pub digest: Option<Arc<crate::integrity::digest::PrefixDigest>>,
    /// Where the bytes go: `<out>.part` then `<out>`, or nowhere (`ftpseg bench --discard`).
    pub storage: Storage,
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
    /// The file's BLAKE3; `None` when the bytes were discarded ([`Storage::Discard`]).
    pub blake3: Option<blake3::Hash>,
    /// Time spent hashing at the end.
    pub hash_time: Duration,
    /// Whether the BLAKE3 was merged from the chunk hashes taken during the download (rather
    /// than read in one pass at the end).
    pub hash_from_chunks: bool,
    /// Connections that were opened.
    pub connections: usize,
    /// The remote file's modification time from `MDTM` (`YYYYMMDDHHMMSS`, UTC), if known.
    pub remote_mtime: Option<String>,
    /// From the start of the run to the first byte of file data.
    pub first_byte: Option<Duration>,
}

impl Outcome {
    /// The final report of a download, one line.
    pub fn summary(&self) -> String {
        let o = self;
        let secs = o.elapsed.as_secs_f64().max(1e-6);
        let resumed = if o.resumed > 0 {
            format!(", {} resumed from an earlier run", human_bytes(o.resumed))
        } else {
            String::new()
        };
        let how = if o.hash_from_chunks {
            "merged from the chunk hashes taken during the download"
        } else {
            "one pass at the end"
        };
        format!(
            "saved {} ({}) in {:.2} s, {}/s mean over {} connection(s){}; BLAKE3 {} ({how}, {:.2} s)",
            o.path.display(),
            human_bytes(o.size),
            secs,
            human_bytes((o.fetched as f64 / secs) as u64),
            o.connections,
            resumed,
            o.blake3.map_or("-".into(), |h| h.to_hex().to_string()),
            o.hash_time.as_secs_f64()
        )
    }
}

/// Downloads `job.url` to `job.output`. `stop` turning true (Ctrl-C) ends the run after a final
/// checkpoint, with [`Error::Interrupted`].
pub async fn download(
    job: &Job,
    progress: &mut Progress,
    stop: watch::Receiver<bool>,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let output = &job.output;
    // The one place the storage choice is made: `None` keeps nothing on disk.
    let files = match job.storage {
        Storage::File => Some(Files::claim(job)?),
        Storage::Discard if job.digest.is_some() => {
            return Err(Error::Usage(
                "a checksum needs the downloaded bytes; it cannot be taken while they are \
                 discarded"
                    .into(),
            ));
        }
        Storage::Discard => None,
    };

    if job.url.tls.is_tls() && job.verify == Verify::Insecure {
        // Shown even with --quiet: the user should not forget it is on.
        eprintln!("ftpseg: warning: certificate verification is off (--insecure)");
    }
    let tls = match job.url.tls.is_tls() {
        true => Some(Arc::new(TlsClient::new(&job.url, &job.verify)?)),
        false => None,
    };

    // Connecting and probing are bounded by the timeouts; Ctrl-C ends them at once.
    let mut stop_early = stop.clone();
    let saved_in = files.as_ref().map(|f| f.manifest.as_path());
    let Started {
        addrs,
        mut first,
        size,
        mdtm,
        permit: first_permit,
        early,
    } = tokio::select! {
        r = startup(job, tls.as_ref()) => r?,
        _ = stop_early.wait_for(|s| *s) => return Err(interrupted(saved_in)),
    };
    let path = job.url.path.clone();
    let rest_support = first.rest_support();
    if job.no_rang {
        first.set_rang(false);
    }
    let rest = rest_support.0;
    let redacted = job.url.redacted();

    // No SIZE: start the transfer at byte 0 and look for "(N bytes)" in its 150 reply.
    let mut preopened = None;
    // No SIZE, or SIZE 0 (some servers answer 0 for any file in binary mode, as curl notes):
    // the transfer itself decides.
    let size = match size {
        Some(size) if size > 0 => size,
        _ => {
            let transfer = first
                .retr(&path, 0)
                .await
                .map_err(|e| not_found_or(&job.url, &job.creds, e))?;
            match transfer.announced_size {
                // "(0 bytes)" proves nothing: stream and let the end of the data decide.
                Some(n) if n > 0 => {
                    progress.note(&format!(
                        "the server does not answer SIZE; using the size its RETR reply \
                         announced ({n} bytes)"
                    ));
                    preopened = Some(transfer);
                    n
                }
                _ if files.is_none() => {
                    return Err(Error::Usage(format!(
                        "the server reports no size for {}, so it can only be streamed into a \
                         file; measure it without --discard",
                        job.url.path
                    )));
                }
                _ => {
                    progress.note("the server reports no file size: streaming on one connection");
                    let _held = first_permit;
                    return stream_unknown_size(job, progress, stop, first, transfer, mdtm).await;
                }
            }
        }
    };
    // `ftpseg bench --bytes`: only the first bytes of the file.
    let remote_size = size;
    let size = job.limit.map_or(size, |limit| limit.clamp(1, size));

    let (manifest, part, resumed) = match &files {
        Some(f) => f.open(job, progress, &redacted, size, mdtm.clone(), rest)?,
        // Discarded: fresh ranges, a manifest that is never saved, no chunk hashes.
        None => (
            fresh_manifest(&redacted, size, mdtm.clone(), job, rest)?,
            PartFile::discard(size)?,
            0,
        ),
    };

    if !rest {
        progress.note(
            "the server does not support REST: using one connection; an interrupted download \
             will have to start over",
        );
    }
    let min_range = if rest { job.min_range } else { u64::MAX };
    let remaining: u64 = manifest.ranges.iter().map(|r| r.remaining()).sum();
    let workers = workers_for(job, remaining, rest);
    // `-n auto` starts with few workers allowed; the others join (and count as live) later.
    let allowed = starting_workers(job, workers);
    let sched = Arc::new(Scheduler::new(&manifest.ranges, min_range, allowed));

    let hashed_inline = Arc::new(InlineHashes::default());
    let shared = Arc::new(Shared {
        sched: sched.clone(),
        writer: part.writer(),
        path: path.clone(),
        size,
        remote_size,
        started,
        first_byte_us: AtomicU64::new(u64::MAX),
        addrs,
        tls,
        creds: job.creds.clone(),
        timeouts: job.timeouts,
        max_tries: job.max_tries,
        rest: rest_support,
        epsv: AtomicBool::new(first.uses_epsv()),
        rang: AtomicBool::new(first.uses_rang() && !job.no_rang),
        part_path: part.path().to_owned(),
        use_pasv_address: job.use_pasv_address,
        active: job.active,
        busy_retry: job.busy_retry,
        // Taking over pays only well before the stall timeout would replace the connection.
        straggler_timeout: (job.straggler_timeout * 2 <= job.timeouts.data_idle)
            .then_some(job.straggler_timeout),
        failed: AtomicBool::new(false),
        conns: (0..workers).map(|_| ConnStat::default()).collect(),
        allowed: AtomicUsize::new(allowed),
        refused: AtomicBool::new(false),
        fetched: AtomicU64::new(0),
        durable_fetched: AtomicU64::new(0),
        stake_limit: resume_budget(size, workers),
        checkpointed: tokio::sync::Notify::new(),
        local_error: Mutex::new(None),
        rate_limits: job
            .rate_limits
            .iter()
            .cloned()
            .chain(job.per_file_rate.map(|r| Arc::new(RateLimit::new(r))))
            .collect(),
        setup: AtomicU64::new(0),
        opened: AtomicU64::new(1),
        write_back_every: (WRITE_BACK_BUDGET / workers as u64).max(WRITE_BACK_MIN),
        pool: job.pool.clone(),
        slots: (0..workers).map(|_| Mutex::new(None)).collect(),
        chunking: match (files.is_some(), manifest.size) {
            (true, Some(size)) => (manifest.chunk_size, size),
            _ => (0, 0),
        },
        hashed_inline: hashed_inline.clone(),
    });
    *shared.slots[0].lock().unwrap_or_else(|p| p.into_inner()) = first_permit;
    let part = Arc::new(part);
    let mut checkpoint = Checkpoint {
        sched,
        part: part.clone(),
        buf: vec![0u8; HASH_BUF],
        early: Vec::new(),
        early_rewinds: 0,
        hashed_inline,
        inline_used: 0,
        read_back: 0,
        manifest,
        path: files.as_ref().map(|f| f.manifest.clone()),
    };

    let result = run_workers(
        &shared,
        first,
        preopened,
        early,
        workers,
        job,
        progress,
        &mut checkpoint,
        stop,
    )
    .await;
    progress.finish();
    crate::trace!("workers done");
    // Whatever happened, record what is on disk (with a file).
    let saved = tokio::task::block_in_place(|| checkpoint.save());
    result?;
    saved?;
    crate::trace!("last checkpoint saved");

    let checkpoint_mdtm = checkpoint.manifest.mdtm.clone();
    let fetched: u64 = shared
        .conns
        .iter()
        .map(|c| c.bytes.load(Ordering::Relaxed))
        .sum();
    let hash_started = Instant::now();
    let hash = tokio::task::block_in_place(|| checkpoint.file_hash())?;
    let hash_time = hash_started.elapsed();
    crate::trace!(
        "file hash took {:.3} s; chunks hashed as written: {}, read back: {}",
        hash_time.as_secs_f64(),
        checkpoint.inline_used,
        checkpoint.read_back
    );
    let hash_from_chunks =
        checkpoint.manifest.chunk_size > 0 && size > checkpoint.manifest.chunk_size;
    drop(checkpoint);
    let part = Arc::try_unwrap(part)
        .map_err(|_| Error::Internal("the output file is still in use".into()))?;
    tokio::task::block_in_place(|| part.commit(output, job.force))?;
    crate::trace!("committed (flushed, renamed)");
    if let Some(f) = &files {
        Manifest::remove(&f.manifest)?;
        crate::trace!("manifest removed");
    }
    Ok(Outcome {
        path: output.clone(),
        size,
        elapsed: started.elapsed(),
        fetched,
        resumed,
        blake3: hash,
        hash_time,
        hash_from_chunks,
        connections: shared.opened.load(Ordering::Relaxed) as usize,
        remote_mtime: checkpoint_mdtm,
        first_byte: match shared.first_byte_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        },
    })
}

/// The files of a download kept on disk ([`Storage::File`]): `<out>.ftpseg` and `<out>.part`.
struct Files {
    manifest: PathBuf,
    part: PathBuf,
}

impl Files {
    /// Checks that `job.output` may be written (not a folder; not an existing file unless
    /// `--force`) and, with `--restart`, removes an earlier run's manifest and `.part`.
    fn claim(job: &Job) -> Result<Files, Error> {
        let output = &job.output;
        if output.is_dir() {
            return Err(Error::io(
                "cannot write to",
                output,
                std::io::Error::other("it is a folder; give a file name with -o"),
            ));
        }
        if output.exists() && !job.force {
            return Err(Error::Exists(output.clone()));
        }
        let files = Files {
            manifest: Manifest::path_for(output),
            part: storage::part_path(output),
        };
        if job.restart {
            remove_if_exists(&files.manifest)?;
            remove_if_exists(&files.part)?;
        }
        Ok(files)
    }

    /// The manifest (resumed if it describes the same remote file, otherwise fresh; saved
    /// before the `.part` is preallocated), the `.part` (reopened or created) and the bytes
    /// already done, with any damaged chunks of a resumed `.part` forgotten.
    fn open(
        &self,
        job: &Job,
        progress: &mut Progress,
        redacted: &str,
        size: u64,
        mdtm: Option<String>,
        rest: bool,
    ) -> Result<(Manifest, PartFile, u64), Error> {
        // The manifest: resume from it, or start fresh.
        let mut manifest = match Manifest::load(&self.manifest)? {
            Some(mut m) => {
                adopt_same_file(&mut m, &job.url);
                if let Err(mismatch) = m.check_same_remote(redacted, Some(size), mdtm.as_deref()) {
                    return Err(Error::RemoteChanged {
                        detail: mismatch.to_string(),
                        part: self.part.clone(),
                    });
                }
                m
            }
            None => {
                if self.part.exists() {
                    progress.note(&format!(
                        "{} has no manifest beside it, so its bytes cannot be trusted: starting \
                         over",
                        self.part.display()
                    ));
                }
                fresh_manifest(redacted, size, mdtm.clone(), job, rest)?
            }
        };
        let mut part_exists = self.part.exists();
        if manifest.bytes_done() > 0 && !part_exists {
            progress.note(&format!(
                "{} is missing, so the progress recorded in {} is lost: starting over",
                self.part.display(),
                self.manifest.display()
            ));
            manifest = fresh_manifest(redacted, size, mdtm.clone(), job, rest)?;
        }
        if !rest && manifest.bytes_done() > 0 && part_exists {
            // Never throw away downloaded bytes on our own: the user decides.
            return Err(Error::CannotResume {
                part: self.part.clone(),
                done: human_bytes(manifest.bytes_done()),
            });
        }
        if !rest && manifest.ranges.len() > 1 {
            manifest = fresh_manifest(redacted, size, mdtm.clone(), job, rest)?;
            part_exists = false;
        }
        if manifest.chunk_size == 0 {
            // A fresh manifest, or one from format version 1: hash chunks from now on.
            manifest.enable_chunks(verify::chunk_size_for(size));
        }
        let mut resumed = manifest.bytes_done();
        // Written before the file is preallocated: a full-size file never exists without it.
        manifest.save(&self.manifest)?;
        crate::trace!("setup: manifest saved");
        let part = if resumed > 0 && part_exists {
            PartFile::open_existing(&self.part, size)?
        } else {
            PartFile::create(&self.part, size)?
        };
        crate::trace!("setup: .part ready");
        if part.allocation() == Allocation::Sparse {
            progress.note(
                "this filesystem cannot preallocate; the file is sparse (free space was checked)",
            );
        }
        if resumed > 0 {
            let (checked, bad) =
                tokio::task::block_in_place(|| verify_chunks(&part, &mut manifest))?;
            if bad > 0 {
                progress.note(&format!(
                    "{bad} of {checked} hashed chunk(s) of {} no longer match what was downloaded \
                     (damaged or edited since the last run): fetching only those again",
                    self.part.display()
                ));
                manifest.save(&self.manifest)?;
                resumed = manifest.bytes_done();
            }
            progress.note(&format!(
                "resuming: {} of {} already on disk ({checked} chunk(s) verified)",
                human_bytes(resumed),
                human_bytes(size)
            ));
        }
        Ok((manifest, part, resumed))
    }
}

/// The error for a run stopped by Ctrl-C: where its progress is, if anywhere.
fn interrupted(manifest: Option<&Path>) -> Error {
    match manifest {
        Some(path) => Error::Interrupted(path.to_owned()),
        None => Error::InterruptedDiscarding,
    }
}

/// A manifest for a download from scratch: one range per connection, or a single range when
/// the server cannot start a transfer anywhere but at byte 0.
fn fresh_manifest(
    url: &str,
    size: u64,
    mdtm: Option<String>,
    job: &Job,
    rest: bool,
) -> Result<Manifest, Error> {
    let connections = match (rest, job.auto_connections) {
        (false, _) => 1,
        (true, false) => job.connections,
        // The connections added later take their share by stealing.
        (true, true) => crate::download::autotune::START.min(job.connections),
    };
    let ranges = plan::initial_ranges(size, connections, job.min_range)
        .into_iter()
        .map(|r| RangeRecord {
            start: r.start,
            end: r.end,
            done: r.start,
        })
        .collect();
    Ok(Manifest::new(url, Some(size), mdtm, ranges)?)
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// The manifest of an earlier run over another TLS mode (`ftp://` then `--ftps`, say) still
/// describes the same file: it takes this run's URL, so the exact comparison that follows
/// passes, and only the scheme in the manifest changes.
fn adopt_same_file(m: &mut Manifest, url: &FtpUrl) {
    if m.url != url.redacted() && FtpUrl::parse(&m.url).is_ok_and(|old| old.same_file(url)) {
        m.url = url.redacted();
    }
}

/// What [`startup`] learned and opened.
struct Started {
    addrs: Vec<SocketAddr>,
    first: Session,
    size: Option<u64>,
    mdtm: Option<String>,
    /// In a batch: the permit the first session holds.
    permit: Option<Permit>,
    early: EarlyLogins,
}

/// Logins of the other connections, started as soon as the first session has logged in and
/// the file's size is known, so they overlap the rest of the first session's questions
/// (`FEAT`, `REST`, `MDTM`) and the setup of the `.part` and the manifest: over a long path that
/// is several round trips sooner at full speed. Only after the first login worked (wrong
/// credentials cost one failed login, not N) and only as many as the size needs. The k-th
/// goes to worker k + 1; the logins not taken are aborted when this is dropped (a resumed
/// download may need fewer connections, a server without `REST` only one).
struct EarlyLogins(Vec<Option<LoginTask>>);

type LoginTask = tokio::task::JoinHandle<Result<Session, SessionError>>;

impl EarlyLogins {
    /// The pending login for worker `id` (worker 0 has the first session).
    fn take(&mut self, id: usize) -> Option<PendingLogin> {
        let slot = self.0.get_mut(id.checked_sub(1)?)?;
        slot.take().map(PendingLogin)
    }
}

impl Drop for EarlyLogins {
    fn drop(&mut self) {
        for handle in self.0.iter().flatten() {
            handle.abort();
        }
    }
}

/// What a worker's first attempt starts from, besides its session (if it has one).
enum HeadStart {
    /// A login started early ([`EarlyLogins`]).
    Login(PendingLogin),
    /// A transfer from byte 0 the first session already started (a server without `SIZE`).
    Transfer(Transfer),
}

/// One of the [`EarlyLogins`], handed to its worker; aborted if dropped before it is awaited.
struct PendingLogin(LoginTask);

impl PendingLogin {
    async fn session(mut self) -> Result<Session, SessionError> {
        match (&mut self.0).await {
            Ok(r) => r,
            Err(e) => Err(SessionError::Protocol(format!("a login task ended: {e}"))),
        }
    }
}

impl Drop for PendingLogin {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connections for a download with `bytes` still to fetch: `-n` (one without `REST`), at most
/// one per `--min-range` bytes.
fn workers_for(job: &Job, bytes: u64, rest: bool) -> usize {
    let connections = match rest {
        true => job.connections.clamp(1, plan::MAX_CONNECTIONS),
        false => 1,
    };
    let by_size = usize::try_from(bytes.div_ceil(job.min_range.max(1))).unwrap_or(usize::MAX);
    connections.min(by_size).max(1)
}

/// How many of `workers` start at once: all, or with `-n auto` the tuner's start.
fn starting_workers(job: &Job, workers: usize) -> usize {
    match job.auto_connections {
        true => crate::download::autotune::START.min(workers),
        false => workers,
    }
}

/// Resolves the host, opens the first session, asks `SIZE`, starts the other logins
/// ([`EarlyLogins`]), then probes the first session (`FEAT`, `REST`) and asks `MDTM`.
async fn startup(job: &Job, tls: Option<&Arc<TlsClient>>) -> Result<Started, Error> {
    crate::trace!("startup: resolving {}", job.url.host_for_connect());
    let addrs = resolve(&job.url, job.timeouts.connect).await?;
    // In a batch: a session another file left logged in, or a permit to open one.
    let connect = || Session::connect_with(&addrs, &job.creds, job.timeouts, tls);
    let (permit, mut first) = match &job.pool {
        Some(pool) => {
            let (p, s) = pool.acquire().await;
            let (p, s) = pool
                .connect_or_wait(p, s, connect)
                .await
                .map_err(|e| startup_error(&job.url, &job.creds, e))?;
            (Some(p), s)
        }
        None => (
            None,
            connect()
                .await
                .map_err(|e| startup_error(&job.url, &job.creds, e))?,
        ),
    };
    first.set_use_pasv_address(job.use_pasv_address);
    first.set_active(job.active);
    // SIZE first (the session is in binary mode since its login): the size says how many
    // connections the download needs, and their logins can start now.
    let size = first
        .size(&job.url.path)
        .await
        .map_err(|e| not_found_or(&job.url, &job.creds, e))?;
    crate::trace!("startup: SIZE answered {size:?}");
    let early = match (size, &job.pool) {
        // In a batch, connections are opened with the pool's permits, when workers get them.
        (Some(size), None) if size > 0 => {
            let size = job.limit.map_or(size, |limit| limit.clamp(1, size));
            // REST is probed only below; without it, these logins are aborted unused.
            let others = starting_workers(job, workers_for(job, size, true)) - 1;
            EarlyLogins(
                (0..others)
                    .map(|_| {
                        let (addrs, creds) = (addrs.clone(), job.creds.clone());
                        let (timeouts, tls) = (job.timeouts, tls.cloned());
                        Some(tokio::spawn(async move {
                            Session::connect_with(&addrs, &creds, timeouts, tls.as_ref()).await
                        }))
                    })
                    .collect(),
            )
        }
        _ => EarlyLogins(Vec::new()),
    };
    first
        .probe()
        .await
        .map_err(|e| startup_error(&job.url, &job.creds, e))?;
    let mdtm = first
        .mdtm(&job.url.path)
        .await
        .map_err(|e| startup_error(&job.url, &job.creds, e))?
        .map(|m| m.0);
    crate::trace!("startup: probed, {} early logins", early.0.len());
    Ok(Started {
        addrs,
        first,
        size,
        mdtm,
        permit,
        early,
    })
}

/// Resolves the URL's host to socket addresses, within the connect timeout.
pub(crate) async fn resolve(url: &FtpUrl, limit: Duration) -> Result<Vec<SocketAddr>, Error> {
    let host = url.host_for_connect();
    let lookup = tokio::net::lookup_host((host.clone(), url.port));
    match tokio::time::timeout(limit, lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(Error::UnknownHost {
                    host,
                    detail: "no address found".into(),
                })
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(Error::UnknownHost {
            host,
            detail: e.to_string(),
        }),
        Err(_) => Err(Error::Timeout {
            what: format!("name lookup (no answer within {} s)", limit.as_secs_f64()),
            host,
        }),
    }
}

/// Maps a failure of the first session (before any data) to the user-facing error.
pub(crate) fn startup_error(url: &FtpUrl, creds: &Credentials, e: SessionError) -> Error {
    let host = url.host_for_connect();
    match e {
        SessionError::Connect { addr, source } => Error::Connect {
            addr: addr.to_string(),
            detail: source.to_string(),
        },
        SessionError::Timeout(what) => Error::Timeout { what, host },
        ref r @ SessionError::Reply { .. } if r.is_busy() => Error::Refused {
            host,
            reply: r.to_string(),
        },
        SessionError::Reply {
            code: code @ (530 | 534 | 550),
            command,
            text,
        } if !url.tls.is_tls() && command == "login" && (code == 534 || asks_for_tls(&text)) => {
            Error::LoginNeedsTls {
                host,
                user: creds.user.clone(),
                reply: text,
            }
        }
        SessionError::Reply {
            code: 530, text, ..
        } => Error::Login {
            host,
            user: creds.user.clone(),
            reply: text,
        },
        SessionError::Reply {
            command,
            code: 550,
            text,
        } if command != "login" => Error::NotFound {
            path: url.path.clone(),
            reply: text,
        },
        SessionError::Reply {
            command,
            code: 0,
            text,
        } => Error::Protocol {
            host,
            command,
            reply: format!("{text} (no valid reply code)"),
        },
        SessionError::Reply {
            command,
            code,
            text,
            ..
        } if code < 500 => Error::Refused {
            host,
            reply: format!("{command}: {text}"),
        },
        SessionError::Reply { command, text, .. } => Error::Protocol {
            host,
            command,
            reply: text,
        },
        SessionError::Io { command, source } => Error::Connect {
            addr: host,
            detail: format!("connection lost during {command}: {source}"),
        },
        SessionError::Protocol(p) | SessionError::Desync(p) | SessionError::Changed(p) => {
            Error::Protocol {
                host,
                command: "probe".into(),
                reply: p,
            }
        }
        SessionError::Tls(e) => Error::Tls(e),
    }
}

/// A login refusal that says the server wants TLS first: vsftpd answers "530 Anonymous sessions
/// must use encryption.", libunftp "534 A TLS connection is required on the control channel"
/// (534 is RFC 2228's "denied for policy reasons"), proftpd's mod_tls is documented to answer
/// "550 SSL/TLS required on the control channel".
fn asks_for_tls(reply: &str) -> bool {
    let r = reply.to_ascii_lowercase();
    ["encrypt", "tls", "ssl"].iter().any(|w| r.contains(w))
}

fn not_found_or(url: &FtpUrl, creds: &Credentials, e: SessionError) -> Error {
    match e {
        SessionError::Reply {
            code: 550, text, ..
        } => Error::NotFound {
            path: url.path.clone(),
            reply: text,
        },
        other => startup_error(url, creds, other),
    }
}

/// Written bytes all connections together leave to the kernel's own write-back before starting
/// it themselves (each connection gets an equal share, at least [`WRITE_BACK_MIN`]).
const WRITE_BACK_BUDGET: u64 = 16 << 20;
const WRITE_BACK_MIN: u64 = 512 << 10;

/// Per-connection counters the progress view reads.
#[derive(Default)]
struct ConnStat {
    bytes: AtomicU64,
    view: Mutex<(Option<Arc<Segment>>, String)>,
    /// Recent throughput while reading, bytes/s as `f64` bits (0: not measured yet). Updated
    /// by the worker itself ([`RateProbe`]) and, for a reader that gets nothing, decayed by
    /// [`RateMeter`]; the scheduler uses it to decide whom a free connection helps.
    rate: AtomicU64,
    /// When `rate` last took a sample, µs since the download started.
    sampled_at: AtomicU64,
    /// Since when the connection has been reading its current transfer (its first byte).
    reading_since: Mutex<Option<Instant>>,
}

/// A running average kept in an `AtomicU64` as `f64` bits (0.0: none yet).
fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

/// Moves the average in `a` a `weight` of the way towards `sample` (the first sample is taken
/// as it is). Racing updates may lose one sample: harmless for an estimate.
fn blend_f64(a: &AtomicU64, sample: f64, weight: f64) {
    let old = load_f64(a);
    let new = if old > 0.0 {
        old + weight * (sample - old)
    } else {
        sample
    };
    a.store(new.to_bits(), Ordering::Relaxed);
}

/// Interval of a reader's own rate samples ([`RateProbe`]).
const RATE_SAMPLE: Duration = Duration::from_millis(100);

/// A reader measures its own throughput over its reading time only: bytes per second from its
/// first byte on, a sample every [`RATE_SAMPLE`] and one for the rest when the transfer ends.
/// (Sampling connections from outside at fixed ticks missed fast transfers that began and
/// ended between two ticks, and counted setup time as slowness: a loaded server's connection
/// looked 100 times slower than it was, and others took its ranges over.)
struct RateProbe {
    at: Instant,
    bytes: u64,
}

impl RateProbe {
    fn start(shared: &Shared, stat: &ConnStat, pos: u64) -> RateProbe {
        stat.sampled_at.store(
            shared.started.elapsed().as_micros() as u64,
            Ordering::Relaxed,
        );
        RateProbe {
            at: Instant::now(),
            bytes: pos,
        }
    }

    /// Called after each read with the reader's position; `last`: the transfer ends here.
    fn sample(&mut self, shared: &Shared, stat: &ConnStat, pos: u64, last: bool) {
        let dt = self.at.elapsed();
        if dt < RATE_SAMPLE && !(last && dt >= RATE_SAMPLE / 10) {
            return;
        }
        let rate = pos.saturating_sub(self.bytes) as f64 / dt.as_secs_f64();
        // A short last piece counts for less than a whole sample.
        let weight = 0.5 * (dt.as_secs_f64() / RATE_SAMPLE.as_secs_f64()).min(1.0);
        blend_f64(&stat.rate, rate.max(1.0), weight);
        *self = RateProbe::start(shared, stat, pos);
    }
}

/// Decays the rate of a connection that is reading but got nothing for a while (a stalled
/// server): every tick, a reader whose own last sample is older than two sample intervals
/// blends in its bytes since the last tick (half weight: a stalled connection's rate halves
/// every tick). Connections not reading keep their last rate.
struct RateMeter {
    last: Vec<u64>,
    at: Instant,
}

impl RateMeter {
    fn new(shared: &Shared) -> Self {
        RateMeter {
            last: shared
                .conns
                .iter()
                .map(|c| c.bytes.load(Ordering::Relaxed))
                .collect(),
            at: Instant::now(),
        }
    }

    fn measure_rates(&mut self, shared: &Shared) {
        let dt = self.at.elapsed().as_secs_f64();
        if dt < 0.05 {
            return;
        }
        self.at = Instant::now();
        for (c, last) in shared.conns.iter().zip(self.last.iter_mut()) {
            let bytes = c.bytes.load(Ordering::Relaxed);
            let delta = bytes.saturating_sub(*last);
            *last = bytes;
            let reading = c.view.lock().unwrap_or_else(|p| p.into_inner()).1 == "reading";
            let now = shared.started.elapsed().as_micros() as u64;
            let quiet = now.saturating_sub(c.sampled_at.load(Ordering::Relaxed))
                >= 2 * RATE_SAMPLE.as_micros() as u64;
            if !reading || !quiet {
                continue;
            }
            c.sampled_at.store(now, Ordering::Relaxed);
            let sample = delta as f64 / dt;
            if sample > 0.0 || load_f64(&c.rate) > 0.0 {
                // Keep a measured rate positive: 0 means "not measured".
                blend_f64(&c.rate, sample.max(1.0), 0.5);
            }
        }
    }
}

/// First guess of the time from asking for a range to its first byte, until measured.
const SETUP_GUESS: f64 = 0.05;

impl ConnStat {
    fn set(&self, seg: Option<Arc<Segment>>, state: &str) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.0 = seg;
        v.1.clear();
        v.1.push_str(state);
        *self.reading_since.lock().unwrap_or_else(|p| p.into_inner()) =
            (state == "reading").then(Instant::now);
    }

    /// Seconds this connection has been reading its current transfer (0 when not reading).
    fn reading_for(&self) -> f64 {
        self.reading_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(0.0, |t| t.elapsed().as_secs_f64())
    }
}

/// State shared by the workers of one download.
struct Shared {
    sched: Arc<Scheduler>,
    writer: PartWriter,
    path: String,
    /// Bytes to fetch: the file's size, or less with `Job::limit`.
    size: u64,
    /// The file's size on the server (where a transfer without RANG ends by itself).
    remote_size: u64,
    /// When the download started, and the first data byte after it (µs; `u64::MAX`: none).
    started: Instant,
    first_byte_us: AtomicU64,
    addrs: Vec<SocketAddr>,
    /// The TLS client when the URL uses TLS: each new session gets its own config from it.
    tls: Option<Arc<TlsClient>>,
    creds: Credentials,
    timeouts: Timeouts,
    max_tries: u32,
    /// `REST` support learned by the probe: (`REST n` works, `REST 0` works).
    rest: (bool, bool),
    epsv: AtomicBool,
    /// Ranged transfers use `RANG` (the server offers it, and `--no-rang` was not given).
    rang: AtomicBool,
    part_path: PathBuf,
    use_pasv_address: bool,
    active: bool,
    /// First wait before a connection refused as "too many" tries again (doubles each time).
    busy_retry: Duration,
    /// No progress for this long, while another connection is free: that one takes over.
    /// `None` when it would not come well before the stall timeout.
    straggler_timeout: Option<Duration>,
    /// Set when one worker hit a permanent error: the others stop.
    failed: AtomicBool,
    conns: Vec<ConnStat>,
    /// Workers with an id below this may work (`-n auto` raises it; otherwise all of them).
    allowed: AtomicUsize,
    /// Set when the server refused a connection as one too many.
    refused: AtomicBool,
    /// Bytes written into the file in this run, and how many of them the last checkpoint had
    /// seen (all durable since). Readers pause while `stake_limit` bytes or more are not yet
    /// covered by a checkpoint, so a kill never costs more than that fetched again.
    fetched: AtomicU64,
    durable_fetched: AtomicU64,
    stake_limit: u64,
    /// Notified after each checkpoint.
    checkpointed: tokio::sync::Notify,
    /// A local write failure met inside a transfer (see `local_failure`).
    local_error: Mutex<Option<Error>>,
    /// Rate limits every read of this download obeys (`--limit-rate`, per file and total).
    rate_limits: Vec<Arc<RateLimit>>,
    /// Seconds from `REST`+`RETR` on an open session to the first byte (running average, as
    /// `f64` bits; 0: not measured yet).
    setup: AtomicU64,
    opened: AtomicU64,
    /// Bytes a connection writes before releasing them from RSS.
    write_back_every: u64,
    /// The batch's connection budget for this server (see [`Job::pool`]).
    pool: Option<Arc<HostPool>>,
    /// The permit each worker holds while it has (or may open) a connection, with a pool.
    slots: Vec<Mutex<Option<Permit>>>,
    /// `(chunk size, file size)` of the manifest's chunk hashes (chunk size 0: none), and the
    /// chaining values the writers took of whole chunks as they wrote them.
    chunking: (u64, u64),
    hashed_inline: Arc<InlineHashes>,
}

/// `(chunk, chaining value, the scheduler's rewind count when the attempt that wrote it began)`.
type InlineHash = (u64, blake3::hazmat::ChainingValue, u64);

/// Chaining values of whole chunks hashed by the connection that wrote them, right after each
/// piece was written ([`crate::integrity::verify::ChunkStream`]), waiting for the checkpointer to take
/// them ([`Checkpoint::take_inline`]): a chunk hashed here is not read back.
#[derive(Default)]
struct InlineHashes {
    list: Mutex<Vec<InlineHash>>,
}

impl InlineHashes {
    fn push(&self, chunk: u64, cv: blake3::hazmat::ChainingValue, rewinds: u64) {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((chunk, cv, rewinds));
    }

    fn take(&self) -> Vec<InlineHash> {
        std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Bytes read at a time when hashing chunks.
const HASH_BUF: usize = 1 << 20;

/// Flush-then-save of the manifest, in that order.
struct Checkpoint {
    sched: Arc<Scheduler>,
    part: Arc<PartFile>,
    manifest: Manifest,
    /// Where the manifest is saved; `None`: it is kept in memory only (discarded bytes), so a
    /// checkpoint just marks the written bytes as done for the readers' pause.
    path: Option<PathBuf>,
    /// Buffer for reading chunks to hash, allocated once.
    buf: Vec<u8>,
    /// Chaining values of chunks hashed from written bytes before they were durable (see
    /// [`Checkpoint::hash_written_chunks`]), by chunk; moved into the manifest once durable.
    early: Vec<Option<blake3::hazmat::ChainingValue>>,
    /// The scheduler's rewind count when `early` was last checked.
    early_rewinds: u64,
    /// Chunks the writers hashed as they wrote them, moved into `early` at each pass.
    hashed_inline: Arc<InlineHashes>,
    /// Chunks taken from `hashed_inline`, and chunks read back to be hashed (for the trace).
    inline_used: u64,
    read_back: u64,
}

impl Checkpoint {
    /// Flush, hash the chunks that became durable, save the manifest, in that order.
    fn save(&mut self) -> Result<(), Error> {
        let snap = self.sched.snapshot();
        if !snap.to_flush.is_empty() {
            self.part.flush()?;
        }
        self.manifest.ranges = Scheduler::records(&snap);
        self.manifest.drop_stale_chunks();
        self.check_rewinds();
        self.take_inline();
        self.hash_durable_chunks()?;
        if let Some(path) = &self.path {
            self.manifest.save(path)?;
        }
        self.sched.mark_durable(&snap);
        Ok(())
    }

    /// Records the chaining value of every chunk whose bytes are all durable now and that has
    /// none yet. Each chunk is read once, from the page cache, right after its flush.
    fn hash_durable_chunks(&mut self) -> Result<(), Error> {
        let (Some(size), cs) = (self.manifest.size, self.manifest.chunk_size) else {
            return Ok(());
        };
        for k in 0..self.manifest.chunks.len() {
            if self.manifest.chunks[k].is_some() {
                continue;
            }
            let (from, to) = verify::chunk_range(k as u64, cs, size);
            if !self.manifest.is_durable(from, to) {
                continue;
            }
            let cv = match self.early.get_mut(k).and_then(Option::take) {
                Some(cv) => cv,
                None => {
                    self.read_back += 1;
                    let part = &self.part;
                    verify::hash_chunk(from, to, &mut self.buf, |b, at| part.read_exact_at(b, at))?
                }
            };
            self.manifest.chunks[k] = Some(verify::to_hex(&cv));
        }
        Ok(())
    }

    /// Moves the chunks the writers hashed into `early`, unless a range was rewound since
    /// the attempt that wrote them began (their bytes may be written again): such chunks are
    /// read back instead, as are the ones no writer saw whole.
    fn take_inline(&mut self) {
        let taken = self.hashed_inline.take();
        if taken.is_empty() {
            return;
        }
        self.early.resize(self.manifest.chunks.len(), None);
        for (k, cv, rewinds) in taken {
            let k = k as usize;
            if rewinds == self.early_rewinds
                && k < self.early.len()
                && self.manifest.chunks[k].is_none()
            {
                self.early[k] = Some(cv);
                self.inline_used += 1;
            }
        }
        // A rewind meanwhile: forget them all (as for hashes read back).
        self.check_rewinds();
    }

    /// Forgets the early hashes if a range was rewound since they were taken (its bytes may
    /// be written again).
    fn check_rewinds(&mut self) {
        let rewinds = self.sched.rewinds();
        if rewinds != self.early_rewinds {
            self.early.iter_mut().for_each(|cv| *cv = None);
            self.early_rewinds = rewinds;
        }
    }

    /// Between checkpoints: hashes the chunks whose bytes are all written but not yet durable,
    /// so that the checkpoint that makes them durable (above all the last one, which the user
    /// waits for) has little left to read and hash. The bytes hashed are the ones that will be
    /// flushed: a range's written bytes change only through a rewind (see `check_rewinds`).
    fn hash_written_chunks(&mut self) -> Result<(), Error> {
        let (Some(size), cs) = (self.manifest.size, self.manifest.chunk_size) else {
            return Ok(());
        };
        if cs == 0 {
            return Ok(());
        }
        self.check_rewinds();
        self.take_inline();
        let snap = self.sched.snapshot();
        self.early.resize(self.manifest.chunks.len(), None);
        for k in 0..self.manifest.chunks.len() {
            if self.manifest.chunks[k].is_some() || self.early[k].is_some() {
                continue;
            }
            let (from, to) = verify::chunk_range(k as u64, cs, size);
            if !Scheduler::written(&snap, from, to) {
                continue;
            }
            self.read_back += 1;
            let part = &self.part;
            let cv =
                verify::hash_chunk(from, to, &mut self.buf, |b, at| part.read_exact_at(b, at))?;
            self.early[k] = Some(cv);
        }
        // A rewind during the pass: its hashes may predate the rewrite.
        self.check_rewinds();
        Ok(())
    }

    /// The file's BLAKE3 once every chunk is hashed: merged from the chunk hashes (a file of
    /// one chunk or less is simply read). `None` for discarded bytes (no chunk hashes either).
    fn file_hash(&self) -> Result<Option<blake3::Hash>, Error> {
        let size = self.part.len();
        let cs = self.manifest.chunk_size;
        if cs == 0 || size <= cs {
            return self.part.blake3().map_err(Error::from);
        }
        let cvs: Option<Vec<_>> = self
            .manifest
            .chunks
            .iter()
            .map(|h| h.as_deref().and_then(verify::from_hex))
            .collect();
        match cvs {
            Some(cvs) => Ok(Some(verify::root_hash(&cvs, cs, size))),
            None => self.part.blake3().map_err(Error::from),
        }
    }
}

/// Hashes every chunk the manifest has a hash for, from the `.part`, and forgets the ones that
/// differ so they are fetched again. Returns (chunks checked, chunks that differed).
fn verify_chunks(part: &PartFile, manifest: &mut Manifest) -> Result<(usize, usize), Error> {
    let (Some(size), cs) = (manifest.size, manifest.chunk_size) else {
        return Ok((0, 0));
    };
    let mut buf = vec![0u8; HASH_BUF];
    let (mut checked, mut bad) = (0, 0);
    for k in 0..manifest.chunks.len() {
        let Some(expected) = manifest.chunks[k].clone() else {
            continue;
        };
        let (from, to) = verify::chunk_range(k as u64, cs, size);
        let cv = verify::hash_chunk(from, to, &mut buf, |b, at| part.read_exact_at(b, at))?;
        checked += 1;
        if verify::to_hex(&cv) != expected {
            bad += 1;
            manifest.forget(from, to);
        }
    }
    Ok((checked, bad))
}

#[allow(clippy::too_many_arguments)]
async fn run_workers(
    shared: &Arc<Shared>,
    first: Session,
    preopened: Option<Transfer>,
    mut early: EarlyLogins,
    workers: usize,
    job: &Job,
    progress: &mut Progress,
    checkpoint: &mut Checkpoint,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut set = JoinSet::new();
    let mut first = Some((first, preopened));
    for id in 0..workers {
        let shared = shared.clone();
        let (session, head) = match first.take() {
            Some((s, p)) => (Some(s), p.map(HeadStart::Transfer)),
            None => (None, early.take(id).map(HeadStart::Login)),
        };
        set.spawn(async move { worker(id, shared, session, head).await });
    }
    // Logins no worker took (fewer workers than planned) end here.
    drop(early);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut meter = RateMeter::new(shared);
    let t0 = Instant::now();
    let mut tuner = (job.auto_connections && workers > crate::download::autotune::START)
        .then(|| crate::download::autotune::AutoTuner::new(workers, 0.0));
    let mut last_checkpoint = Instant::now();
    // A checkpoint also comes early once a third of the resume budget arrived since the last
    // one; readers pause at the whole budget (see `Shared::stake_limit`).
    let at_stake = shared.stake_limit / 3;
    let mut fetched_at_checkpoint = 0u64;
    let mut soon = tokio::time::interval(CHECKPOINT_POLL);
    soon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut result = Ok(());
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    shared.failed.store(true, Ordering::SeqCst);
                    if result.is_ok() {
                        result = Err(e);
                    }
                    set.abort_all();
                }
                Some(Err(join)) if join.is_cancelled() => {}
                Some(Err(join)) => {
                    set.abort_all();
                    result = Err(Error::Internal(format!("a connection task failed: {join}")));
                }
            },
            _ = tick.tick() => {
                meter.measure_rates(shared);
                if let Some(t) = tuner.as_mut() {
                    auto_step(t, shared, t0, job.min_range, progress);
                }
                progress.update(&view(shared));
                if let Err(e) = tokio::task::block_in_place(|| checkpoint.hash_written_chunks()) {
                    set.abort_all();
                    result = Err(e);
                }
                offer_prefix(job, shared);
            },
            _ = soon.tick() => {
                let fetched = shared.fetched.load(Ordering::SeqCst);
                if last_checkpoint.elapsed() >= job.checkpoint_interval
                    || fetched - fetched_at_checkpoint >= at_stake
                {
                    last_checkpoint = Instant::now();
                    fetched_at_checkpoint = fetched;
                    let r = tokio::task::block_in_place(|| checkpoint.save());
                    crate::trace!(
                        "checkpoint took {:.3} s",
                        last_checkpoint.elapsed().as_secs_f64()
                    );
                    match r {
                        Ok(()) => {
                            shared.durable_fetched.store(fetched, Ordering::SeqCst);
                            shared.checkpointed.notify_waiters();
                        }
                        Err(e) => {
                            set.abort_all();
                            result = Err(e);
                        }
                    }
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    return Err(interrupted(checkpoint.path.as_deref()));
                }
            }
        }
    }
    progress.update(&view(shared));
    result?;
    // The last prefix: the digest thread hashes the rest while the file is committed.
    offer_prefix(job, shared);
    if shared.sched.remaining() > 0 {
        return Err(Error::Internal(
            "every connection ended but bytes are missing".into(),
        ));
    }
    Ok(())
}

/// Tells the job's sequential digests, if any, how far from byte 0 the file is written
/// ([`crate::integrity::digest`]): one snapshot; the hashing runs on the digest's own thread.
fn offer_prefix(job: &Job, shared: &Shared) {
    if let Some(d) = &job.digest {
        // The rewind count first: a rewind after it shows in the next offer.
        let rewinds = shared.sched.rewinds();
        let snap = shared.sched.snapshot();
        let prefix = crate::integrity::digest::written_prefix(&snap.ranges);
        d.offer(&shared.part_path, prefix, rewinds);
    }
}

/// How often the run loop checks whether a checkpoint is due (by time or by bytes at stake).
const CHECKPOINT_POLL: Duration = Duration::from_millis(25);

/// The most bytes a kill may cost fetched again: 1% of the file, or 4 MiB per connection,
/// whichever is larger (the resume target).
fn resume_budget(size: u64, workers: usize) -> u64 {
    (size / 100).max(workers as u64 * (4 << 20))
}

/// Readers pause only when this many resume budgets are not covered by a checkpoint: a
/// pause at one budget capped a single fast connection at one budget per checkpoint (410 MiB/s
/// on loopback, where one stream reaches 1.6 GiB/s), for bytes that are quick to fetch again.
const STAKE_PAUSE: u64 = 8;

/// Waits while the bytes not yet covered by a checkpoint reach the pause level (a slow disk
/// or a starved checkpoint): the next checkpoint lets the readers go on.
async fn wait_for_checkpoint(shared: &Shared) {
    loop {
        let fetched = shared.fetched.load(Ordering::SeqCst);
        let durable = shared.durable_fetched.load(Ordering::SeqCst);
        if fetched.saturating_sub(durable) < STAKE_PAUSE * shared.stake_limit
            || shared.failed.load(Ordering::SeqCst)
        {
            return;
        }
        tokio::select! {
            _ = shared.checkpointed.notified() => {}
            _ = tokio::time::sleep(CHECKPOINT_POLL) => {}
        }
    }
}

/// One `-n auto` tick: measure, maybe allow more connections, say when it settles.
fn auto_step(
    tuner: &mut crate::download::autotune::AutoTuner,
    shared: &Shared,
    t0: Instant,
    min_range: u64,
    progress: &mut Progress,
) {
    use crate::download::autotune::Decision;
    let bytes = shared.fetched.load(Ordering::Relaxed);
    let setup = match load_f64(&shared.setup) {
        s if s > 0.0 => s,
        _ => SETUP_GUESS,
    };
    let allowed = tuner.allowed() as u64;
    // More connections are worth measuring only while each could get a few ranges.
    let worth_more = shared.sched.remaining() > 4 * min_range.max(1) * (allowed + 1);
    let refused = shared.refused.load(Ordering::SeqCst);
    match tuner.tick(
        t0.elapsed().as_secs_f64(),
        bytes,
        setup,
        refused,
        worth_more,
    ) {
        Decision::Wait => {}
        Decision::Grow(n) => {
            crate::trace!("-n auto: allowing {n} connections");
            shared.allowed.store(n, Ordering::SeqCst);
        }
        Decision::Settled { connections, why } => {
            crate::trace!("-n auto: settled on {connections}: {why}");
            progress.note(&format!(
                "-n auto: stopped adding connections at {connections} ({why})"
            ));
        }
    }
}

fn view(shared: &Shared) -> View {
    let conns: Vec<ConnView> = shared
        .conns
        .iter()
        .map(|c| {
            let v = c.view.lock().unwrap_or_else(|p| p.into_inner());
            ConnView {
                bytes: c.bytes.load(Ordering::Relaxed),
                range: v.0.as_ref().map(|s| (s.pos(), s.end())),
                state: v.1.clone(),
            }
        })
        .collect();
    View {
        done: shared.size - shared.sched.remaining(),
        total: Some(shared.size),
        conns,
    }
}

/// One connection: take ranges until none is left, reconnecting and retrying as needed.
async fn worker(
    id: usize,
    shared: Arc<Shared>,
    mut session: Option<Session>,
    mut head: Option<HeadStart>,
) -> Result<(), Error> {
    let stat = &shared.conns[id];
    let mut rejoin_after = shared.busy_retry;
    // Bytes go socket -> this buffer -> the file's page cache (pwrite): measured cheaper than
    // receiving straight into a memory map (docs/architecture.md, "Decisions"). One per
    // connection, reused by every attempt.
    let mut buf = vec![0u8; READ_CHUNK as usize];
    // Plain data connections skip the buffer: socket -> pipe -> page cache (crate::ftp::pipe).
    // FTPSEG_NO_SPLICE=1 turns this off (for A/B measurements, docs/benchmarks.md).
    let pipe = if std::env::var_os("FTPSEG_NO_SPLICE").is_some() {
        None
    } else {
        crate::ftp::pipe::Pipe::new()
            .inspect_err(|e| crate::trace!("conn {id}: no pipe ({e}); reading into a buffer"))
            .ok()
    };
    // `-n auto`: wait until this connection is allowed (or the download no longer needs it).
    // Such a worker is not counted live until it joins.
    if id >= shared.allowed.load(Ordering::SeqCst) {
        stat.set(None, "waiting (-n auto)");
        while id >= shared.allowed.load(Ordering::SeqCst) {
            if shared.failed.load(Ordering::SeqCst) || !shared.sched.unfinished() {
                stat.set(None, "not needed");
                return Ok(());
            }
            tokio::time::sleep(LINGER_POLL).await;
        }
        if !shared.sched.rejoin() {
            stat.set(None, "not needed");
            return Ok(());
        }
    }
    'ranges: loop {
        if !hold_slot(&shared, id, &mut session).await {
            shared.sched.retire();
            break 'ranges;
        }
        let Some(seg) = find_work(&shared, id) else {
            if shared.failed.load(Ordering::SeqCst) || !shared.sched.unfinished() {
                shared.sched.retire();
                break 'ranges;
            }
            // Nothing to take now. Stay around: a connection may stall or fall far behind
            // (then this one takes its range over), or hand a range back.
            stat.set(None, "idle");
            tokio::select! {
                _ = tokio::time::sleep(LINGER_POLL) => {}
                _ = shared.sched.freed() => {}
            }
            continue 'ranges;
        };
        {
            loop {
                if shared.failed.load(Ordering::SeqCst) {
                    return Ok(());
                }
                stat.set(Some(seg.clone()), "connecting");
                crate::trace!("conn {id} starts [{}..{})", seg.pos(), seg.end());
                let before = seg.pos();
                // A free connection may take this range over if it stalls: dropping the
                // attempt stops every write into the range before it is released.
                let attempt = tokio::select! {
                    r = fetch_range(&shared, id, &mut session, head.take(), &seg, &mut buf, pipe.as_ref()) => Some(r),
                    _ = seg.preempted() => None,
                };
                let Some(attempt) = attempt else {
                    crate::trace!("conn {id} lets go of [{}..{})", seg.pos(), seg.end());
                    drop(session.take());
                    let tries = seg.attempt_ended(before, true);
                    shared.sched.release_preempted(&seg);
                    if tries >= shared.max_tries {
                        return Err(Error::GaveUp {
                            tries,
                            last: "no progress on any connection (taken over after \
                                   --straggler-timeout each time)"
                                .into(),
                        });
                    }
                    continue 'ranges;
                };
                let e = match attempt {
                    Ok(()) => {
                        crate::trace!(
                            "conn {id} read [{before}..{}) at {:.1} MiB/s",
                            seg.pos(),
                            load_f64(&stat.rate) / 1048576.0
                        );
                        seg.attempt_ended(before, false);
                        rejoin_after = shared.busy_retry;
                        if shared.sched.complete(id, &seg) {
                            break;
                        }
                        continue;
                    }
                    Err(e) => e,
                };
                // Never reuse a session after a failure: it may be out of step.
                drop(session.take());
                // The first session logged in with these credentials, so a 530 now means
                // "too many users" however the server words it.
                let busy = e.is_busy() || e.code() == Some(530);
                if busy {
                    shared.refused.store(true, Ordering::SeqCst);
                }
                if !busy && !e.is_transient() {
                    return Err(range_error(&shared, e));
                }
                if busy && shared.sched.give_up(&seg) {
                    // The server wants fewer connections: another live connection takes this
                    // range; this one waits, then tries to come back.
                    if park(&shared, id, &mut rejoin_after, &mut session).await {
                        continue 'ranges;
                    }
                    return Ok(());
                }
                let tries = seg.attempt_ended(before, true);
                if tries >= shared.max_tries {
                    return Err(Error::GaveUp {
                        tries,
                        last: e.to_string(),
                    });
                }
                let wait = backoff(tries);
                stat.set(
                    Some(seg.clone()),
                    &format!("retry in {:.1} s", wait.as_secs_f64()),
                );
                let preempted = tokio::select! {
                    _ = tokio::time::sleep(wait) => false,
                    _ = seg.preempted() => true,
                };
                if preempted {
                    shared.sched.release_preempted(&seg);
                    continue 'ranges;
                }
            }
        }
    }
    stat.set(None, "done");
    let permit = shared.slots[id]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match (&shared.pool, permit) {
        (Some(pool), Some(permit)) => pool.give_back(session, permit),
        _ => {
            if let Some(s) = session {
                s.quit_later();
            }
        }
    }
    Ok(())
}

/// With a connection budget ([`Job::pool`]): makes sure worker `id` holds a permit before it
/// takes a range, waiting for one (or for an idle session of the same server, which becomes
/// `session`). `false` when the download finished or failed while waiting. Without a budget:
/// always `true`.
async fn hold_slot(shared: &Shared, id: usize, session: &mut Option<Session>) -> bool {
    let Some(pool) = &shared.pool else {
        return true;
    };
    loop {
        if shared.slots[id]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return true;
        }
        if shared.failed.load(Ordering::SeqCst) || !shared.sched.unfinished() {
            return false;
        }
        shared.conns[id].set(None, "waiting for a connection slot");
        tokio::select! {
            (permit, idle) = pool.acquire() => {
                *shared.slots[id].lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
                if let Some(mut s) = idle {
                    adopt(shared, &mut s);
                    drop(session.replace(s));
                }
                return true;
            }
            _ = tokio::time::sleep(LINGER_POLL) => {}
        }
    }
}

/// Applies what this download learned about the server to a session opened for it or handed
/// over from another file.
fn adopt(shared: &Shared, s: &mut Session) {
    s.set_rest_support(shared.rest);
    s.set_rang(shared.rang.load(Ordering::Relaxed));
    s.set_use_pasv_address(shared.use_pasv_address);
    s.set_active(shared.active);
    s.set_epsv(shared.epsv.load(Ordering::Relaxed));
}

/// Asks the scheduler for work with the connections' measured speeds.
fn find_work(shared: &Shared, id: usize) -> Option<Arc<Segment>> {
    let rates: Vec<f64> = shared.conns.iter().map(|c| load_f64(&c.rate)).collect();
    let reading: Vec<f64> = shared.conns.iter().map(ConnStat::reading_for).collect();
    let setup = match load_f64(&shared.setup) {
        s if s > 0.0 => s,
        _ => SETUP_GUESS,
    };
    let speeds = Speeds {
        rates: &rates,
        reading: &reading,
        setup,
        stall: shared.straggler_timeout,
    };
    shared.sched.try_acquire(id, &speeds)
}

/// How often a connection with nothing to do looks for a stalled range or a handed-back one.
const LINGER_POLL: Duration = Duration::from_millis(100);

/// Longest wait before a connection refused as "too many" tries to come back.
const BUSY_RETRY_MAX: Duration = Duration::from_secs(120);

/// A connection the server refused as one too many waits `wait` (doubled for the next time,
/// up to [`BUSY_RETRY_MAX`]), logs in again (waiting again while the server still refuses),
/// then rejoins the download (`true`) with the new `session`. In a batch it rejoins without
/// logging in: the login needs a permit of the pool first. `false` if the download ended (or
/// failed) meanwhile.
async fn park(
    shared: &Shared,
    id: usize,
    wait: &mut Duration,
    session: &mut Option<Session>,
) -> bool {
    // The batch's budget for this server shrinks by this connection (crate::ftp::pool).
    let permit = shared.slots[id]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let (Some(pool), Some(permit)) = (&shared.pool, permit) {
        pool.shrink(permit);
    }
    loop {
        shared.conns[id].set(None, &format!("server busy: retry in {} s", wait.as_secs()));
        let until = Instant::now() + *wait;
        while Instant::now() < until {
            if shared.failed.load(Ordering::SeqCst) || shared.sched.remaining() == 0 {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250).min(*wait)).await;
        }
        *wait = (*wait * 2).min(BUSY_RETRY_MAX);
        if shared.pool.is_some() {
            // In a batch the login needs a permit first (`hold_slot`), after the range.
            return shared.sched.rejoin();
        }
        // Logged in first, then a range: taking a range first would split a live
        // connection's range for a login the server may refuse again (measured: five
        // refused comebacks near the end of a per-IP-limited download cost 2 % of its time).
        match log_in(shared).await {
            Ok(s) if shared.sched.rejoin() => {
                *session = Some(s);
                return true;
            }
            Ok(s) => {
                s.quit_later();
                return false;
            }
            Err(e) => crate::trace!("conn {id}: still refused ({e})"),
        }
    }
}

/// A new session for this download's server, with what the download learned about it.
async fn log_in(shared: &Shared) -> Result<Session, SessionError> {
    let s = Session::connect_with(
        &shared.addrs,
        &shared.creds,
        shared.timeouts,
        shared.tls.as_ref(),
    )
    .await?;
    Ok(welcome(shared, s))
}

/// A session this download opened (now or early): counted, and told what the download
/// learned about the server.
fn welcome(shared: &Shared, mut s: Session) -> Session {
    shared.opened.fetch_add(1, Ordering::Relaxed);
    adopt(shared, &mut s);
    s
}

/// A local failure inside a transfer (the disk refused a write): kept for the worker to report
/// as it is (exit 8), and returned as a session error that is never retried.
fn local_failure(shared: &Shared, e: Error) -> SessionError {
    let text = e.to_string();
    *shared.local_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    SessionError::Protocol(text)
}

fn range_error(shared: &Shared, e: SessionError) -> Error {
    if let Some(local) = shared
        .local_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return local;
    }
    let host = shared
        .addrs
        .first()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    match e {
        SessionError::Reply {
            code: 530, text, ..
        } => Error::Login {
            host,
            user: shared.creds.user.clone(),
            reply: text,
        },
        SessionError::Reply {
            code: 550 | 551 | 553,
            text,
            ..
        } => Error::NotFound {
            path: shared.path.clone(),
            reply: text,
        },
        SessionError::Reply { command, text, .. } => Error::Protocol {
            host,
            command,
            reply: text,
        },
        SessionError::Changed(detail) => Error::RemoteChanged {
            detail,
            part: shared.part_path.clone(),
        },
        SessionError::Tls(e) => Error::Tls(e),
        other => Error::Protocol {
            host,
            command: "RETR".into(),
            reply: other.to_string(),
        },
    }
}

/// Exponential backoff with jitter: about 0.5 s, 1 s, 2 s ... capped at 30 s, each scaled by a
/// random factor in [0.5, 1.5) so that connections do not retry in lockstep.
pub(crate) fn backoff(tries: u32) -> Duration {
    let base = 0.5 * 2f64.powi(tries.saturating_sub(1).min(6) as i32);
    let jitter = 0.5 + rand::random::<f64>();
    Duration::from_secs_f64((base * jitter).min(30.0))
}

/// One attempt at a range: connect if needed, `REST`+`RETR` from the range's position, read
/// into the file until the range's (moving) end, stop early, keep the session for the next range.
/// `head`: a login started early, used instead of connecting; or a transfer the probe already
/// started at byte 0 (servers without SIZE), used if the range starts there, otherwise stopped.
async fn fetch_range(
    shared: &Shared,
    id: usize,
    session: &mut Option<Session>,
    head: Option<HeadStart>,
    seg: &Arc<Segment>,
    buf: &mut [u8],
    pipe: Option<&crate::ftp::pipe::Pipe>,
) -> Result<(), SessionError> {
    let stat = &shared.conns[id];
    let (login, preopened) = match head {
        Some(HeadStart::Login(login)) => (Some(login), None),
        Some(HeadStart::Transfer(transfer)) => (None, Some(transfer)),
        None => (None, None),
    };
    if session.is_none() {
        let s = match login {
            // Started during the first session's probe ([`EarlyLogins`]).
            Some(login) => welcome(shared, login.session().await?),
            None => log_in(shared).await?,
        };
        *session = Some(s);
    }
    let s = session.as_mut().expect("connected above");
    if !shared.rest.0 && seg.pos() > seg.start {
        // Without REST a failed stream can only start again from byte 0.
        shared.sched.rewind(seg, seg.start);
    }
    let mut pos = seg.pos();
    let attempt_start = pos;
    let asked = Instant::now();
    let mut first_byte = true;
    let transfer = match preopened {
        Some(t) if pos == 0 && pos < seg.end() => {
            seg.set_transfer_end(None);
            t
        }
        Some(t) => {
            s.end_transfer(t.stream, false).await?;
            if pos >= seg.end() {
                return Ok(());
            }
            retr_piece(shared, s, seg, pos).await?
        }
        None => {
            if pos >= seg.end() {
                return Ok(());
            }
            retr_piece(shared, s, seg, pos).await?
        }
    };
    if !s.uses_epsv() {
        shared.epsv.store(false, Ordering::Relaxed);
    }
    if !s.uses_rang() {
        shared.rang.store(false, Ordering::Relaxed);
    }
    // Where the server ends this transfer by itself: the end of the file, or the end of the
    // range it was asked for with RANG.
    let transfer_end = transfer.ends_at.unwrap_or(shared.remote_size);
    let mut stream = transfer.stream;
    let mut probe: Option<RateProbe> = None;
    // "reading" (the state whose throughput is measured) begins with the first byte: a rate
    // that decayed while a loaded server was still starting the transfer would make this
    // connection look slow, and others would take its range over just as its data came.
    stat.set(Some(seg.clone()), "starting");
    // Written back however the attempt ends: finished, failed, or dropped by a take-over.
    let mut pending = WriteBack {
        writer: &shared.writer,
        from: pos,
        to: pos,
    };
    // Whole chunks this attempt writes are hashed as they are written (see `InlineHashes`).
    let (cs, file_size) = shared.chunking;
    let mut chunks = crate::integrity::verify::ChunkStream::new(cs, file_size);
    let rewinds_at_start = shared.sched.rewinds();
    let mut hashed = |at: u64, bytes: &[u8]| {
        chunks.feed(at, bytes, |k, cv| {
            shared.hashed_inline.push(k, cv, rewinds_at_start)
        })
    };
    loop {
        // A steal that was rolled back can leave `end` past a RANG transfer's end: that
        // transfer stops at its own end and the range goes on in a new one.
        let end = seg.end().min(transfer_end);
        if pos >= end {
            break;
        }
        // Far behind the checkpoints (the machine is starved, or the disk is slow): wait for
        // one. Normally the early checkpoints keep well within a third of this.
        if shared.fetched.load(Ordering::Relaxed)
            >= shared.durable_fetched.load(Ordering::Relaxed) + STAKE_PAUSE * shared.stake_limit
        {
            wait_for_checkpoint(shared).await;
        }
        let limit = end.min(pos + READ_CHUNK);
        // This worker owns [pos, end) of `seg`: the steal protocol in `sched` guarantees nobody
        // else writes there, and no read reaches past a cut.
        let want = shared
            .rate_limits
            .iter()
            .map(|l| l.read_size())
            .fold(limit - pos, u64::min) as usize;
        let spliced = pipe.filter(|_| shared.writer.splices() && Session::can_splice(&mut stream));
        let n = match spliced {
            Some(p) => s.splice_data(&mut stream, p, want).await?,
            None => s.read_data(&mut stream, &mut buf[..want]).await?,
        };
        for l in &shared.rate_limits {
            l.take(n as u64).await;
        }
        let show: crate::storage::ShowWritten = (cs > 0).then_some(&mut hashed);
        let written = match spliced {
            _ if n == 0 => Ok(()),
            Some(p) => shared.writer.write_from_pipe(p, n, pos, buf, show),
            None => shared.writer.write_at(&buf[..n], pos).map(|()| {
                if let Some(show) = show {
                    show(pos, &buf[..n]);
                }
            }),
        };
        if let Err(e) = written {
            return Err(local_failure(
                shared,
                Error::io("cannot write to", &shared.part_path, e),
            ));
        }
        if n == 0 {
            // The server ended the data early. Read its reply for the message.
            let why = match s.end_transfer(stream, true).await {
                Ok(()) => "the server said the transfer was complete".to_owned(),
                Err(e) => {
                    // vsftpd closes a TLS data connection that did not resume the control
                    // connection's session, then says 522: not worth retrying.
                    let detail = format!("the data connection was closed at byte {pos}");
                    if let Some(refused) = s.tls_refusal(&e, detail) {
                        return Err(refused);
                    }
                    e.to_string()
                }
            };
            return Err(SessionError::Io {
                command: format!("RETR {}", shared.path),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("data ended at byte {pos}, expected {end} ({why})"),
                ),
            });
        }
        if let Some(p) = probe.as_mut() {
            p.sample(shared, stat, pos + n as u64, false);
        }
        if first_byte {
            first_byte = false;
            // The first read holds what queued up during the setup: measure from here.
            probe = Some(RateProbe::start(shared, stat, pos + n as u64));
            stat.set(Some(seg.clone()), "reading");
            let since_start = shared.started.elapsed().as_micros() as u64;
            let _ = shared.first_byte_us.compare_exchange(
                u64::MAX,
                since_start,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            let took = asked.elapsed().as_secs_f64();
            blend_f64(&shared.setup, took, 0.3);
            crate::trace!("conn {id} first byte at {pos} after {:.3} s", took);
        }
        pos += n as u64;
        seg.advance(pos);
        stat.bytes.fetch_add(n as u64, Ordering::Relaxed);
        shared.fetched.fetch_add(n as u64, Ordering::Relaxed);
        pending.to = pos;
        if pos - pending.from >= shared.write_back_every {
            shared.writer.write_back(pending.from, pos);
            pending.from = pos;
        }
    }
    drop(pending);
    if let Some(p) = probe.as_mut() {
        p.sample(shared, stat, pos, true);
    }
    let to_eof = if pos == transfer_end {
        // The transfer reached its end (of the file, or of the RANG range): the server must
        // have nothing more to send, and then confirms with 226.
        let mut probe = [0u8; 1];
        match s.read_data(&mut stream, &mut probe).await? {
            0 => true,
            _ if transfer_end < shared.remote_size => {
                // The server did not honour RANG's end: stop early as usual, and use REST.
                shared.rang.store(false, Ordering::Relaxed);
                false
            }
            _ => {
                return Err(SessionError::Changed(format!(
                    "the server sent more than the {} bytes SIZE announced: the file is \
                     changing on the server",
                    shared.remote_size
                )));
            }
        }
    } else {
        false
    };
    if !to_eof && shared.pool.is_none() && shared.sched.remaining() == 0 {
        // Every byte of the file is in and no other file needs this session: the reply to the
        // stopped transfer and the NOOP after it would only add two round trips to the end.
        drop(stream);
        if let Some(s) = session.take() {
            s.quit_later();
        }
        return Ok(());
    }
    let ended = s.end_transfer(stream, to_eof).await;
    if ended.is_err() && to_eof {
        // The server says the transfer failed although the byte count is right: do not trust
        // this attempt's bytes, fetch them again.
        shared.sched.rewind(seg, attempt_start);
    }
    ended
}

/// Bytes an attempt wrote whose write-back it has not started yet (see
/// `PartWriter::write_back`): started when dropped, however the attempt ends.
struct WriteBack<'a> {
    writer: &'a PartWriter,
    from: u64,
    to: u64,
}

impl Drop for WriteBack<'_> {
    fn drop(&mut self) {
        self.writer.write_back(self.from, self.to);
    }
}

/// Longest piece asked for with `RANG` in one transfer: a free connection can then take over
/// the rest of a range where the owner's piece ends, without stopping it early.
const RANG_PIECE: u64 = 8 << 20;

/// Starts the transfer of `seg` from `pos`: with RANG, the next piece of at most
/// [`RANG_PIECE`] (announced on the segment before any byte is read); otherwise from `pos` to
/// the end of the file, to be stopped early at the range's end.
async fn retr_piece(
    shared: &Shared,
    s: &mut Session,
    seg: &Arc<Segment>,
    pos: u64,
) -> Result<Transfer, SessionError> {
    let end = seg.end();
    // Pieces shrink towards the range's end (half of what is left, at least 1 MiB), so that a
    // free connection can still find a piece end to cut at in the end-game.
    let left = end.saturating_sub(pos);
    let piece = RANG_PIECE.min((left / 2).max(1 << 20));
    let ask = if s.uses_rang() {
        end.min(pos.saturating_add(piece))
    } else {
        end
    };
    seg.set_transfer_end(s.uses_rang().then_some(ask));
    let t = s.retr_range(&shared.path, pos, Some(ask)).await;
    // RANG refused (the session then uses REST): no end of its own.
    seg.set_transfer_end(t.as_ref().ok().and_then(|t| t.ends_at));
    t
}

/// Servers that report no size at all: one connection streams the file to its end, written in
/// order to `<out>.part`. The manifest records the durable length (`streamed`), so a rerun
/// resumes with `REST` where the server supports it.
async fn stream_unknown_size(
    job: &Job,
    progress: &mut Progress,
    mut stop: watch::Receiver<bool>,
    mut session: Session,
    first: Transfer,
    mdtm: Option<String>,
) -> Result<Outcome, Error> {
    use std::io::{Seek, SeekFrom, Write};
    let started = Instant::now();
    let output = &job.output;
    let manifest_path = Manifest::path_for(output);
    let part_path = storage::part_path(output);
    let redacted = job.url.redacted();
    let rest = session.supports_rest();

    let mut manifest = match Manifest::load(&manifest_path)? {
        Some(mut m) => {
            adopt_same_file(&mut m, &job.url);
            if let Err(mismatch) = m.check_same_remote(&redacted, None, mdtm.as_deref()) {
                return Err(Error::RemoteChanged {
                    detail: mismatch.to_string(),
                    part: part_path,
                });
            }
            m
        }
        None => Manifest::new(&redacted, None, mdtm.clone(), Vec::new())?,
    };
    let mut offset = manifest.streamed.unwrap_or(0);
    if offset > 0 {
        match std::fs::metadata(&part_path) {
            Err(_) => {
                progress.note(&format!(
                    "{} is missing, so the progress recorded in {} is lost: starting over",
                    part_path.display(),
                    manifest_path.display()
                ));
                offset = 0;
            }
            Ok(m) if m.len() < offset => {
                return Err(Error::io(
                    "cannot resume into",
                    &part_path,
                    std::io::Error::other(format!(
                        "it is {} bytes long but the manifest says {offset} are done; run \
                         with --restart to start over",
                        m.len()
                    )),
                ));
            }
            Ok(_) if !rest => {
                return Err(Error::CannotResume {
                    part: part_path,
                    done: human_bytes(offset),
                });
            }
            Ok(_) => {}
        }
    }
    manifest.streamed = Some(offset);
    manifest.save(&manifest_path)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part_path)
        .map_err(|e| Error::io("cannot open", &part_path, e))?;
    file.set_len(offset)
        .and_then(|_| file.seek(SeekFrom::Start(offset)).map(|_| ()))
        .map_err(|e| Error::io("cannot prepare", &part_path, e))?;
    let resumed = offset;

    let mut stream = if offset == 0 {
        first.stream
    } else {
        session
            .end_transfer(first.stream, false)
            .await
            .map_err(|e| transfer_error(job, e, rest))?;
        session
            .retr(&job.url.path, offset)
            .await
            .map_err(|e| transfer_error(job, e, rest))?
            .stream
    };
    let mut buf = vec![0u8; READ_CHUNK as usize];
    let mut written = offset;
    let mut last_checkpoint = Instant::now();
    let mut last_view = Instant::now();
    let save = |file: &std::fs::File, manifest: &mut Manifest, written: u64| -> Result<(), Error> {
        file.sync_data()
            .map_err(|e| Error::io("cannot flush", &part_path, e))?;
        manifest.streamed = Some(written);
        manifest.save(&manifest_path)?;
        Ok(())
    };
    loop {
        let n = tokio::select! {
            r = session.read_data(&mut stream, &mut buf) => r.map_err(|e| transfer_error(job, e, rest)),
            _ = stop.changed() => {
                tokio::task::block_in_place(|| save(&file, &mut manifest, written))?;
                return Err(Error::Interrupted(manifest_path.clone()));
            }
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                tokio::task::block_in_place(|| save(&file, &mut manifest, written))?;
                return Err(e);
            }
        };
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .map_err(|e| Error::io("cannot write", &part_path, e))?;
        written += n as u64;
        if last_view.elapsed() >= Duration::from_millis(200) {
            last_view = Instant::now();
            progress.update(&View {
                done: written,
                total: None,
                conns: vec![ConnView {
                    bytes: written - resumed,
                    range: None,
                    state: "streaming".into(),
                }],
            });
        }
        if last_checkpoint.elapsed() >= job.checkpoint_interval {
            last_checkpoint = Instant::now();
            tokio::task::block_in_place(|| save(&file, &mut manifest, written))?;
        }
    }
    progress.finish();
    // The data ended: the server must confirm the transfer was complete.
    if let Err(e) = session.end_transfer(stream, true).await {
        tokio::task::block_in_place(|| save(&file, &mut manifest, written))?;
        return Err(transfer_error(job, e, rest));
    }
    session.quit().await;
    file.sync_all()
        .map_err(|e| Error::io("cannot sync", &part_path, e))?;
    drop(file);
    let hash_started = Instant::now();
    let hash = tokio::task::block_in_place(|| verify::hash_file(&part_path))
        .map_err(|e| Error::io("cannot read back", &part_path, e))?;
    let hash_time = hash_started.elapsed();
    storage::rename(&part_path, output, job.force)?;
    storage::sync_parent(output).map_err(|e| Error::io("cannot sync the folder of", output, e))?;
    Manifest::remove(&manifest_path)?;
    Ok(Outcome {
        path: output.clone(),
        size: written,
        elapsed: started.elapsed(),
        fetched: written - resumed,
        resumed,
        blake3: Some(hash),
        hash_time,
        hash_from_chunks: false,
        connections: 1,
        remote_mtime: mdtm,
        first_byte: None,
    })
}

/// A failure of the single streaming connection, for the user.
fn transfer_error(job: &Job, e: SessionError, rest: bool) -> Error {
    if e.is_transient() {
        let next = if rest {
            "run the same command again to resume"
        } else {
            "the server does not support REST, so a new run starts over"
        };
        Error::GaveUp {
            tries: 1,
            last: format!("{e}; {next}"),
        }
    } else {
        not_found_or(&job.url, &job.creds, e)
    }
}
