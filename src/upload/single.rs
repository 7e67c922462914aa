//! The single stream: `REST n` + `STOR` from the remote size to the end of the file (`APPE`
//! where the server refuses that), reconnecting after a failure and going on from what the
//! server says it holds.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use super::connect::{Conn, Waits};
use super::send::{SendError, Sender, TICK, Upload, send_range};
use super::verify::remote_size;
use crate::ftp::upload::Store;
use crate::ftp::{Session, SessionError};
use crate::retry::Failure;
use crate::ui::progress::{ConnState, ConnView, View};

/// The single stream: from `resume_at` (the remote size) to the end; after a failure, a new
/// session asks the remote size again and goes on from there.
pub(super) async fn send_single(
    tx: &mut Sender<'_>,
    first: Session,
    resume_at: Option<u64>,
) -> Result<(), SendError> {
    let up = tx.up;
    let offset = resume_at.unwrap_or(0);
    let pos = AtomicU64::new(offset);
    let mut stream = Stream {
        up,
        conn: tx.conn,
        session: Some(first),
        offset,
        use_appe: false,
    };
    let mut tries = 0u32;
    let mut waits = Waits::new(up.busy_retry);
    loop {
        if *tx.stop.borrow() {
            return Err(SendError::Interrupted);
        }
        let result = with_progress(tx, &pos, stream.attempt(&pos)).await;
        let e = match result {
            Ok(()) => {
                if let Some(s) = stream.session.take() {
                    s.quit().await;
                }
                return Ok(());
            }
            Err(SendError::Session(e)) => e,
            Err(other) => return Err(other),
        };
        drop(stream.session.take());
        if let Some(wait) = tx.conn.network_wait_after(&e) {
            let wait = wait.map_err(SendError::Local)?;
            tx.progress.note(&format!(
                "upload interrupted ({e}); waiting for the network"
            ));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tx.stop.wait_for(|s| *s) => return Err(SendError::Interrupted),
            }
            continue;
        }
        let kind = Failure::after_login(&e);
        if kind == Failure::Fatal {
            return Err(SendError::Session(e));
        }
        let progressed = pos.load(Ordering::Relaxed) > stream.offset;
        tries = if progressed { 1 } else { tries + 1 };
        if tries >= up.max_tries {
            return Err(SendError::GaveUp {
                tries,
                last: e.to_string(),
            });
        }
        let wait = waits.next(kind, tries);
        tx.progress.note(&format!(
            "upload interrupted ({e}); retrying in {:.1} s",
            wait.as_secs_f64()
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.stop.wait_for(|s| *s) => return Err(SendError::Interrupted),
        }
    }
}

/// The stream's session and where it goes on.
struct Stream<'a> {
    up: &'a Upload,
    conn: &'a Conn,
    /// `None` after a failure: the next attempt connects again.
    session: Option<Session>,
    /// Where the current attempt started.
    offset: u64,
    /// The server refused `REST` + `STOR` at an offset: append instead.
    use_appe: bool,
}

impl Stream<'_> {
    /// One attempt: a session (a new one asks the remote size first), then the rest of the
    /// file. `pos` follows the bytes written.
    async fn attempt(&mut self, pos: &AtomicU64) -> Result<(), SendError> {
        let up = self.up;
        let s = match self.session.as_mut() {
            Some(s) => s,
            None => {
                let mut s = self.conn.another().await.map_err(SendError::Session)?;
                // What arrived is what the server has: go on from there.
                self.offset = match remote_size(&mut s, &up.target)
                    .await
                    .map_err(SendError::Session)?
                {
                    Some(n) if n <= up.size => n,
                    _ => 0,
                };
                pos.store(self.offset, Ordering::Relaxed);
                self.session.insert(s)
            }
        };
        let offset = self.offset;
        let how = if self.use_appe && offset > 0 {
            Store::Appe
        } else {
            Store::Stor
        };
        match send_range(up, s, how, offset, up.size, pos).await {
            Err(SendError::Session(SessionError::Reply { code, command, .. }))
                if how == Store::Stor
                    && offset > 0
                    && code >= 500
                    && (command == "REST" || command.starts_with("STOR")) =>
            {
                // REST + STOR refused: append instead (the server's size is the offset).
                self.use_appe = true;
                send_range(up, s, Store::Appe, offset, up.size, pos).await
            }
            Err(SendError::Session(SessionError::Protocol(_))) if offset > 0 => {
                self.use_appe = true;
                send_range(up, s, Store::Appe, offset, up.size, pos).await
            }
            other => other,
        }
    }
}

/// Runs `attempt`, redrawing the progress every tick and once at its end; `Interrupted` as
/// soon as `stop` turns true.
async fn with_progress(
    tx: &mut Sender<'_>,
    pos: &AtomicU64,
    attempt: impl Future<Output = Result<(), SendError>>,
) -> Result<(), SendError> {
    let up = tx.up;
    let mut tick = tokio::time::interval(TICK);
    tokio::pin!(attempt);
    let result = loop {
        tokio::select! {
            r = &mut attempt => break r,
            _ = tick.tick() => tx.progress.update(&view(up, pos.load(Ordering::Relaxed))),
            _ = tx.stop.wait_for(|s| *s) => return Err(SendError::Interrupted),
        }
    };
    tx.progress.update(&view(up, pos.load(Ordering::Relaxed)));
    result
}

/// The progress display of the stream at offset `p`.
fn view(up: &Upload, p: u64) -> View {
    View {
        done: p,
        total: Some(up.size),
        conns: vec![ConnView {
            bytes: up.sent.load(Ordering::Relaxed),
            range: Some((p, up.size)),
            state: ConnState::Sending,
            server: 0,
        }],
        network_missing: None,
        servers: Vec::new(),
    }
}
