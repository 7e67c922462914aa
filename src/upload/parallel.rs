//! Parallel pieces: piece 0 first (it creates the file), then up to N connections take the
//! other pieces from a queue, each `STOR` at its offset; a piece counts once its `226` arrived
//! and the manifest recorded it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinSet;

use super::connect::{Conn, Waits};
use super::manifest::UploadManifest;
use super::plan::Piece;
use super::send::{SendError, Sender, TICK, Upload, send_range};
use crate::error::Error;
use crate::ftp::upload::Store;
use crate::ftp::{Session, SessionError};
use crate::retry::{self, Failure};
use crate::ui::progress::{ConnState, ConnView, View};

/// Parallel pieces: piece 0 first on the first session (it creates the file; a `STOR` from
/// byte 0 truncates), then up to `connections` connections take the other pieces from a
/// queue. Each piece is acknowledged in the manifest `m` (saved at `mpath`) once its `226`
/// arrived. Returns the connections used.
pub(super) async fn send_parallel(
    tx: &mut Sender<'_>,
    first: Session,
    m: &mut UploadManifest,
    mpath: &Path,
    connections: usize,
) -> Result<usize, SendError> {
    let mut first = Some(first);
    if !m.pieces[0].acked {
        send_first_piece(tx, &mut first, m.pieces[0]).await?;
        m.pieces[0].acked = true;
        m.save(mpath).map_err(SendError::Local)?;
    }
    let todo: VecDeque<usize> = (0..m.pieces.len())
        .filter(|&i| !m.pieces[i].acked)
        .collect();
    let workers = connections.min(todo.len()).max(1);
    let shared = Arc::new(Pieces {
        queue: Mutex::new(todo),
        manifest: Mutex::new(m.clone()),
        mpath: mpath.to_owned(),
        positions: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        in_piece: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        tries: (0..m.pieces.len()).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut set = JoinSet::new();
    for id in 0..workers {
        let s = if id == 0 { first.take() } else { None };
        set.spawn(piece_worker(
            id,
            tx.up.clone(),
            shared.clone(),
            tx.conn.clone(),
            s,
        ));
    }
    let result = watch_workers(tx, &shared, &mut set).await;
    *m = shared.manifest().clone();
    result?;
    if m.pieces.iter().any(|p| !p.acked) {
        return Err(SendError::Local(Error::Internal(
            "upload ended with pieces not acknowledged".into(),
        )));
    }
    Ok(workers)
}

/// Sends piece 0 on `first` (or a new session after a failure) until it arrived.
async fn send_first_piece(
    tx: &mut Sender<'_>,
    first: &mut Option<Session>,
    p: Piece,
) -> Result<(), SendError> {
    let (up, conn) = (tx.up, tx.conn);
    let mut tries = 0;
    loop {
        let pos = AtomicU64::new(0);
        let attempt = async {
            let s = match first.as_mut() {
                Some(s) => s,
                None => first.insert(conn.another().await.map_err(SendError::Session)?),
            };
            send_range(up, s, Store::Stor, p.start, p.end, &pos).await
        };
        let r = tokio::select! {
            r = attempt => r,
            _ = tx.stop.wait_for(|s| *s) => return Err(SendError::Interrupted),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(SendError::Session(e)) if Failure::after_login(&e) != Failure::Fatal => {
                *first = None;
                if let Some(wait) = conn.network_wait_after(&e) {
                    tokio::time::sleep(wait.map_err(SendError::Local)?).await;
                    continue;
                }
                tries += 1;
                if tries >= up.max_tries {
                    return Err(SendError::GaveUp {
                        tries,
                        last: e.to_string(),
                    });
                }
                tokio::time::sleep(retry::backoff(tries)).await;
            }
            Err(other) => return Err(other),
        }
    }
}

/// Waits for the workers, redrawing the progress; the first failure is the result. When
/// `stop` turns true, the workers are stopped and the result is `Interrupted`.
async fn watch_workers(
    tx: &mut Sender<'_>,
    shared: &Pieces,
    set: &mut JoinSet<Result<(), SendError>>,
) -> Result<(), SendError> {
    let up = tx.up;
    let mut tick = tokio::time::interval(TICK);
    let mut result = Ok(());
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    up.failed.store(true, Ordering::SeqCst);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Some(Err(e)) => {
                    up.failed.store(true, Ordering::SeqCst);
                    result = Err(SendError::Local(Error::Internal(format!("upload task: {e}"))));
                }
            },
            _ = tick.tick() => tx.progress.update(&shared.view(up)),
            _ = tx.stop.wait_for(|s| *s) => {
                up.failed.store(true, Ordering::SeqCst);
                set.abort_all();
                while set.join_next().await.is_some() {}
                return Err(SendError::Interrupted);
            }
        }
    }
    tx.progress.update(&shared.view(up));
    result
}

