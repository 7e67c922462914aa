//! The run loop of a download: spawn the workers, then until they are all done, a few times a
//! second measure rates, let `-n auto` grow the connections, redraw the progress, hash written
//! chunks ahead and offer the written prefix to the digests; save a checkpoint when one is due;
//! stop everything on the first permanent failure or on Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::download::Job;
use crate::download::autotune::{AutoTuner, Decision};
use crate::download::checkpoint::{CHECKPOINT_POLL, Cadence, Checkpoint, offer_prefix};
use crate::download::meter::{RateMeter, setup_time};
use crate::download::startup::{EarlyLogins, HeadStart, interrupted};
use crate::download::state::Shared;
use crate::download::workers::worker;
use crate::error::Error;
use crate::ftp::{Session, Transfer};
use crate::ui::progress::Progress;

/// The connections a run starts with.
pub(super) struct Crew {
    /// The probed first session, for worker 0.
    pub first: Session,
    /// A transfer from byte 0 the first session already started (a server without `SIZE`).
    pub preopened: Option<Transfer>,
    /// Logins started during the setup, for workers 1, 2, ...
    pub early: EarlyLogins,
    pub workers: usize,
}

/// Runs the workers to the end of the download, with checkpoints on the way.
pub(super) async fn run_workers(
    shared: &Arc<Shared>,
    crew: Crew,
    job: &Job,
    progress: &mut Progress,
    checkpoint: &mut Checkpoint,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let workers = crew.workers;
    let mut set = spawn_workers(shared, crew);
    let mut ticks = Ticks::new(job, shared, workers);
    let mut cadence = Cadence::new(job, shared);
    let mut soon = tokio::time::interval(CHECKPOINT_POLL);
    soon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut result = Ok(());
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    shared.run.failed.store(true, Ordering::SeqCst);
                    set.abort_all();
                    // The first failure is the one reported.
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Some(Err(join)) if join.is_cancelled() => {}
                Some(Err(join)) => {
                    set.abort_all();
                    result = Err(Error::Internal(format!("a connection task failed: {join}")));
                }
            },
            _ = ticks.tick.tick() => {
                if let Err(e) = ticks.on_tick(job, shared, progress, checkpoint) {
                    set.abort_all();
                    result = Err(e);
                }
            },
            _ = soon.tick() => {
                if let Err(e) = cadence.poll(shared, checkpoint) {
                    set.abort_all();
                    result = Err(e);
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
    progress.update(&shared.view());
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

/// One task per worker: worker 0 gets the first session (and a transfer it started), the
/// others the logins started early; logins no worker took end here.
fn spawn_workers(shared: &Arc<Shared>, crew: Crew) -> JoinSet<Result<(), Error>> {
    let Crew {
        first,
        preopened,
        mut early,
        workers,
    } = crew;
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
    set
}

/// What the run loop does every 200 ms.
struct Ticks {
    tick: tokio::time::Interval,
    meter: RateMeter,
    t0: Instant,
    /// `-n auto`'s tuner, when there is room to grow.
    tuner: Option<AutoTuner>,
}

impl Ticks {
    fn new(job: &Job, shared: &Shared, workers: usize) -> Ticks {
        Ticks {
            tick: tokio::time::interval(Duration::from_millis(200)),
            meter: RateMeter::new(shared),
            t0: Instant::now(),
            tuner: (job.auto_connections && workers > crate::download::autotune::START)
                .then(|| AutoTuner::new(workers, 0.0)),
        }
    }

    fn on_tick(
        &mut self,
        job: &Job,
        shared: &Shared,
        progress: &mut Progress,
        checkpoint: &mut Checkpoint,
    ) -> Result<(), Error> {
        self.meter.measure_rates(shared);
        if let Some(t) = self.tuner.as_mut() {
            auto_step(t, shared, self.t0, job.min_range, progress);
        }
        progress.update(&shared.view());
        let hashed = tokio::task::block_in_place(|| checkpoint.hash_written_chunks());
        offer_prefix(job, shared);
        hashed
    }
}

/// One `-n auto` tick: measure, maybe allow more connections, say when it settles.
fn auto_step(
    tuner: &mut AutoTuner,
    shared: &Shared,
    t0: Instant,
    min_range: u64,
    progress: &mut Progress,
) {
    let bytes = shared.stake.fetched.load(Ordering::Relaxed);
    let allowed = tuner.allowed() as u64;
    // More connections are worth measuring only while each could get a few ranges.
    let worth_more = shared.sched.remaining() > 4 * min_range.max(1) * (allowed + 1);
    let refused = shared.run.refused.load(Ordering::SeqCst);
    let now = t0.elapsed().as_secs_f64();
    match tuner.tick(now, bytes, setup_time(shared), refused, worth_more) {
        Decision::Wait => {}
        Decision::Grow(n) => {
            crate::trace!("-n auto: allowing {n} connections");
            shared.run.allowed.store(n, Ordering::SeqCst);
        }
        Decision::Settled { connections, why } => {
            crate::trace!("-n auto: settled on {connections}: {why}");
            progress.note(&format!(
                "-n auto: stopped adding connections at {connections} ({why})"
            ));
        }
    }
}
