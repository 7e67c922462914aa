//! The download of one file over N connections: plan, connections, retries, checkpoints,
//! commit. [`download`] reads as the order of a run:
//!
//! 1. Refuse an existing output (unless `--force`), resolve the host, open the first session,
//!    ask `SIZE`, start the other logins, probe (`FEAT`, `REST`), ask `MDTM` (`startup`).
//!    A server without a size streams the file on one connection (`streaming`).
//! 2. Load the manifest if there is one and check it describes the same remote file, verify
//!    the chunks an earlier run hashed; otherwise plan fresh ranges ([`plan`]). Save the
//!    manifest, then preallocate `<out>.part` (`resume`). With [`Storage::Discard`]
//!    (`ftpseg bench --discard`) steps 2 and 4 touch no file: fresh ranges, a manifest kept
//!    only in memory, a sink instead of `<out>.part`, no hash, no commit; the connections,
//!    scheduling and checkpoint rhythm are the same.
//! 3. Run N workers concurrently (`run`, `workers`). Each takes a range from the
//!    scheduler ([`sched`]), reads it (`transfer`), stops early, takes the next (work
//!    stealing when none is free). A failed attempt drops the session and retries with backoff
//!    from where the range got to ([`crate::retry`]). `-n auto` adds connections while
//!    throughput still rises ([`autotune`]). Every `checkpoint_interval`, early when much
//!    arrived, and at the end, the written bytes are made durable, then the manifest is saved
//!    (`checkpoint`): the manifest never claims a byte that is not on disk.
//! 4. When every range is done: final checkpoint, the file's BLAKE3 (merged from the chunk
//!    hashes), flush, rename `<out>.part` to `<out>`, remove the manifest.
//!
//! The state the tasks share is in `state`, the rate estimates in `meter`.

pub mod autotune;
mod checkpoint;
mod failover;
mod job;
mod meter;
mod mirrors;
mod pieces;
pub mod plan;
mod resume;
mod run;
pub mod sched;
mod startup;
mod state;
mod streaming;
mod transfer;
mod workers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::download::checkpoint::Checkpoint;
pub use crate::download::job::{Connections, Job, Mirror, Outcome};
use crate::download::resume::{Files, Remote, Resumed};
use crate::download::run::Crew;
use crate::download::sched::Scheduler;
use crate::download::startup::{Size, Started};
use crate::download::state::{Chunking, ServerSetup, Setup, Shared};
use crate::error::Error;
use crate::ftp::Transfer;
use crate::storage::PartFile;
#[cfg(doc)]
use crate::storage::Storage;
use crate::storage::manifest::Manifest;
use crate::ui::progress::Progress;

/// Downloads `job.url` to `job.output`. `stop` turning true (Ctrl-C) ends the run after a final
/// checkpoint, with [`Error::Interrupted`].
pub async fn download(
    job: &Job,
    progress: &mut Progress,
    stop: watch::Receiver<bool>,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let files = Files::for_job(job)?;
    let tls = startup::tls_client(job)?;
    let saved_in = files.as_ref().map(|f| f.manifest.as_path());
    let mut start = startup::startup_or_stop(job, tls, stop.clone(), saved_in, progress).await?;
    if job.no_rang {
        start.first.set_rang(false);
    }
    let keeps_files = files.is_some();
    let (size, preopened) =
        match startup::settle_size(job, progress, &mut start.first, start.size, keeps_files).await?
        {
            Size::Known { size, preopened } => (size, preopened),
            Size::Unknown(transfer) => {
                let _held = start.permit;
                let link = streaming::Link {
                    session: start.first,
                    net: start.net,
                    tls: start.tls,
                };
                return streaming::stream_unknown_size(
                    job, progress, stop, link, transfer, start.mdtm,
                )
                .await;
            }
        };
    if let Some(want) = job.expected_size.filter(|&want| want != size) {
        return Err(Error::NotTheFile(format!(
            "{} has {size} bytes, the Metalink says {want}",
            job.url.redacted()
        )));
    }
    // The mirrors are opened (and checked) once the file's size is known.
    let mirrors = match job.mirrors.is_empty() {
        true => Vec::new(),
        false => {
            let preopened = preopened.is_some();
            mirrors::open_mirrors(job, size, &mut start.first, preopened, progress).await
        }
    };
    let begun = Begun {
        started,
        start,
        size,
        preopened,
        mirrors,
    };
    let Prepared {
        shared,
        mut checkpoint,
        crew,
        part,
        resumed,
    } = prepare(job, progress, files.as_ref(), begun)?;
    let result = run::run_workers(&shared, crew, job, progress, &mut checkpoint, stop).await;
    progress.finish();
    crate::trace!("workers done");
    // Whatever happened, record what is on disk (with a file).
    let saved = tokio::task::block_in_place(|| checkpoint.save());
    result?;
    saved?;
    crate::trace!("last checkpoint saved");
    let repaired = match &job.pieces {
        Some(pieces) => pieces::check_and_repair(&shared, &part, pieces).await?,
        None => false,
    };
    commit(
        job,
        &shared,
        checkpoint,
        part,
        files.as_ref(),
        resumed,
        repaired,
    )
}

