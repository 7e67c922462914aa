//! Opening a session: TCP, explicit (`AUTH TLS`) or implicit TLS, the greeting, login,
//! binary mode, and the probe of what the server can do (`FEAT`, `REST`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use suppaftp::{FtpError, Mode, Status};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::data::connect_data;
use super::{Credentials, Ftp, Session, SessionError, Timeouts, late};
use crate::ftp::reply::{self, Features};
use crate::ftp::tls::{self, TlsClient, TlsCounters, TlsError};

impl Session {
    /// Connects to the first address that answers, reads the greeting, logs in and sets binary
    /// mode. The whole sequence is bounded by the timeouts. Plain FTP.
    pub async fn connect(
        addrs: &[SocketAddr],
        creds: &Credentials,
        timeouts: Timeouts,
    ) -> Result<Session, SessionError> {
        Self::connect_with(addrs, creds, timeouts, None).await
    }

    /// Like [`Session::connect`], over TLS when `tls` is given (explicit or implicit, as the
    /// client says). Each session gets its own TLS client config (see `ftp::tls`).
    pub async fn connect_with(
        addrs: &[SocketAddr],
        creds: &Credentials,
        timeouts: Timeouts,
        tls: Option<&Arc<TlsClient>>,
    ) -> Result<Session, SessionError> {
        let mut last = None;
        for &addr in addrs {
            match Self::connect_one(addr, creds, timeouts, tls).await {
                Ok(s) => return Ok(s),
                Err(e @ SessionError::Connect { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| SessionError::Protocol("no address to connect to".into())))
    }

    async fn connect_one(
        addr: SocketAddr,
        creds: &Credentials,
        timeouts: Timeouts,
        tls: Option<&Arc<TlsClient>>,
    ) -> Result<Session, SessionError> {
        let Some(client) = tls else {
            let ftp = Self::connect_plain(addr, timeouts).await?;
            return Self::finish_connect(ftp, None, addr, creds, timeouts).await;
        };
        // This session's own TLS config and resumption cache (see `super::tls`).
        let (connector, counters) = client.session();
        let ftp = if client.implicit() {
            Self::connect_implicit(addr, timeouts, client, &counters, connector).await?
        } else {
            let ftp = Self::connect_plain(addr, timeouts).await?;
            Self::secure(ftp, timeouts, client, &counters, connector).await?
        };
        let tls = Some((client.clone(), counters));
        Self::finish_connect(ftp, tls, addr, creds, timeouts).await
    }

    /// TCP connection and greeting, in plain text.
    async fn connect_plain(addr: SocketAddr, timeouts: Timeouts) -> Result<Ftp, SessionError> {
        let tcp = connect_tcp(addr, timeouts)
            .await
            .map_err(|source| SessionError::Connect { addr, source })?;
        timeout(timeouts.reply, Ftp::connect_with_stream(tcp))
            .await
            .map_err(|_| late("waiting for the server's greeting", timeouts.reply))?
            .map_err(|e| SessionError::from_ftp("greeting", e))
    }

    /// Explicit TLS: `AUTH TLS`, the handshake, `PBSZ 0`, `PROT P` (suppaftp's `into_secure`),
    /// before anything else is sent. A refusal is an error, never a reason to go on in plain text.
    async fn secure(
        ftp: Ftp,
        timeouts: Timeouts,
        client: &TlsClient,
        counters: &TlsCounters,
        connector: tls::Connector,
    ) -> Result<Ftp, SessionError> {
        let secured = timeout(timeouts.reply, ftp.into_secure(connector, client.host()))
            .await
            .map_err(|_| late("TLS negotiation (AUTH TLS)", timeouts.reply))?;
        match secured {
            Ok(ftp) => Ok(ftp),
            Err(FtpError::UnexpectedResponse(r)) => {
                // The text starts with the code.
                let code = reply::reply_code(&r.body).unwrap_or(0);
                let text = reply::reply_text(&r.body);
                if !counters.started() {
                    let refusal = SessionError::Reply {
                        command: "AUTH TLS".into(),
                        code,
                        text: text.clone(),
                    };
                    if refusal.is_busy() {
                        // "421 Too many connections" is not an answer about TLS.
                        return Err(refusal);
                    }
                    Err(SessionError::Tls(TlsError::NotOffered {
                        host: client.host().to_owned(),
                        reply: text,
                    }))
                } else {
                    Err(SessionError::Tls(TlsError::NoProtection {
                        host: client.host().to_owned(),
                        command: "PBSZ 0/PROT P".into(),
                        reply: text,
                    }))
                }
            }
            Err(FtpError::SecureError(detail)) => Err(SessionError::Tls(
                client.handshake_error(counters, "control", detail, None),
            )),
            Err(e) => Err(SessionError::from_ftp("AUTH TLS", e)),
        }
    }

    /// Implicit TLS: the handshake right after connecting, then the greeting, `PBSZ 0`, `PROT P`.
    ///
    /// suppaftp's `connect_secure_implicit` (behind its `deprecated` feature) opens the TCP
    /// connection itself, so the connect and the handshake share one limit here, and TCP
    /// keepalive and no-Nagle are set on the control socket only once it is up.
    async fn connect_implicit(
        addr: SocketAddr,
        timeouts: Timeouts,
        client: &TlsClient,
        counters: &TlsCounters,
        connector: tls::Connector,
    ) -> Result<Ftp, SessionError> {
        let limit = timeouts.connect + timeouts.reply;
        let connected = timeout(
            limit,
            Ftp::connect_secure_implicit(addr, connector, client.host()),
        )
        .await
        .map_err(|_| late("connecting with TLS and waiting for the greeting", limit))?;
        let mut ftp = match connected {
            Ok(ftp) => ftp,
            Err(FtpError::ConnectionError(source)) if !counters.started() => {
                return Err(SessionError::Connect { addr, source });
            }
            Err(FtpError::SecureError(detail)) => {
                return Err(SessionError::Tls(
                    client.handshake_error(counters, "control", detail, None),
                ));
            }
            Err(e) => return Err(SessionError::from_ftp("greeting", e)),
        };
        {
            let socket = ftp.get_ref().await;
            tune_socket(&socket, timeouts)
                .map_err(|source| SessionError::Connect { addr, source })?;
        }
        // As after AUTH TLS: the data protection level is Clear until PROT P (RFC 2228), also
        // on an implicit TLS control connection; suppaftp does not send these here.
        for command in ["PBSZ 0", "PROT P"] {
            let r = timeout(
                timeouts.reply,
                ftp.custom_command(command, &[Status::CommandOk]),
            )
            .await
            .map_err(|_| late(command, timeouts.reply))?;
            match r {
                Ok(_) => {}
                Err(FtpError::UnexpectedResponse(r)) => {
                    return Err(SessionError::Tls(TlsError::NoProtection {
                        host: client.host().to_owned(),
                        command: command.to_owned(),
                        reply: reply::reply_text(&r.body),
                    }));
                }
                Err(e) => return Err(SessionError::from_ftp(command, e)),
            }
        }
        Ok(ftp)
    }

    /// Data connections, passive mode, login and binary mode: the same for plain and TLS.
    async fn finish_connect(
        ftp: Ftp,
        tls: Option<(Arc<TlsClient>, Arc<TlsCounters>)>,
        addr: SocketAddr,
        creds: &Credentials,
        timeouts: Timeouts,
    ) -> Result<Session, SessionError> {
        // The receive low-water mark only on plain data sockets: on a TLS socket the bytes are
        // records that rustls must decrypt whole, and read_data never bypasses it there.
        let lowat = tls.is_none();
        let mut ftp = ftp.passive_stream_builder(move |addr| {
            Box::pin(async move {
                connect_data(addr, timeouts, lowat)
                    .await
                    .map_err(FtpError::ConnectionError)
            })
        });
        // Use the control peer's address for PASV data connections, never the one in the reply.
        ftp.set_passive_nat_workaround(true);
        // Active mode, when asked for later, accepts the server's data connection within the
        // connect timeout (and only from the control peer: suppaftp's default check).
        let mut ftp = ftp.active_mode(timeouts.connect);
        ftp.set_mode(Mode::ExtendedPassive);
        let mut session = Session {
            ftp,
            tls,
            timeouts,
            peer: addr,
            features: Features::default(),
            rest: true,
            rest0: true,
            rang: false,
            offset_dirty: false,
            epsv: true,
            active: false,
        };
        let (user, pass) = (creds.user.as_str(), creds.password.as_str());
        session
            .bounded("login", |ftp| Box::pin(ftp.login(user, pass)))
            .await?;
        session
            .bounded("TYPE I", |ftp| {
                Box::pin(ftp.transfer_type(suppaftp::types::FileType::Binary))
            })
            .await?;
        Ok(session)
    }

    /// Asks `FEAT` and checks `REST` for real: some servers list it and refuse it, others answer
    /// it without listing it. `REST 0` first (harmless, and sent before every transfer from
    /// byte 0); only if that is refused, `REST 1` (as axel does). Only a 5xx means "no REST": a
    /// 4xx is a transient refusal and fails the probe. Returns what the server can do.
    pub async fn probe(&mut self) -> Result<&Features, SessionError> {
        match self.raw("FEAT", &[211]).await {
            Ok(body) => self.features = reply::parse_features(&body),
            Err(e @ SessionError::Reply { .. }) => {
                // No FEAT (500/502): assume nothing, test what matters.
                let _ = e;
                self.features = Features::default();
            }
            Err(e) => return Err(e),
        }
        self.epsv = self.features.epsv || !self.features.pasv;
        self.rang = self.features.rang_stream;
        self.apply_mode();
        match self.raw("REST 0", &[350]).await {
            Ok(_) => {
                self.rest = true;
                self.rest0 = true;
            }
            Err(SessionError::Reply { code, .. }) if code >= 500 => {
                self.rest0 = false;
                match self.raw("REST 1", &[350]).await {
                    Ok(_) => {
                        self.rest = true;
                        self.offset_dirty = true;
                    }
                    Err(SessionError::Reply { code, .. }) if code >= 500 => self.rest = false,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        Ok(&self.features)
    }
}

/// A TCP connection with a connect timeout, tuned by [`tune_socket`].
pub(super) async fn connect_tcp(
    addr: SocketAddr,
    timeouts: Timeouts,
) -> std::io::Result<TcpStream> {
    let stream = timeout(timeouts.connect, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    tune_socket(&stream, timeouts)?;
    Ok(stream)
}

/// Dead peers found without a RST (a lost network, a machine that slept behind a NAT): TCP
/// keepalive, so a connection is probed even when the application is idle, and
/// `TCP_USER_TIMEOUT` of `--stall-timeout`, so data sent and never acknowledged (a command, a
/// keepalive probe) fails the connection within the bound a silent data connection gets.
/// No Nagle delay.
pub(super) fn tune_socket(stream: &TcpStream, timeouts: Timeouts) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_keepalive(&keepalive)?;
    set_user_timeout(stream, timeouts.data_idle)?;
    stream.set_nodelay(true)
}

/// `TCP_USER_TIMEOUT` (Linux): the longest time sent data may stay unacknowledged.
fn set_user_timeout(stream: &TcpStream, limit: Duration) -> std::io::Result<()> {
    let ms = limit.as_millis().clamp(1, libc::c_int::MAX as u128) as libc::c_int;
    set_int_option(stream, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

/// `setsockopt` of one `int` option (the socket options socket2 does not offer us).
pub(super) fn set_int_option(
    stream: &TcpStream,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a pointer to a live c_int with its size.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
