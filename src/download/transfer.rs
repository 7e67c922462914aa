//! One attempt at a range ([`fetch_range`]): connect if needed, `REST`+`RETR` (or `RANG`) from
//! the range's position, read into the `.part` until the range's (moving) end, stop early, keep
//! the session for the next range.
//!
//! The data path: the connection's `Receiver` says where the next bytes land (the map at the
//! range's offset, a pipe, or a buffer: `storage::part::writer`, chosen by `--io`), the
//! session reads them there (`Session::read_data` or `splice_data`), `Receiver::land` puts
//! them in the `.part`; each piece is hashed as written (`InlineHashes`), then
//! `Segment::advance`. The loop doing that is [`read_range`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::download::checkpoint::{far_ahead, wait_for_checkpoint};
use crate::download::meter::{RateProbe, blend_f64};
use crate::download::sched::{READ_CHUNK, Segment};
use crate::download::startup::{HeadStart, PendingLogin};
use crate::download::state::{ConnStat, Server, Shared};
use crate::error::Error;
use crate::ftp::{DataStream, Session, SessionError, Transfer};
use crate::storage::{Landing, PartWriter, Receiver};
use crate::ui::progress::ConnState;

/// Why an attempt at a range failed.
pub(super) enum AttemptError {
    /// The session failed: retried, or reported through [`Error::from_session`].
    Session(SessionError),
    /// The local disk refused a write: reported as it is (exit 8), never retried.
    Local(Error),
}

impl From<SessionError> for AttemptError {
    fn from(e: SessionError) -> Self {
        AttemptError::Session(e)
    }
}

/// One worker's connection: its session when one is open, and its way into the file.
pub(super) struct Connection<'a> {
    pub shared: &'a Shared,
    pub id: usize,
    pub session: Option<Session>,
    /// Where this connection's bytes land (its pipe, buffer or window of the map), reused by
    /// every attempt.
    rx: Receiver,
}

impl<'a> Connection<'a> {
    pub fn new(shared: &'a Shared, id: usize, session: Option<Session>) -> Self {
        Connection {
            shared,
            id,
            session,
            rx: shared.output.writer.receiver(READ_CHUNK as usize),
        }
    }

    pub fn stat(&self) -> &'a ConnStat {
        &self.shared.conns[self.id]
    }

    /// The server this connection reads from.
    pub fn server(&self) -> &'a Server {
        self.shared.server(self.id)
    }

    /// Opens a session if there is none: the login started early, or a new one.
    async fn connect(&mut self, login: Option<PendingLogin>) -> Result<(), SessionError> {
        if self.session.is_none() {
            let s = match login {
                // Started during the first session's probe (`EarlyLogins`).
                Some(login) => welcome(self.server(), login.session().await?),
                None => log_in(self.server()).await?,
            };
            self.session = Some(s);
        }
        Ok(())
    }
}

/// A new session to `server`, with what the download learned about it.
pub(super) async fn log_in(server: &Server) -> Result<Session, SessionError> {
    let addrs = server.net.addrs();
    // Without a way out, a connect would only wait for its timeout (`Failure::NoNetwork`).
    if let (Err(source), Some(&addr)) = (server.net.route(), addrs.first()) {
        return Err(SessionError::Connect { addr, source });
    }
    let s =
        Session::connect_with(&addrs, &server.creds, server.timeouts, server.tls.as_ref()).await?;
    Ok(welcome(server, s))
}

/// A session this download opened (now or early): counted, and told what the download
/// learned about the server.
fn welcome(server: &Server, mut s: Session) -> Session {
    server.opened.fetch_add(1, Ordering::Relaxed);
    server.net.reached();
    server.adopt(&mut s);
    s
}

