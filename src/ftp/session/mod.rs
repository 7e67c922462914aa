//! One FTP control session: connect, log in, probe, and ranged transfers that stop early.
//!
//! Built on `suppaftp` (tokio), with the rules measured against real servers:
//! * Every step has a timeout (connect, each reply, each data read). A session that timed out is
//!   never reused: the caller drops it and connects again.
//! * `TYPE I` is sent before `SIZE` (proftpd and pyftpdlib refuse SIZE in ASCII mode).
//! * `REST` is sent before every `RETR`, including `REST 0` (libunftp and pure-ftpd keep a stale
//!   offset after a failed transfer). suppaftp defers `REST n` to just before `RETR`, after
//!   `EPSV`/`PASV`, as RFC 3659 wants.
//! * Data connections go to the control connection's peer address: EPSV carries only a port, and
//!   for PASV the address in the reply is ignored (suppaftp's NAT workaround).
//! * Active mode (`--active`, [`Session::set_active`]): suppaftp's own. For each transfer it
//!   listens on the control connection's local address (port 0), sends `PORT` (IPv4) or `EPRT`
//!   (IPv6), sends the command, reads its 150, then accepts only a connection from the control
//!   connection's peer (others are closed and ignored), within the connect timeout; the whole
//!   step is also under the reply timeout. Each session has its own listener, so N connections
//!   have N listeners at once. The accepted socket gets the same tuning as a passive one
//!   (keepalive, no Nagle, the receive low-water mark on plain sessions) and, over FTPS, the
//!   same TLS client handshake resuming the control connection's session.
//! * A range is ended by closing the data connection and reading the server's one reply
//!   (`TransferStream::finish`), then `NOOP` and reading until its `200`, which swallows the
//!   extra replies some servers send (426 then 226, pure-ftpd's second 150). `ABOR` is never used:
//!   it desynchronises the control channel on some servers.
//! * FTPS ([`super::tls`]): explicit (`AUTH TLS`, `PBSZ 0`, `PROT P`, before `USER`, so a server
//!   that refuses TLS never sees the password) or implicit (TLS from the first byte, then `PBSZ 0`
//!   and `PROT P`). Every data connection is TLS too, resuming the control connection's session.
//!   There is one session type for plain and TLS sessions: a plain session simply has no TLS
//!   connector. A TLS failure is never answered by falling back to plain FTP.
//!
//! This file holds the session's types, settings and small commands (`SIZE`, `MDTM`, raw
//! commands); `connect.rs` opens a session (TCP, TLS, login, probe), `transfer.rs` runs and
//! ends `RETR`s, `data.rs` opens, tunes and reads data connections, `error.rs` says why a step
//! failed.

mod connect;
mod data;
mod error;
mod transfer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use suppaftp::tokio::{AsyncRustlsFtpStream, AsyncRustlsStream, TransferStream};
use suppaftp::{FtpError, Mode};
use tokio::time::timeout;

use super::reply::{self, Features, Mdtm};
use super::tls::{TlsClient, TlsCounters};

pub use error::SessionError;

/// The suppaftp client of every session, plain or TLS.
type Ftp = AsyncRustlsFtpStream;

/// Time limits of one session.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect (control and data connections).
    pub connect: Duration,
    /// Waiting for any one reply on the control connection.
    pub reply: Duration,
    /// No byte at all on a data connection for this long is a stall.
    pub data_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            reply: Duration::from_secs(30),
            data_idle: Duration::from_secs(30),
        }
    }
}

/// Who to log in as.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    /// The conventional anonymous login.
    pub fn anonymous() -> Credentials {
        Credentials {
            user: "anonymous".into(),
            password: "ftpseg@".into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password hidden>)", self.user)
    }
}

/// The data connection of one transfer, read straight into the caller's buffer.
pub type DataStream = TransferStream<AsyncRustlsStream>;

/// A `RETR` under way.
pub struct Transfer {
    pub stream: DataStream,
    /// The size the server announced in its 150 reply ("(N bytes)"), if it did.
    pub announced_size: Option<u64>,
    /// Where the server will end this transfer by itself: `Some(end)` when it was asked for
    /// exactly `[offset, end)` with `RANG`; `None` when it streams to the end of the file.
    pub ends_at: Option<u64>,
}

/// A logged-in control session.
pub struct Session {
    pub(super) ftp: Ftp,
    /// This session's TLS, if it uses TLS: the client (for messages) and what its connector saw.
    tls: Option<(Arc<TlsClient>, Arc<TlsCounters>)>,
    pub(super) timeouts: Timeouts,
    peer: SocketAddr,
    pub(super) features: Features,
    pub(super) rest: bool,
    /// The server accepts `REST 0` (most do; NcFTPd is said not to).
    pub(super) rest0: bool,
    /// The server sends exact byte ranges (`RANG start end` + `RETR`, FEAT `RANG STREAM`).
    rang: bool,
    /// A `REST n` may still be pending on a server that refuses `REST 0`: a transfer from byte
    /// 0 must not start on this session.
    pub(super) offset_dirty: bool,
    pub(super) epsv: bool,
    /// Active mode: the server connects to us (`PORT`/`EPRT`), no EPSV/PASV.
    active: bool,
}

impl Session {
    /// Whether this session uses TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// TLS handshakes of this session so far, the control connection's included, and how many
    /// of them resumed an earlier session: `None` for a plain session. Every data connection
    /// should resume (vsftpd's `require_ssl_reuse` refuses those that do not).
    pub fn tls_handshakes(&self) -> Option<(u64, u64)> {
        self.tls.as_ref().map(|(_, c)| c.handshakes())
    }

