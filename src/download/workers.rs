//! One worker per connection: wait to be allowed (`-n auto`) and for a permit (in a batch),
//! take a range, fetch it ([`fetch_range`]), take the next, until none is left. A failed
//! attempt drops the session and tries again after a backoff; a connection the server refuses
//! as one too many hands its range to the others and parks until it may come back; a range
//! without progress is taken over by a free connection; without a network, it waits for the
//! network ([`crate::retry::network`]) without counting a try; kicked by the run loop (the
//! machine slept, the network came back), it starts over at once. The classification of a
//! failure is [`crate::retry::Failure`]; the message of one that ends the download is
//! [`Error::from_session`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::download::failover;
use crate::download::meter::{load_f64, setup_time};
use crate::download::sched::{Segment, Speeds};
use crate::download::startup::HeadStart;
use crate::download::state::{ConnStat, Server, Shared};
use crate::download::transfer::{AttemptError, Connection, fetch_range, log_in};
use crate::error::{Error, SessionContext, Step};
use crate::ftp::{Session, SessionError};
use crate::retry::{Failure, backoff, busy_wait_after};
use crate::ui::progress::ConnState;

/// How often a connection with nothing to do looks for a stalled range or a handed-back one.
const LINGER_POLL: Duration = Duration::from_millis(100);

/// What a worker does after its attempts at one range.
enum Next {
    /// Try the same range again.
    Again,
    /// Take another range (this one is done, taken over, or handed back).
    Another,
    /// End this worker without a failure (the download failed elsewhere, or ended while this
    /// connection was parked).
    Stop,
}

/// One connection: take ranges until none is left, reconnecting and retrying as needed.
pub(super) async fn worker(
    id: usize,
    shared: Arc<Shared>,
    session: Option<Session>,
    mut head: Option<HeadStart>,
) -> Result<(), Error> {
    let shared = &*shared;
    let mut c = Connection::new(shared, id, session);
    let stat = c.stat();
    let mut rejoin_after = shared.limits.busy_retry;
    if !wait_until_allowed(shared, id).await {
        return Ok(());
    }
    loop {
        if c.server().dropped.load(Ordering::SeqCst) {
            // Its mirror failed for good (`drop_mirror`): the others go on without it.
            crate::trace!("conn {id}: its mirror is dropped");
            shared.sched.retire();
            stat.set(None, ConnState::NotNeeded);
            return Ok(());
        }
        if !hold_slot(&mut c).await {
            shared.sched.retire();
            break;
        }
        let Some(seg) = find_work(shared, id) else {
            if shared.over() {
                shared.sched.retire();
                break;
            }
            // Nothing to take now. Stay around: a connection may stall or fall far behind
            // (then this one takes its range over), or hand a range back.
            stat.set(None, ConnState::Idle);
            tokio::select! {
                _ = tokio::time::sleep(LINGER_POLL) => {}
                _ = shared.sched.freed() => {}
            }
            continue;
        };
        match fetch_until_done(&mut c, &seg, &mut head, &mut rejoin_after).await? {
            Next::Again | Next::Another => {}
            Next::Stop => return Ok(()),
        }
    }
    stat.set(None, ConnState::Done);
    match (&c.server().pool, c.server().take_permit(id)) {
        (Some(pool), Some(permit)) => pool.give_back(c.session, permit),
        _ => {
            if let Some(s) = c.session {
                s.quit_later();
            }
        }
    }
    Ok(())
}

/// `-n auto`: waits until this connection is allowed (`true`), or the download no longer
/// needs it (`false`). Such a worker is not counted live until it joins.
async fn wait_until_allowed(shared: &Shared, id: usize) -> bool {
    if id < shared.run.allowed.load(Ordering::SeqCst) {
        return true;
    }
    let stat = &shared.conns[id];
    stat.set(None, ConnState::WaitingAuto);
    while id >= shared.run.allowed.load(Ordering::SeqCst) {
        if shared.over() {
            stat.set(None, ConnState::NotNeeded);
            return false;
        }
        tokio::time::sleep(LINGER_POLL).await;
    }
    if !shared.sched.rejoin() {
        stat.set(None, ConnState::NotNeeded);
        return false;
    }
    true
}

