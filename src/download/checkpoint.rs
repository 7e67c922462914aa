//! Checkpoints: make the written bytes durable, hash the chunks that became durable, save the
//! manifest, in that order, so the manifest never claims a byte that is not on disk. Between
//! checkpoints, chunks already written are hashed ahead (by the writers as they write, or read
//! back here), so the last checkpoint has little left to do. Also when a checkpoint is due
//! ([`Cadence`]) and how far readers may run ahead of the last one ([`wait_for_checkpoint`]).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::download::Job;
use crate::download::sched::Scheduler;
use crate::download::state::Shared;
use crate::error::Error;
use crate::integrity::verify;
use crate::storage::PartFile;
use crate::storage::manifest::Manifest;

/// `(chunk, chaining value, the scheduler's rewind count when the attempt that wrote it began)`.
pub(super) type InlineHash = (u64, blake3::hazmat::ChainingValue, u64);

/// Chaining values of whole chunks hashed by the connection that wrote them, right after each
/// piece was written ([`crate::integrity::verify::ChunkStream`]), waiting for the checkpointer to take
/// them ([`Checkpoint::take_inline`]): a chunk hashed here is not read back.
#[derive(Default)]
pub(super) struct InlineHashes {
    list: Mutex<Vec<InlineHash>>,
}

impl InlineHashes {
    pub fn push(&self, chunk: u64, cv: blake3::hazmat::ChainingValue, rewinds: u64) {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((chunk, cv, rewinds));
    }

    pub fn take(&self) -> Vec<InlineHash> {
        std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Bytes read at a time when hashing chunks.
pub(super) const HASH_BUF: usize = 1 << 20;

/// Flush-then-save of the manifest, in that order.
pub(super) struct Checkpoint {
    pub sched: Arc<Scheduler>,
    pub part: Arc<PartFile>,
    pub manifest: Manifest,
    /// Where the manifest is saved; `None`: it is kept in memory only (discarded bytes), so a
    /// checkpoint just marks the written bytes as done for the readers' pause.
    pub path: Option<PathBuf>,
    /// Buffer for reading chunks to hash, allocated once.
    pub buf: Vec<u8>,
    /// Chaining values of chunks hashed from written bytes before they were durable (see
    /// [`Checkpoint::hash_written_chunks`]), by chunk; moved into the manifest once durable.
    pub early: Vec<Option<blake3::hazmat::ChainingValue>>,
    /// The scheduler's rewind count when `early` was last checked.
    pub early_rewinds: u64,
    /// Chunks the writers hashed as they wrote them, moved into `early` at each pass.
    pub hashed_inline: Arc<InlineHashes>,
    /// Chunks taken from `hashed_inline`, and chunks read back to be hashed (for the trace).
    pub inline_used: u64,
    pub read_back: u64,
}

impl Checkpoint {
    /// The checkpointer of `manifest` (saved at `path`, if any) for the `.part` `part`.
    pub fn new(
        sched: Arc<Scheduler>,
        part: Arc<PartFile>,
        manifest: Manifest,
        path: Option<PathBuf>,
        hashed_inline: Arc<InlineHashes>,
    ) -> Checkpoint {
        Checkpoint {
            sched,
            part,
            buf: vec![0u8; HASH_BUF],
            early: Vec::new(),
            early_rewinds: 0,
            hashed_inline,
            inline_used: 0,
            read_back: 0,
            manifest,
            path,
        }
    }

    /// Flush, hash the chunks that became durable, save the manifest, in that order.
    pub fn save(&mut self) -> Result<(), Error> {
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
    pub fn hash_written_chunks(&mut self) -> Result<(), Error> {
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
    pub fn file_hash(&self) -> Result<Option<blake3::Hash>, Error> {
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

/// How often the run loop checks whether a checkpoint is due (by time or by bytes at stake).
pub(super) const CHECKPOINT_POLL: Duration = Duration::from_millis(25);

/// The most bytes a kill may cost fetched again: 1% of the file, or 4 MiB per connection,
/// whichever is larger (the resume target).
pub(super) fn resume_budget(size: u64, workers: usize) -> u64 {
    (size / 100).max(workers as u64 * (4 << 20))
}

/// Readers pause only when this many resume budgets are not covered by a checkpoint: a pause
/// at one budget would cap a single fast connection at one budget per checkpoint, for bytes
/// that are quick to fetch again (docs/benchmarks.md, "the reader-pause fix").
pub(super) const STAKE_PAUSE: u64 = 8;

/// Whether a reader is so far ahead of the checkpoints that it must wait for one (asked
/// before every read).
#[inline]
pub(super) fn far_ahead(shared: &Shared) -> bool {
    let stake = &shared.stake;
    stake.fetched.load(Ordering::Relaxed)
        >= stake.durable_fetched.load(Ordering::Relaxed) + STAKE_PAUSE * stake.limit
}

/// Waits while the bytes not yet covered by a checkpoint reach the pause level (a slow disk
/// or a starved checkpoint): the next checkpoint lets the readers go on.
pub(super) async fn wait_for_checkpoint(shared: &Shared) {
    let stake = &shared.stake;
    loop {
        let fetched = stake.fetched.load(Ordering::SeqCst);
        let durable = stake.durable_fetched.load(Ordering::SeqCst);
        if fetched.saturating_sub(durable) < STAKE_PAUSE * stake.limit || shared.run.failed() {
            return;
        }
        tokio::select! {
            _ = stake.checkpointed.notified() => {}
            _ = tokio::time::sleep(CHECKPOINT_POLL) => {}
        }
    }
}

/// When the next checkpoint is due: every `--checkpoint-interval`, and early once a third of
/// the resume budget arrived since the last one (readers pause at [`STAKE_PAUSE`] budgets).
pub(super) struct Cadence {
    interval: Duration,
    last: Instant,
    fetched_at_last: u64,
    at_stake: u64,
}

impl Cadence {
    pub fn new(job: &Job, shared: &Shared) -> Cadence {
        Cadence {
            interval: job.checkpoint_interval,
            last: Instant::now(),
            fetched_at_last: 0,
            at_stake: shared.stake.limit / 3,
        }
    }

    /// If a checkpoint is due: saves one, and lets paused readers go on.
    pub fn poll(&mut self, shared: &Shared, checkpoint: &mut Checkpoint) -> Result<(), Error> {
        let fetched = shared.stake.fetched.load(Ordering::SeqCst);
        if self.last.elapsed() < self.interval && fetched - self.fetched_at_last < self.at_stake {
            return Ok(());
        }
        self.last = Instant::now();
        self.fetched_at_last = fetched;
        let r = tokio::task::block_in_place(|| checkpoint.save());
        crate::trace!("checkpoint took {:.3} s", self.last.elapsed().as_secs_f64());
        r?;
        shared
            .stake
            .durable_fetched
            .store(fetched, Ordering::SeqCst);
        shared.stake.checkpointed.notify_waiters();
        Ok(())
    }
}

/// Tells the job's sequential digests, if any, how far from byte 0 the file is written
/// ([`crate::integrity::digest`]): one snapshot; the hashing runs on the digest's own thread.
pub(super) fn offer_prefix(job: &Job, shared: &Shared) {
    if let Some(d) = &job.digest {
        // The rewind count first: a rewind after it shows in the next offer.
        let rewinds = shared.sched.rewinds();
        let snap = shared.sched.snapshot();
        let prefix = crate::integrity::digest::written_prefix(&snap.ranges);
        d.offer(&shared.output.part_path, prefix, rewinds);
    }
}
