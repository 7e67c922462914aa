//! One server's connection budget, shared by every file of a batch in flight
//! (`--max-connections-per-host`), and its idle logged-in sessions, reused across files.
//!
//! A connection to the server is opened only with a permit; the permit is held as long as the
//! session lives, so the server never sees more than `limit` control connections from us, across
//! all files (listings included). A download's connection that finishes hands its session, with
//! its permit, back to the pool: the next file (or another file's worker) takes it instead of
//! logging in again. A session is reused only if it ended cleanly and answers `NOOP`.
//!
//! A budget above what the server allows shrinks: a connection the server refuses as one too
//! many gives its permit up for good ([`HostPool::shrink`], never below one), so the other files
//! in flight stop trying connections the server would refuse too (as lftp lowers its per-site
//! limit after a "421 Too many connections"). With `-j 3 -n 8` against a limit of 4, the
//! default budget of 8 meets at most 4 refusals, then stays at 4.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::ftp::Session;

/// The right to hold one connection to the server.
pub type Permit = OwnedSemaphorePermit;

/// A server's connection budget and its idle sessions.
pub struct HostPool {
    limit: usize,
    /// The budget now: `limit`, less the permits given up to refusals.
    current: AtomicU64,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<(Session, Permit)>>,
    returned: Notify,
    /// Sessions handed out again instead of a new login.
    reused: AtomicU64,
}

impl std::fmt::Debug for HostPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPool")
            .field("limit", &self.limit)
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

impl HostPool {
    /// A budget of `limit` connections (at least 1).
    pub fn new(limit: usize) -> Arc<HostPool> {
        let limit = limit.max(1);
        Arc::new(HostPool {
            limit,
            current: AtomicU64::new(limit as u64),
            permits: Arc::new(Semaphore::new(limit)),
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            reused: AtomicU64::new(0),
        })
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The budget now: [`HostPool::limit`] less the permits given up by [`HostPool::shrink`].
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) as usize
    }

    /// The server refused a connection as one too many while `permit` was held: the budget
    /// loses that permit for good, unless it is the last one (then it is only returned).
    pub fn shrink(&self, permit: Permit) {
        let shrunk = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c > 1).then(|| c - 1)
            })
            .is_ok();
        if shrunk {
            permit.forget();
        } else {
            drop(permit);
        }
    }

    /// Whether connections of this budget other than the caller's are in use now: then a
    /// "too many connections" refusal of the caller's login is caused by our own connections,
    /// and waiting for one of them is the cure (see [`HostPool::connect_or_wait`]).
    pub fn others_in_use(&self) -> bool {
        self.current() > self.permits.available_permits() + 1
    }

    /// Logs in with `connect` under `permit`; a login the server refuses as one too many while
    /// our other connections to it are in use gives the permit up for good
    /// ([`HostPool::shrink`]) and waits for a session or a permit of the smaller budget, then
    /// tries again (at most [`HostPool::limit`] times). Any other failure is returned.
    pub async fn connect_or_wait<F, Fut>(
        &self,
        mut permit: Permit,
        mut idle: Option<Session>,
        mut connect: F,
    ) -> Result<(Permit, Session), crate::ftp::SessionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Session, crate::ftp::SessionError>>,
    {
        let mut tries = 0;
        loop {
            if let Some(s) = idle.take() {
                return Ok((permit, s));
            }
            match connect().await {
                Ok(s) => return Ok((permit, s)),
                Err(e) if e.is_busy() && tries < self.limit && self.others_in_use() => {
                    tries += 1;
                    crate::trace!("login refused as one too many ({e}): waiting for our own");
                    self.shrink(permit);
                    (permit, idle) = self.acquire().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// How many sessions were reused instead of logging in again.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Waits for the right to a connection: an idle session that still answers `NOOP` (with its
    /// permit), or a free permit to open a new one. Idle sessions come first.
    pub async fn acquire(&self) -> (Permit, Option<Session>) {
        loop {
            if let Some(got) = self.take_idle().await {
                return got;
            }
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(got) = self.take_idle().await {
                return got;
            }
            tokio::select! {
                p = self.permits.clone().acquire_owned() => {
                    // The semaphore is never closed.
                    if let Ok(p) = p {
                        return (p, None);
                    }
                }
                _ = returned => {}
            }
        }
    }

    /// A permit without waiting, if one is free (idle sessions are left alone).
    pub fn try_permit(&self) -> Option<Permit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    async fn take_idle(&self) -> Option<(Permit, Option<Session>)> {
        let popped = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (mut s, p) = popped?;
        if s.noop().await.is_ok() {
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Some((p, Some(s)));
        }
        // Dead (the server timed it out): its permit is free for a new connection.
        Some((p, None))
    }

    /// Hands a connection back: a healthy session stays logged in for the next file; without
    /// one, only the permit is returned.
    pub fn give_back(&self, session: Option<Session>, permit: Permit) {
        match session {
            Some(s) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((s, permit));
                self.returned.notify_waiters();
            }
            None => drop(permit),
        }
    }

    /// Logs out of every idle session (at the end of a batch).
    pub async fn close_idle(&self) {
        let idle: Vec<(Session, Permit)> =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for (s, _p) in idle {
            s.quit().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_shrink_the_budget_down_to_one() {
        let pool = HostPool::new(3);
        let (a, _) = pool.acquire().await;
        let (b, _) = pool.acquire().await;
        pool.shrink(a);
        assert_eq!(pool.current(), 2);
        pool.shrink(b);
        assert_eq!(pool.current(), 1);
        // One permit is left, and the last one is never given up.
        let c = pool.try_permit().expect("one permit left");
        assert!(pool.try_permit().is_none());
        pool.shrink(c);
        assert_eq!(pool.current(), 1);
        assert!(pool.try_permit().is_some());
        assert_eq!(pool.limit(), 3);
    }
}