/// Attempts at `seg` until it is done, taken over, or given up; `head` is used by the first
/// attempt.
async fn fetch_until_done(
    c: &mut Connection<'_>,
    seg: &Arc<Segment>,
    head: &mut Option<HeadStart>,
    rejoin_after: &mut Duration,
) -> Result<Next, Error> {
    let (shared, id, stat) = (c.shared, c.id, c.stat());
    loop {
        if shared.run.failed() {
            return Ok(Next::Stop);
        }
        if failover::hand_back_if_dropped(c, seg) {
            return Ok(Next::Stop);
        }
        stat.set(Some(seg.clone()), ConnState::Connecting);
        crate::trace!("conn {id} starts [{}..{})", seg.pos(), seg.end());
        let before = seg.pos();
        // A session kept from an earlier range may have died while idle (servers and NATs
        // drop idle control connections): see `Attempt::Ended(Err(..))` below.
        let reused = c.session.is_some() && head.is_none();
        // A free connection may take this range over if it stalls: dropping the attempt stops
        // every write into the range before it is released.
        let attempt = tokio::select! {
            r = fetch_range(c, head.take(), seg) => Attempt::Ended(r),
            _ = seg.preempted() => Attempt::TakenOver,
            _ = stat.kick.notified() => Attempt::Kicked,
        };
        let e = match attempt {
            Attempt::TakenOver => return taken_over(c, seg, before),
            Attempt::Kicked => {
                // Presumed dead (the machine slept, or the network came back while it got
                // nothing): a new session now, no try counted.
                crate::trace!("conn {id} starts over (kicked)");
                drop(c.session.take());
                seg.attempt_ended(before, false);
                continue;
            }
            Attempt::Ended(Ok(())) => {
                c.server().failures.store(0, Ordering::Relaxed);
                crate::trace!(
                    "conn {id} read [{before}..{}) at {:.1} MiB/s",
                    seg.pos(),
                    load_f64(&stat.rate) / 1048576.0
                );
                seg.attempt_ended(before, false);
                *rejoin_after = shared.limits.busy_retry;
                if shared.sched.complete(id, seg) {
                    return Ok(Next::Another);
                }
                continue;
            }
            Attempt::Ended(Err(AttemptError::Local(e))) => return Err(e),
            Attempt::Ended(Err(AttemptError::Session(e)))
                if reused
                    && seg.pos() == before
                    && Failure::after_login(&e) == Failure::Transient =>
            {
                // The kept session was dead before a byte came: a new one at once, no try
                // counted (the next failure, on a fresh session, counts as usual).
                crate::trace!("conn {id}: kept session found dead ({e}); a new one");
                drop(c.session.take());
                seg.attempt_ended(before, false);
                continue;
            }
            Attempt::Ended(Err(AttemptError::Session(e))) => e,
        };
        match after_failure(c, seg, before, e, rejoin_after).await? {
            Next::Again => {}
            next => return Ok(next),
        }
    }
}

/// How one attempt at a range ended.
enum Attempt {
    Ended(Result<(), AttemptError>),
    /// A free connection took the range over.
    TakenOver,
    /// The run loop asked every stalled connection to start over.
    Kicked,
}

/// The range was taken over by a free connection while this one made no progress.
fn taken_over(c: &mut Connection<'_>, seg: &Arc<Segment>, before: u64) -> Result<Next, Error> {
    let shared = c.shared;
    crate::trace!("conn {} lets go of [{}..{})", c.id, seg.pos(), seg.end());
    drop(c.session.take());
    let tries = seg.attempt_ended(before, true);
    shared.sched.release_preempted(seg);
    if tries >= shared.limits.max_tries {
        return Err(Error::GaveUp {
            tries,
            last: "no progress on any connection (taken over after --straggler-timeout each \
                   time)"
                .into(),
        });
    }
    Ok(Next::Another)
}

/// After a failed attempt at `seg` (which had reached `before` when it began): give up on a
/// fatal failure or too many tries, park on a busy server, otherwise wait a backoff.
async fn after_failure(
    c: &mut Connection<'_>,
    seg: &Arc<Segment>,
    before: u64,
    e: SessionError,
    rejoin_after: &mut Duration,
) -> Result<Next, Error> {
    let shared = c.shared;
    // Never reuse a session after a failure: it may be out of step.
    drop(c.session.take());
    // The first session logged in with these credentials (see `Failure::after_login`).
    let mut failure = Failure::after_login(&e);
    if failure == Failure::Transient && c.server().net.route().is_err() {
        // A stall or a reset while the route is gone: the network, not the server.
        failure = Failure::NoNetwork;
    }
    // With mirrors, a failure of this connection's server hands its range to the others.
    if let Some(next) = failover::after_failure(c, seg, before, &e, failure).await {
        return Ok(match next {
            true => Next::Another,
            false => Next::Stop,
        });
    }
    if failure == Failure::NoNetwork {
        return wait_for_network(c, seg, before, &e).await;
    }
    if failure == Failure::Busy {
        shared.run.refused.store(true, Ordering::SeqCst);
    }
    if failure == Failure::Fatal {
        return Err(range_error(shared, c.server(), e));
    }
    if failure == Failure::Busy && shared.sched.give_up(seg) {
        // The server wants fewer connections: another live connection takes this range; this
        // one waits, then tries to come back.
        return Ok(match park(c, rejoin_after).await {
            true => Next::Another,
            false => Next::Stop,
        });
    }
    let tries = seg.attempt_ended(before, true);
    if tries >= shared.limits.max_tries {
        return Err(Error::GaveUp {
            tries,
            last: e.to_string(),
        });
    }
    let wait = backoff(tries);
    c.stat().set(Some(seg.clone()), ConnState::Retrying(wait));
    let preempted = tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = seg.preempted() => true,
        // The network came back or the machine woke: no reason to wait out the backoff.
        _ = c.stat().kick.notified() => false,
    };
    if preempted {
        shared.sched.release_preempted(seg);
        return Ok(Next::Another);
    }
    Ok(Next::Again)
}