/// One attempt at a range: connect if needed, `REST`+`RETR` from the range's position, read
/// into the file until the range's (moving) end, stop early, keep the session for the next
/// range. `head`: a login started early, used instead of connecting; or a transfer the probe
/// already started at byte 0 (servers without SIZE), used if the range starts there,
/// otherwise stopped.
pub(super) async fn fetch_range(
    c: &mut Connection<'_>,
    head: Option<HeadStart>,
    seg: &Arc<Segment>,
) -> Result<(), AttemptError> {
    let (shared, server) = (c.shared, c.server());
    let (login, preopened) = match head {
        Some(HeadStart::Login(login)) => (Some(login), None),
        Some(HeadStart::Transfer(transfer)) => (None, Some(transfer)),
        None => (None, None),
    };
    c.connect(login).await?;
    let s = c.session.as_mut().expect("connected above");
    if !server.rest.0 && seg.pos() > seg.start {
        // Without REST a failed stream can only start again from byte 0.
        shared.sched.rewind(seg, seg.start);
    }
    let mut read = RangeRead {
        shared,
        id: c.id,
        stat: &shared.conns[c.id],
        seg,
        pos: seg.pos(),
        asked: Instant::now(),
        transfer_end: 0,
        probe: None,
    };
    let attempt_start = read.pos;
    let path = &server.url.path;
    let Some(transfer) = open_transfer(path, s, seg, read.pos, preopened).await? else {
        return Ok(());
    };
    if !s.uses_epsv() {
        server.epsv.store(false, Ordering::Relaxed);
    }
    if !s.uses_rang() {
        server.rang.store(false, Ordering::Relaxed);
    }
    // Where the server ends this transfer by itself: the end of the file, or the end of the
    // range it was asked for with RANG.
    read.transfer_end = transfer.ends_at.unwrap_or(shared.target.remote_size);
    let mut stream = transfer.stream;
    // "reading" (the state whose throughput is measured) begins with the first byte: a rate
    // that decayed while a loaded server was still starting the transfer would make this
    // connection look slow, and others would take its range over just as its data came.
    read.stat.set(Some(seg.clone()), ConnState::Starting);
    if let Some(end) = read_range(&mut read, s, &mut stream, &mut c.rx).await? {
        return Err(read.ended_early(s, stream, end).await.into());
    }
    if let Some(p) = read.probe.as_mut() {
        p.sample(shared, read.stat, read.pos, true);
    }
    let to_eof = read.at_transfer_end(s, &mut stream).await?;
    if !to_eof && server.pool.is_none() && shared.sched.remaining() == 0 {
        // Every byte of the file is in and no other file needs this session: the reply to the
        // stopped transfer and the NOOP after it would only add two round trips to the end.
        drop(stream);
        if let Some(s) = c.session.take() {
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
    Ok(ended?)
}

/// The transfer for `seg` from `pos`: the one the probe started at byte 0 if the range starts
/// there (stopped otherwise), or a new one. `None`: nothing is left to fetch of `seg`.
async fn open_transfer(
    path: &str,
    s: &mut Session,
    seg: &Arc<Segment>,
    pos: u64,
    preopened: Option<Transfer>,
) -> Result<Option<Transfer>, SessionError> {
    match preopened {
        Some(t) if pos == 0 && pos < seg.end() => {
            seg.set_transfer_end(None);
            return Ok(Some(t));
        }
        Some(t) => s.end_transfer(t.stream, false).await?,
        None => {}
    }
    if pos >= seg.end() {
        return Ok(None);
    }
    Ok(Some(retr_piece(path, s, seg, pos).await?))
}

/// A transfer being read into its range.
struct RangeRead<'a> {
    shared: &'a Shared,
    id: usize,
    stat: &'a ConnStat,
    seg: &'a Arc<Segment>,
    /// Where the next byte goes.
    pos: u64,
    /// When the transfer was asked for (for the setup time).
    asked: Instant,
    /// Where the server ends this transfer by itself.
    transfer_end: u64,
    /// The reader's own rate samples, from its first byte.
    probe: Option<RateProbe>,
}

/// Reads the transfer into the range until the range's (moving) end or the transfer's own end,
/// whichever comes first. The hot loop: one read, one write, a few atomics per
/// [`READ_CHUNK`] at most, kept in one piece so every step of a read shows in order.
/// `Some(end)`: the data ended before `end`.
async fn read_range(
    r: &mut RangeRead<'_>,
    s: &mut Session,
    stream: &mut DataStream,
    rx: &mut Receiver,
) -> Result<Option<u64>, AttemptError> {
    let shared = r.shared;
    let seg = r.seg;
    // Written back however the attempt ends: finished, failed, or dropped by a take-over.
    let mut pending = WriteBack {
        writer: &shared.output.writer,
        from: r.pos,
        to: r.pos,
    };
    // Whole chunks this attempt writes are hashed as they are written (see `InlineHashes`).
    let chunking = shared.target.chunking;
    let cs = chunking.chunk_size;
    let mut chunks = crate::integrity::verify::ChunkStream::new(cs, chunking.file_size);
    let rewinds_at_start = shared.sched.rewinds();
    let inline = &shared.output.hashed_inline;
    let mut hashed = |at: u64, bytes: &[u8]| {
        chunks.feed(at, bytes, |k, cv| inline.push(k, cv, rewinds_at_start))
    };
    let writer = &shared.output.writer;
    let cannot_write =
        |e| AttemptError::Local(Error::io("cannot write to", &shared.output.part_path, e));
    // Nothing of an earlier attempt may land here (the landing above keeps the pipe empty
    // between awaits; this is the guard).
    match rx.drop_leftovers() {
        Ok(0) => {}
        Ok(n) => crate::trace!("conn {}: dropped {n} bytes an earlier attempt left", r.id),
        Err(e) => return Err(cannot_write(e)),
    }
    loop {
        // A steal that was rolled back can leave `end` past a RANG transfer's end: that
        // transfer stops at its own end and the range goes on in a new one.
        let end = seg.end().min(r.transfer_end);
        let pos = r.pos;
        if pos >= end {
            return Ok(None);
        }
        // Far behind the checkpoints (the machine is starved, or the disk is slow): wait for
        // one. Normally the early checkpoints keep well within a third of this.
        if far_ahead(shared) {
            wait_for_checkpoint(shared).await;
        }
        let limit = end.min(pos + READ_CHUNK);
        // This worker owns [pos, end) of `seg`: the steal protocol in `sched` guarantees nobody
        // else writes there, and no read reaches past a cut.
        let want = shared
            .limits
            .rate_limits
            .iter()
            .map(|l| l.read_size())
            .fold(limit - pos, u64::min) as usize;
        let n = match rx
            .landing(pos, want, Session::can_splice(stream))
            .map_err(cannot_write)?
        {
            Landing::Pipe(p) => s.splice_data(stream, p, want).await?,
            Landing::Memory(buf) => s.read_data(stream, buf).await?,
        };
        // Into the file before any wait: between the splice and this there is no await, so an
        // attempt dropped (a take-over) never leaves bytes in the pipe for the next one.
        let show: crate::storage::ShowWritten = (cs > 0).then_some(&mut hashed);
        rx.land(pos, n, show).map_err(cannot_write)?;
        if let Some(p) = &shared.output.provenance {
            p.wrote(r.stat.mirror, pos, n as u64);
        }
        for l in &shared.limits.rate_limits {
            l.take(n as u64).await;
        }
        if n == 0 {
            return Ok(Some(end));
        }
        r.advanced(n as u64);
        pending.to = r.pos;
        if r.pos - pending.from >= shared.output.write_back_every {
            writer.write_back(pending.from, r.pos);
            pending.from = r.pos;
        }
    }
}

impl RangeRead<'_> {
    /// Counts `n` bytes just written at `pos` (the first ones start the rate probe).
    #[inline]
    fn advanced(&mut self, n: u64) {
        let (shared, stat) = (self.shared, self.stat);
        if let Some(p) = self.probe.as_mut() {
            p.sample(shared, stat, self.pos + n, false);
        } else {
            self.first_byte(n);
        }
        self.pos += n;
        self.seg.advance(self.pos);
        stat.bytes.fetch_add(n, Ordering::Relaxed);
        shared.stake.fetched.fetch_add(n, Ordering::Relaxed);
    }

    /// The first read holds what queued up during the setup: measure from here.
    #[cold]
    fn first_byte(&mut self, n: u64) {
        let (shared, stat) = (self.shared, self.stat);
        self.probe = Some(RateProbe::start(shared, stat, self.pos + n));
        stat.set(Some(self.seg.clone()), ConnState::Reading);
        let since_start = shared.run.micros();
        let _ = shared.run.first_byte_us.compare_exchange(
            u64::MAX,
            since_start,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let took = self.asked.elapsed().as_secs_f64();
        blend_f64(&shared.run.setup, took, 0.3);
        crate::trace!(
            "conn {} first byte at {} after {:.3} s",
            self.id,
            self.pos,
            took
        );
    }

    /// The server ended the data before `end`: its reply says why, for the message.
    async fn ended_early(&self, s: &mut Session, stream: DataStream, end: u64) -> SessionError {
        let pos = self.pos;
        let why = match s.end_transfer(stream, true).await {
            Ok(()) => "the server said the transfer was complete".to_owned(),
            Err(e) => {
                // vsftpd closes a TLS data connection that did not resume the control
                // connection's session, then says 522: not worth retrying.
                let detail = format!("the data connection was closed at byte {pos}");
                if let Some(refused) = s.tls_refusal(&e, detail) {
                    return refused;
                }
                e.to_string()
            }
        };
        SessionError::Io {
            command: format!("RETR {}", self.shared.server(self.id).url.path),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("data ended at byte {pos}, expected {end} ({why})"),
            ),
        }
    }

    /// Whether the transfer ended where the server ends it by itself (the end of the file, or
    /// of the RANG range): then the server must have nothing more to send, and confirms with
    /// 226. More data there: a RANG end the server ignored (stop early as usual, and use REST
    /// from now on), or a file growing on the server.
    async fn at_transfer_end(
        &self,
        s: &mut Session,
        stream: &mut DataStream,
    ) -> Result<bool, SessionError> {
        let shared = self.shared;
        if self.pos != self.transfer_end {
            return Ok(false);
        }
        let mut probe = [0u8; 1];
        match s.read_data(stream, &mut probe).await? {
            0 => Ok(true),
            _ if self.transfer_end < shared.target.remote_size => {
                shared.server(self.id).rang.store(false, Ordering::Relaxed);
                Ok(false)
            }
            _ => Err(SessionError::Changed(format!(
                "the server sent more than the {} bytes SIZE announced: the file is changing on \
                 the server",
                shared.target.remote_size
            ))),
        }
    }
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
    path: &str,
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
    let t = s.retr_range(path, pos, Some(ask)).await;
    // RANG refused (the session then uses REST): no end of its own.
    seg.set_transfer_end(t.as_ref().ok().and_then(|t| t.ends_at));
    t
}
