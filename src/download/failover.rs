//! When one server of several fails (`Job::mirrors`): its connection hands its range to the
//! others at once ([`after_failure`]) and tries its server again without a range
//! ([`mirror_again`]); `--max-tries` failures in a row on a server (attempts or logins, by any
//! of its connections) drop it ([`drop_mirror`]), and its other connections hand their ranges
//! back as soon as they notice ([`hand_back_if_dropped`]). The last server is never dropped:
//! its failures are handled as with one server (`workers.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::download::sched::Segment;
use crate::download::transfer::{Connection, log_in};
use crate::ftp::SessionError;
use crate::retry::{Failure, backoff};
use crate::ui::progress::ConnState;

/// After a failed attempt at `seg` (at `before` when it began) on a download with mirrors:
/// `None` when the one-server rules apply (no other server is live; a busy server, which
/// `park` handles; a missing network, when no other server is reachable either). Otherwise
/// the range is handed over and `Some(true)`: the connection rejoins with a new session to
/// its server; `Some(false)`: it ends (its server was dropped, or the download ended).
pub(super) async fn after_failure(
    c: &mut Connection<'_>,
    seg: &Arc<Segment>,
    before: u64,
    e: &SessionError,
    failure: Failure,
) -> Option<bool> {
    let shared = c.shared;
    if shared.servers.len() < 2 || failure == Failure::Busy || !others_live(c, false) {
        return None;
    }
    // No way to this server while another is reachable: the server's trouble, not ours.
    if failure == Failure::NoNetwork && !others_live(c, true) {
        return None;
    }
    let server = c.server();
    if seg.pos() > before {
        server.failures.store(0, Ordering::Relaxed);
    }
    let failures = server.failures.fetch_add(1, Ordering::Relaxed) + 1;
    if !shared.sched.give_up(seg) {
        // This is the last live connection: it keeps the range (one-server rules).
        return None;
    }
    seg.attempt_ended(before, false);
    if failure == Failure::Fatal || failures >= shared.limits.max_tries {
        drop_mirror(c, &format!("{failures} failure(s) in a row, the last: {e}"));
        c.stat().set(None, ConnState::NotNeeded);
        return Some(false);
    }
    Some(mirror_again(c).await)
}

/// Whether a live server other than this connection's is there (and, with `reachable`, has a
/// route from this machine).
fn others_live(c: &Connection<'_>, reachable: bool) -> bool {
    let server = c.server();
    c.shared.servers.iter().any(|s| {
        !std::ptr::eq(s, server)
            && !s.dropped.load(Ordering::SeqCst)
            && (!reachable || s.net.route().is_ok())
    })
}

/// A connection that handed its range over (its live count taken by `give_up`): logs in to its
/// server again after backoffs, and rejoins with the new session (`true`); `false` when the
/// server was dropped meanwhile, reaches `--max-tries` failures in a row, or the download ends.
async fn mirror_again(c: &mut Connection<'_>) -> bool {
    let (shared, server, id) = (c.shared, c.server(), c.id);
    loop {
        let failures = server.failures.load(Ordering::Relaxed);
        let wait = backoff(failures.max(1));
        c.stat().set(None, ConnState::Retrying(wait));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = c.stat().kick.notified() => {}
        }
        if shared.over() || server.dropped.load(Ordering::SeqCst) {
            c.stat().set(None, ConnState::NotNeeded);
            return false;
        }
        match log_in(server).await {
            Ok(s) if shared.sched.rejoin() => {
                crate::trace!("conn {id}: its mirror answers again");
                c.session = Some(s);
                return true;
            }
            Ok(s) => {
                s.quit_later();
                return false;
            }
            Err(e) => {
                crate::trace!("conn {id}: mirror still failing ({e})");
                let failures = server.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= shared.limits.max_tries {
                    drop_mirror(c, &format!("{failures} failure(s) in a row, the last: {e}"));
                    c.stat().set(None, ConnState::NotNeeded);
                    return false;
                }
            }
        }
    }
}

/// Drops this connection's server (`why`), if another is left ([`Shared::drop_server`]: its
/// connections are kicked and hand their ranges back), saying so once.
///
/// [`Shared::drop_server`]: crate::download::state::Shared::drop_server
fn drop_mirror(c: &Connection<'_>, why: &str) {
    if let Some(others) = c.shared.drop_server(c.stat().mirror) {
        eprintln!(
            "ftpseg: mirror {} dropped ({why}); the other {others} take its ranges over",
            c.server().label
        );
    }
}

/// A connection of a dropped server with a range: hands it back (`true`: the worker ends). A
/// last live connection keeps it (`false`), as nobody else would take it.
pub(super) fn hand_back_if_dropped(c: &Connection<'_>, seg: &Arc<Segment>) -> bool {
    if !c.server().dropped.load(Ordering::SeqCst) || !c.shared.sched.give_up(seg) {
        return false;
    }
    crate::trace!(
        "conn {}: its mirror is dropped; its range goes to the others",
        c.id
    );
    c.stat().set(None, ConnState::NotNeeded);
    true
}