/// An attempt failed for want of a network (`e`): not a try; wait until the network is back
/// (or the range is taken over, or the run loop kicks), up to `--network-wait` since it was
/// first missed.
async fn wait_for_network(
    c: &mut Connection<'_>,
    seg: &Arc<Segment>,
    before: u64,
    e: &SessionError,
) -> Result<Next, Error> {
    let shared = c.shared;
    let server = c.server();
    let net = &server.net;
    net.missed(&e.to_string());
    seg.attempt_ended(before, false);
    c.stat().set(Some(seg.clone()), ConnState::NoNetwork);
    crate::trace!("conn {} waits for the network ({e})", c.id);
    tokio::select! {
        back = net.wait_for_return() => match back {
            Ok(()) => Ok(Next::Again),
            Err(gone) => Err(gone.into_error(&server.host(), net.wait_limit())),
        },
        _ = seg.preempted() => {
            shared.sched.release_preempted(seg);
            Ok(Next::Another)
        }
        _ = c.stat().kick.notified() => Ok(Next::Again),
    }
}

/// The error that ends the download for a worker's failure that is not retried.
fn range_error(shared: &Shared, server: &Server, e: SessionError) -> Error {
    let host = server.host();
    let step = Step::Range {
        host: &host,
        part: &shared.output.part_path,
    };
    let ctx = SessionContext::new(&server.url, &server.creds, step);
    Error::from_session(ctx, e)
}

/// With a connection budget (`Job::pool`): makes sure the worker holds a permit before it
/// takes a range, waiting for one (or for an idle session of the same server, which becomes
/// its session). `false` when the download finished or failed while waiting. Without a
/// budget: always `true`.
async fn hold_slot(c: &mut Connection<'_>) -> bool {
    let (shared, id) = (c.shared, c.id);
    let server = c.server();
    let Some(pool) = &server.pool else {
        return true;
    };
    let slot = &server.slots[id];
    loop {
        if slot.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return true;
        }
        if shared.over() {
            return false;
        }
        c.stat().set(None, ConnState::WaitingSlot);
        tokio::select! {
            (permit, idle) = pool.acquire() => {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
                if let Some(mut s) = idle {
                    server.adopt(&mut s);
                    drop(c.session.replace(s));
                }
                return true;
            }
            _ = tokio::time::sleep(LINGER_POLL) => {}
        }
    }
}

/// Asks the scheduler for work with the connections' measured speeds.
fn find_work(shared: &Shared, id: usize) -> Option<Arc<Segment>> {
    let rates: Vec<f64> = shared.conns.iter().map(|c| load_f64(&c.rate)).collect();
    let reading: Vec<f64> = shared.conns.iter().map(ConnStat::reading_for).collect();
    let speeds = Speeds {
        rates: &rates,
        reading: &reading,
        setup: setup_time(shared),
        stall: shared.limits.straggler_timeout,
    };
    shared.sched.try_acquire(id, &speeds)
}

/// A connection the server refused as one too many waits `wait` (then longer for the next
/// time, see [`busy_wait_after`]), logs in again (waiting again while the server still
/// refuses), then rejoins the download (`true`) with the new session. In a batch it rejoins
/// without logging in: the login needs a permit of the pool first. `false` if the download
/// ended (or failed) meanwhile.
async fn park(c: &mut Connection<'_>, wait: &mut Duration) -> bool {
    let (shared, id) = (c.shared, c.id);
    // The batch's budget for this server shrinks by this connection (crate::ftp::pool).
    let server = c.server();
    if let (Some(pool), Some(permit)) = (&server.pool, server.take_permit(id)) {
        pool.shrink(permit);
    }
    loop {
        c.stat().set(None, ConnState::Busy(*wait));
        let until = Instant::now() + *wait;
        while Instant::now() < until {
            if shared.run.failed() || shared.sched.remaining() == 0 {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250).min(*wait)).await;
        }
        *wait = busy_wait_after(*wait);
        if server.pool.is_some() {
            // In a batch the login needs a permit first (`hold_slot`), after the range.
            return shared.sched.rejoin();
        }
        // Logged in first, then a range: taking a range first would split a live
        // connection's range for a login the server may refuse again (docs/benchmarks.md,
        // "Per-IP limit").
        match log_in(server).await {
            Ok(s) if shared.sched.rejoin() => {
                c.session = Some(s);
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