    /// The server address this session is connected to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// What the last [`Session::probe`] found.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Whether `REST` works on this server (from [`Session::probe`]).
    pub fn supports_rest(&self) -> bool {
        self.rest
    }

    /// What the probe session learned about `REST` (`rest`, `rest0`), for the other sessions.
    pub fn rest_support(&self) -> (bool, bool) {
        (self.rest, self.rest0)
    }

    /// Applies what another session of the same server learned about `REST`.
    pub fn set_rest_support(&mut self, (rest, rest0): (bool, bool)) {
        self.rest = rest;
        self.rest0 = rest0;
    }

    /// For PASV: connect to the address the server names (true), or to the control
    /// connection's peer (false, the default).
    pub fn set_use_pasv_address(&mut self, yes: bool) {
        self.ftp.set_passive_nat_workaround(!yes);
    }

    /// Whether ranged transfers use `RANG` (the probe found FEAT `RANG STREAM`, and no `RANG`
    /// was refused since).
    pub fn uses_rang(&self) -> bool {
        self.rang
    }

    /// Turns `RANG` on or off (what another session of the same server learned).
    pub fn set_rang(&mut self, rang: bool) {
        self.rang = rang;
    }

    /// Uses PASV instead of EPSV from now on (in passive mode).
    pub fn set_epsv(&mut self, epsv: bool) {
        self.epsv = epsv;
        self.apply_mode();
    }

    /// Active mode (`--active`): the server opens every data connection to us, after `PORT`
    /// (IPv4) or `EPRT` (IPv6) naming a listener on this connection's local address.
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
        self.apply_mode();
    }

    /// Whether this session uses active mode.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Tells suppaftp how to open data connections: active, EPSV or PASV.
    fn apply_mode(&mut self) {
        self.ftp.set_mode(if self.active {
            Mode::Active
        } else if self.epsv {
            Mode::ExtendedPassive
        } else {
            Mode::Passive
        });
    }

    /// Whether this session uses EPSV.
    pub fn uses_epsv(&self) -> bool {
        self.epsv
    }

    /// The file's size from `SIZE`, or `None` when the server does not implement `SIZE`. A 550
    /// (no such file, or not a plain file) is an error.
    pub async fn size(&mut self, path: &str) -> Result<Option<u64>, SessionError> {
        let command = format!("SIZE {path}");
        match self.raw(&command, &[213]).await {
            Ok(body) => reply::parse_size(&body)
                .map(Some)
                .map_err(|e| SessionError::Protocol(e.to_string())),
            Err(SessionError::Reply {
                code: 500 | 501 | 502 | 504,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The file's modification time from `MDTM`, or `None` when the server cannot tell.
    pub async fn mdtm(&mut self, path: &str) -> Result<Option<Mdtm>, SessionError> {
        let command = format!("MDTM {path}");
        match self.raw(&command, &[213]).await {
            Ok(body) => Ok(reply::parse_mdtm(&body).ok()),
            Err(SessionError::Reply { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Says goodbye politely, within the reply timeout; errors do not matter any more.
    pub async fn quit(mut self) {
        let _ = timeout(Duration::from_secs(2), self.ftp.quit()).await;
    }

    /// [`Session::quit`] in a task of its own: the caller does not wait a round trip for the
    /// server's goodbye. The task ends with the runtime if that comes first (the connection is
    /// then closed without it).
    pub fn quit_later(self) {
        tokio::spawn(self.quit());
    }

    /// Sends a raw command and returns the whole reply if its code is one of `ok`.
    ///
    /// The codes are checked here, from the reply's own digits: suppaftp maps codes it does not
    /// know (522, 554...) to `Unknown`, and when 211 is expected it returns after the first line
    /// of a multi-line reply, leaving the rest unread. Asking it for no code at all makes it read
    /// the whole reply and hand it back.
    pub(super) async fn raw(&mut self, command: &str, ok: &[u16]) -> Result<Vec<u8>, SessionError> {
        let reply = timeout(self.timeouts.reply, self.ftp.custom_command(command, &[]))
            .await
            .map_err(|_| late(command, self.timeouts.reply))?;
        let body = match reply {
            Ok(r) => r.body,
            Err(FtpError::UnexpectedResponse(r)) => r.body,
            Err(e) => return Err(SessionError::from_ftp(command, e)),
        };
        match reply::reply_code(&body) {
            Some(code) if ok.contains(&code) => Ok(body),
            _ => Err(SessionError::from_reply(command, &body)),
        }
    }

    /// Runs one suppaftp call under the reply timeout.
    async fn bounded<'a, T>(
        &'a mut self,
        what: &str,
        f: impl FnOnce(
            &'a mut Ftp,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, FtpError>> + Send + 'a>,
        >,
    ) -> Result<T, SessionError> {
        timeout(self.timeouts.reply, f(&mut self.ftp))
            .await
            .map_err(|_| late(what, self.timeouts.reply))?
            .map_err(|e| SessionError::from_ftp(what, e))
    }
}

/// A step that took longer than `limit`.
pub(super) fn late(what: impl std::fmt::Display, limit: Duration) -> SessionError {
    SessionError::Timeout(format!(
        "{what} (no answer within {} s)",
        limit.as_secs_f64()
    ))
}