/// A download whose size is known, after its startup.
struct Begun {
    started: Instant,
    start: Started,
    /// The file's size on the server.
    size: u64,
    /// A transfer from byte 0 the first session already started (a server without `SIZE`).
    preopened: Option<Transfer>,
    /// The mirrors that passed their checks.
    mirrors: Vec<mirrors::MirrorStart>,
}

/// A download ready to run its workers.
struct Prepared {
    shared: Arc<Shared>,
    checkpoint: Checkpoint,
    crew: Crew,
    part: Arc<PartFile>,
    /// Bytes an earlier run left.
    resumed: u64,
}

/// The manifest and the `.part` (resumed or fresh), the connections the bytes left need, the
/// scheduler over the manifest's ranges, the shared state and the checkpointer.
fn prepare(
    job: &Job,
    progress: &mut Progress,
    files: Option<&Files>,
    begun: Begun,
) -> Result<Prepared, Error> {
    let Begun {
        started,
        start,
        size: remote_size,
        preopened,
        mirrors,
    } = begun;
    // `ftpseg bench --bytes`: only the first bytes of the file.
    let size = job
        .limit
        .map_or(remote_size, |limit| limit.clamp(1, remote_size));
    let rest = start.first.rest_support().0;
    let redacted = job.url.redacted();
    let remote = Remote {
        redacted: &redacted,
        size,
        mdtm: start.mdtm,
        rest,
    };
    let Resumed {
        manifest,
        part,
        resumed,
    } = resume::resume_or_start(job, progress, files, &remote)?;
    let min_range = if rest { job.min_range } else { u64::MAX };
    let remaining: u64 = manifest.ranges.iter().map(|r| r.remaining()).sum();
    let first = ServerSetup {
        pool: job.pool.clone(),
        ..ServerSetup::of(
            &job.url,
            &job.creds,
            start.net.clone(),
            start.tls,
            &start.first,
        )
    };
    let (servers, mirror_firsts) = with_mirrors(first, mirrors);
    // Each server within --max-connections-per-host (also the first alone, when every
    // mirror was left out).
    let workers = startup::workers_for(job, remaining, rest);
    let assignment = mirrors::assign(workers, servers.len(), job.per_mirror);
    let workers = assignment.len();
    // `-n auto` starts with few workers allowed; the others join (and count as live) later.
    let allowed = startup::starting_workers(job, workers);
    let sched = Arc::new(Scheduler::new(&manifest.ranges, min_range, allowed));
    let chunking = Chunking::of(&manifest, files.is_some());
    let setup = Setup {
        started,
        servers,
        assignment,
        sched: sched.clone(),
        part: &part,
        size,
        remote_size,
        workers,
        allowed,
        chunking,
    };
    let shared = Arc::new(Shared::new(job, setup));
    *shared.servers[0].slots[0]
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = start.permit;
    let part = Arc::new(part);
    let manifest_path = files.map(|f| f.manifest.clone());
    let inline = shared.output.hashed_inline.clone();
    let checkpoint = Checkpoint::new(sched, part.clone(), manifest, manifest_path, inline);
    let crew = Crew {
        first: start.first,
        preopened,
        early: start.early,
        mirror_firsts,
        workers,
    };
    Ok(Prepared {
        shared,
        checkpoint,
        crew,
        part,
        resumed,
    })
}