/// The pieces still to send, and the manifest their acknowledgements go to.
struct Pieces {
    queue: Mutex<VecDeque<usize>>,
    manifest: Mutex<UploadManifest>,
    mpath: PathBuf,
    /// Bytes each connection sent (progress).
    positions: Vec<AtomicU64>,
    /// Bytes of its current piece each connection has sent (progress).
    in_piece: Vec<AtomicU64>,
    /// Failed attempts in a row per piece.
    tries: Vec<AtomicU64>,
}

impl Pieces {
    fn manifest(&self) -> MutexGuard<'_, UploadManifest> {
        self.manifest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<usize>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records piece `i` as arrived, in the manifest on disk too.
    fn ack(&self, i: usize) -> Result<(), SendError> {
        let mut m = self.manifest();
        m.pieces[i].acked = true;
        m.save(&self.mpath).map_err(SendError::Local)?;
        self.tries[i].store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The progress display: acknowledged bytes plus what is in flight.
    fn view(&self, up: &Upload) -> View {
        let acked = self.manifest().acked_bytes();
        let conns: Vec<ConnView> = self
            .positions
            .iter()
            .map(|p| ConnView {
                bytes: p.load(Ordering::Relaxed),
                range: None,
                state: ConnState::Sending,
                server: 0,
            })
            .collect();
        let inflight: u64 = self
            .in_piece
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        View {
            done: (acked + inflight).min(up.size),
            total: Some(up.size),
            conns,
            network_missing: None,
            servers: Vec::new(),
        }
    }
}

/// One connection of a parallel upload: takes pieces until none is left.
async fn piece_worker(
    id: usize,
    up: Arc<Upload>,
    shared: Arc<Pieces>,
    conn: Arc<Conn>,
    mut session: Option<Session>,
) -> Result<(), SendError> {
    let worker = Worker {
        id,
        up: &up,
        shared: &shared,
        conn: &conn,
    };
    let mut waits = Waits::new(up.busy_retry);
    loop {
        if up.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let next = shared.queue().pop_front();
        let Some(i) = next else { break };
        let piece = shared.manifest().pieces[i];
        match worker.send_piece(&mut session, piece).await {
            Ok(()) => {
                shared.ack(i)?;
                waits.reset();
            }
            Err(SendError::Session(e)) => {
                drop(session.take());
                shared.queue().push_back(i);
                let wait = worker.wait_after(i, e, &mut waits)?;
                tokio::time::sleep(wait).await;
            }
            Err(other) => return Err(other),
        }
    }
    if let Some(s) = session {
        s.quit().await;
    }
    Ok(())
}

/// What one connection of a parallel upload works with.
struct Worker<'a> {
    id: usize,
    up: &'a Upload,
    shared: &'a Pieces,
    conn: &'a Conn,
}

impl Worker<'_> {
    /// Sends one piece on `session` (a new one if `None`), showing its progress as it goes.
    async fn send_piece(
        &self,
        session: &mut Option<Session>,
        piece: Piece,
    ) -> Result<(), SendError> {
        let (id, shared) = (self.id, self.shared);
        let pos = AtomicU64::new(piece.start);
        let attempt = async {
            let s = match session.as_mut() {
                Some(s) => s,
                None => session.insert(self.conn.another().await.map_err(SendError::Session)?),
            };
            send_range(self.up, s, Store::Stor, piece.start, piece.end, &pos).await
        };
        let watch_pos = async {
            loop {
                shared.in_piece[id]
                    .store(pos.load(Ordering::Relaxed) - piece.start, Ordering::Relaxed);
                tokio::time::sleep(TICK).await;
            }
        };
        let r = tokio::select! {
            r = attempt => r,
            _ = watch_pos => unreachable!("the position watcher never ends"),
        };
        shared.positions[id]
            .fetch_add(pos.load(Ordering::Relaxed) - piece.start, Ordering::Relaxed);
        shared.in_piece[id].store(0, Ordering::Relaxed);
        r
    }

    /// After piece `i` failed with `e`: the wait before the next try, or the error that ends
    /// the upload (not worth a retry, or `--max-tries` failures of that piece in a row).
    fn wait_after(
        &self,
        i: usize,
        e: SessionError,
        waits: &mut Waits,
    ) -> Result<Duration, SendError> {
        if let Some(wait) = self.conn.network_wait_after(&e) {
            return wait.map_err(SendError::Local);
        }
        let kind = Failure::after_login(&e);
        if kind == Failure::Fatal {
            return Err(SendError::Session(e));
        }
        let tries = self.shared.tries[i].fetch_add(1, Ordering::Relaxed) + 1;
        if tries >= u64::from(self.up.max_tries) {
            return Err(SendError::GaveUp {
                tries: tries as u32,
                last: e.to_string(),
            });
        }
        Ok(waits.next(kind, tries as u32))
    }
}
