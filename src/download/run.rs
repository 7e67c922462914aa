//! The run loop of a download: spawn the workers, then until they are all done, a few times a
//! second measure rates, let `-n auto` grow the connections, redraw the progress, hash written
//! chunks ahead and offer the written prefix to the digests; save a checkpoint when one is due;
//! every half second look at the network and the clocks ([`NetWatch`]); stop everything on the
//! first permanent failure or on Ctrl-C.

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
use crate::retry::clock::SleepWatch;
use crate::retry::network::{self, Change};
use crate::ui::progress::{ConnState, NetNote, Progress};

/// The connections a run starts with.
pub(super) struct Crew {
    /// The probed first session, for worker 0.
    pub first: Session,
    /// A transfer from byte 0 the first session already started (a server without `SIZE`).
    pub preopened: Option<Transfer>,
    /// Logins started during the setup, for the first server's workers after the first.
    pub early: EarlyLogins,
    /// The mirrors' probed first sessions (server k's at k - 1), each for the first worker
    /// reading from it.
    pub mirror_firsts: Vec<Session>,
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
    let mut net = NetWatch::new();
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
            _ = net.tick.tick() => {
                if let Err(e) = net.on_tick(shared, progress) {
                    shared.run.failed.store(true, Ordering::SeqCst);
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
        mirror_firsts,
        workers,
    } = crew;
    let mut set = JoinSet::new();
    let mut first = Some((first, preopened));
    let mut mirror_firsts: Vec<Option<Session>> = mirror_firsts.into_iter().map(Some).collect();
    // How many of the first server's workers came before (the k-th takes early login k).
    let mut on_first = 0;
    for id in 0..workers {
        let shared = shared.clone();
        let mirror = shared.conns[id].mirror;
        let (session, head) = match mirror {
            0 => {
                on_first += 1;
                match first.take() {
                    Some((s, p)) => (Some(s), p.map(HeadStart::Transfer)),
                    None => (None, early.take(on_first - 1).map(HeadStart::Login)),
                }
            }
            k => (mirror_firsts[k - 1].take(), None),
        };
        set.spawn(async move { worker(id, shared, session, head).await });
    }
    // Mirrors' sessions no worker took (fewer workers than servers): logged out.
    for s in mirror_firsts.into_iter().flatten() {
        s.quit_later();
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

/// The run loop's eye on the network and the clocks: when the machine slept, every connection
/// starts over at once (they are presumed dead, and would otherwise wait out
/// `--stall-timeout`); when the route to the server goes, it says so; when it comes back, the
/// connections that got nothing meanwhile start over at once, and those waiting wake.
struct NetWatch {
    tick: tokio::time::Interval,
    sleep: SleepWatch,
    /// Each connection's byte count at the last few ticks, oldest first: a connection whose
    /// count did not move over them got nothing lately.
    recent: std::collections::VecDeque<Vec<u64>>,
}

/// Ticks without a byte that make a connection "got nothing lately" (about a second).
const QUIET_TICKS: usize = 2;

impl NetWatch {
    fn new() -> NetWatch {
        let mut tick = tokio::time::interval(network::POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        NetWatch {
            tick,
            sleep: SleepWatch::new(),
            recent: std::collections::VecDeque::with_capacity(QUIET_TICKS + 1),
        }
    }

    /// One look; an error once the network to the last server left has been missing for
    /// `--network-wait` (a mirror without a network that long is dropped while others are
    /// left).
    fn on_tick(&mut self, shared: &Shared, progress: &Progress) -> Result<(), Error> {
        let now = byte_counts(shared);
        if self.recent.len() > QUIET_TICKS {
            self.recent.pop_front();
        }
        self.recent.push_back(now.clone());
        if let Some(slept) = self.sleep.slept() {
            crate::trace!("the machine slept for {:.1} s", slept.as_secs_f64());
            progress.network(&NetNote::Slept { slept });
            kick(shared, |_| true);
            look_up_again(shared);
        }
        for (k, server) in shared.servers.iter().enumerate() {
            if server.dropped.load(Ordering::SeqCst) {
                continue;
            }
            let net = &server.net;
            match net.probe() {
                None => {}
                // One line for the machine's network, not one per mirror.
                Some(Change::Lost { why }) if k == 0 => {
                    progress.network(&NetNote::Lost {
                        why,
                        limit: net.wait_limit(),
                    });
                }
                Some(Change::Lost { .. }) => {}
                Some(Change::Back { after }) => {
                    if k == 0 {
                        progress.network(&NetNote::Back { after });
                    }
                    let then = self.recent.front().expect("pushed above");
                    kick(shared, |id| {
                        shared.conns[id].mirror == k && now[id] == then[id]
                    });
                    look_up_again(shared);
                }
            }
            if let Some(gone) = net.gone() {
                if shared.drop_server(k).is_some() {
                    progress.note(&format!(
                        "mirror {} dropped: no network to it for {}",
                        server.label,
                        crate::ui::human_duration(net.wait_limit())
                    ));
                    continue;
                }
                return Err(gone.into_error(&server.host(), net.wait_limit()));
            }
        }
        Ok(())
    }
}

/// The machine may be on another network now: the servers' names are looked up again, and
/// the next logins go to what they resolve to (the old addresses until the answer comes).
fn look_up_again(shared: &Shared) {
    for server in &shared.servers {
        let (url, net) = (server.url.clone(), server.net.clone());
        let limit = server.timeouts.connect;
        tokio::spawn(async move {
            if let Ok(addrs) = crate::retry::resolve(&url, limit).await {
                crate::trace!("network: {} resolves to {addrs:?}", url.host_for_connect());
                net.set_addrs(addrs);
            }
        });
    }
}

fn byte_counts(shared: &Shared) -> Vec<u64> {
    shared
        .conns
        .iter()
        .map(|c| c.bytes.load(Ordering::Relaxed))
        .collect()
}

/// Tells each connection `which` picks, among those that are busy with a range (connecting,
/// reading, waiting to retry), to start over now.
fn kick(shared: &Shared, which: impl Fn(usize) -> bool) {
    for (id, c) in shared.conns.iter().enumerate() {
        let busy = matches!(
            c.state(),
            ConnState::Connecting
                | ConnState::Starting
                | ConnState::Reading
                | ConnState::Retrying(_)
                | ConnState::NoNetwork
        );
        if busy && which(id) {
            crate::trace!("conn {id}: kicked");
            c.kick.notify_one();
        }
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