/// Every range is done and durable: the file's hash, then the `.part` becomes the output and
/// the manifest goes. `resumed`: the bytes an earlier run left.
fn commit(
    job: &Job,
    shared: &Shared,
    checkpoint: Checkpoint,
    part: Arc<PartFile>,
    files: Option<&Files>,
    resumed: u64,
    repaired: bool,
) -> Result<Outcome, Error> {
    let size = shared.target.size;
    let remote_mtime = checkpoint.manifest.mdtm.clone();
    let fetched: u64 = shared
        .conns
        .iter()
        .map(|c| c.bytes.load(Ordering::Relaxed))
        .sum();
    let hash_started = Instant::now();
    // Repaired pieces were written after the chunks were hashed: read the file again.
    let hash = match repaired {
        true => tokio::task::block_in_place(|| part.blake3())?,
        false => tokio::task::block_in_place(|| checkpoint.file_hash())?,
    };
    let hash_time = hash_started.elapsed();
    crate::trace!(
        "file hash took {:.3} s; chunks hashed as written: {}, read back: {}",
        hash_time.as_secs_f64(),
        checkpoint.inline_used,
        checkpoint.read_back
    );
    let hash_from_chunks =
        !repaired && checkpoint.manifest.chunk_size > 0 && size > checkpoint.manifest.chunk_size;
    drop(checkpoint);
    let part = Arc::try_unwrap(part)
        .map_err(|_| Error::Internal("the output file is still in use".into()))?;
    tokio::task::block_in_place(|| part.commit(&job.output, job.force))?;
    crate::trace!("committed (flushed, renamed)");
    if let Some(f) = files {
        Manifest::remove(&f.manifest)?;
        crate::trace!("manifest removed");
    }
    Ok(Outcome {
        path: job.output.clone(),
        size,
        elapsed: shared.run.started.elapsed(),
        fetched,
        resumed,
        blake3: hash,
        hash_time,
        hash_from_chunks,
        connections: shared
            .servers
            .iter()
            .map(|s| s.opened.load(Ordering::Relaxed) as usize)
            .sum(),
        sources: sources(shared),
        pieces_repaired: repaired,
        remote_mtime,
        first_byte: match shared.run.first_byte_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        },
    })
}

/// The servers of a download: the first, then the mirrors that passed their checks; and the
/// mirrors' probed first sessions, for their first connections.
fn with_mirrors(
    first: ServerSetup,
    mirrors: Vec<mirrors::MirrorStart>,
) -> (Vec<ServerSetup>, Vec<crate::ftp::Session>) {
    let mut servers = vec![first];
    let mut sessions = Vec::new();
    for m in mirrors {
        servers.push(ServerSetup::of(&m.url, &m.creds, m.net, m.tls, &m.first));
        sessions.push(m.first);
    }
    (servers, sessions)
}

/// Bytes each server sent in this run, with several servers (none with one).
fn sources(shared: &Shared) -> Vec<(String, u64)> {
    if shared.servers.len() < 2 {
        return Vec::new();
    }
    let mut by: Vec<(String, u64)> = shared
        .servers
        .iter()
        .map(|s| (s.label.clone(), 0))
        .collect();
    for c in &shared.conns {
        by[c.mirror].1 += c.bytes.load(Ordering::Relaxed);
    }
    by
}
