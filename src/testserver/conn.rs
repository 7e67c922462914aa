//! The test server's connections: the accept loop, the connection limit (`421 Too many
//! connections` after a short grace), plain and implicit-TLS sessions handed to libunftp, and
//! the optional added latency.

use std::{
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use libunftp::{
    ServerBuilder,
    options::{ActivePassiveMode, FtpsRequired, PassiveHost},
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinSet,
};

use super::backend::FaultyFs;
use super::{LiveGuard, SessionSettings, Shared};

/// Ports used for passive data connections. Wide, because many servers run at once in tests.
const PASSIVE_PORTS: RangeInclusive<u16> = 49152..=65535;

/// Greeting sent on new control connections.
const GREETING: &str = "ftpseg test server ready";

/// Reply sent, before closing, to a connection over the limit.
const TOO_MANY_CONNECTIONS: &[u8] = b"421 Too many connections\r\n";

/// Longest time spent sending the 421 reply to a refused connection.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection over the limit waits up to `ADMIT_GRACE_POLLS * ADMIT_GRACE_POLL` (200 ms) for a
/// slot before being refused.
const ADMIT_GRACE_POLLS: u32 = 40;

const ADMIT_GRACE_POLL: Duration = Duration::from_millis(5);

/// Pause after a failed `accept()` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Longest time an implicit-FTPS client may take to complete its handshake.
const IMPLICIT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts control connections until told to stop (or aborted), then tears the sessions down.
pub(super) async fn accept_loop(
    listener: TcpListener,
    settings: Arc<SessionSettings>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut sessions: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            // Either an explicit stop or the `TestServer` being dropped.
            _ = &mut stop => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    sessions.spawn(admit(stream, settings.clone(), shared.clone()));
                }
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await,
            },
        }
    }
    drop(listener);
    shared.stopping.store(true, Ordering::Relaxed);
    // Aborting a session drops its libunftp `service()` future, which drops that session's
    // shutdown notifier: its control loop then exits and closes the control connection.
    sessions.shutdown().await;
}

/// Serves a new control connection if a slot is free, or frees up within a short grace period
/// (a client that has just closed a connection may reconnect before the server has noticed);
/// otherwise answers 421 and closes it.
async fn admit(stream: TcpStream, settings: Arc<SessionSettings>, shared: Arc<Shared>) {
    let limit = || match shared.max_connections.load(Ordering::Acquire) {
        u64::MAX => None,
        n => Some(n as usize),
    };
    let mut guard = LiveGuard::try_claim(&shared, limit());
    for _ in 0..ADMIT_GRACE_POLLS {
        if guard.is_some() {
            break;
        }
        tokio::time::sleep(ADMIT_GRACE_POLL).await;
        guard = LiveGuard::try_claim(&shared, limit());
    }
    match guard {
        Some(guard) => serve(stream, settings, guard).await,
        None => {
            shared
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            refuse(stream).await;
        }
    }
}

/// Tells a connection over the limit to go away.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves one control connection with a libunftp server of its own.
async fn serve(stream: TcpStream, settings: Arc<SessionSettings>, guard: LiveGuard) {
    let shared = guard.shared.clone();
    let conn = guard.conn.clone();
    let root = settings.root.clone();
    // libunftp calls the generator once per `service()`, when the session starts.
    let generator = Box::new(move || FaultyFs::new(&root, shared.clone(), conn.clone()));
    let mut builder = ServerBuilder::with_authenticator(generator, settings.authenticator.clone())
        .greeting(GREETING)
        .passive_ports(PASSIVE_PORTS)
        .passive_host(PassiveHost::FromConnection);
    if settings.active {
        builder = builder.active_passive_mode(ActivePassiveMode::ActiveAndPassive);
    }
    if let Some(idle) = settings.idle_timeout {
        builder = builder.idle_session_timeout(idle.as_secs().max(1));
    }
    // One rustls config (and session cache) per control connection, as vsftpd has.
    let tls = match &settings.tls {
        Some(t) => match t.connection_config(&guard.shared) {
            Ok(config) => Some((config, t.implicit)),
            Err(_) => None,
        },
        None => None,
    };
    if let Some((config, _)) = &tls {
        builder = builder.ftps_manual::<PathBuf>(config.clone());
    }
    if settings.tls.as_ref().is_some_and(|t| t.required) {
        builder = builder.ftps_required(FtpsRequired::All, FtpsRequired::All);
    }
    match builder.build() {
        Ok(server) => match (tls, settings.latency) {
            (Some((config, true)), _) => serve_implicit(stream, config, server).await,
            (_, Some(rtt)) => serve_delayed(stream, rtt, server).await,
            // Errors are logged by libunftp; the connection is closed either way.
            _ => {
                let _ = server.service(stream).await;
            }
        },
        Err(_) => {
            let mut stream = stream;
            let _ = tokio::time::timeout(
                REFUSAL_TIMEOUT,
                stream.write_all(b"421 Service not available\r\n"),
            )
            .await;
        }
    }
    drop(guard);
}

/// Implicit FTPS: the TLS handshake on the client's connection, then the decrypted control
/// channel relayed to libunftp (which serves TCP streams only) over a loopback connection on
/// the same address, so its passive replies name the address the client connected to.
async fn serve_implicit(
    client: TcpStream,
    config: Arc<suppaftp::tokio_rustls::rustls::ServerConfig>,
    server: libunftp::Server<FaultyFs, unftp_core::auth::DefaultUser>,
) {
    let acceptor = suppaftp::tokio_rustls::TlsAcceptor::from(config);
    let Ok(local) = client.local_addr() else {
        return;
    };
    let Ok(Ok(mut tls)) =
        tokio::time::timeout(IMPLICIT_HANDSHAKE_TIMEOUT, acceptor.accept(client)).await
    else {
        return;
    };
    let Some((mut outer, inner)) = loopback_pair(local.ip()).await else {
        return;
    };
    let relay = async move {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut outer).await;
        // Dropping `outer` closes libunftp's control connection when the client goes away.
        drop(outer);
    };
    let _ = tokio::join!(server.service(inner), relay);
}

/// A connected pair of TCP streams on `ip` (the relay's end, libunftp's end), for serving a
/// control connection through a relay: libunftp's passive replies then name `ip`, the address
/// the client connected to.
async fn loopback_pair(ip: IpAddr) -> Option<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.ok()?;
    let addr = listener.local_addr().ok()?;
    let (outer, inner) = tokio::join!(TcpStream::connect(addr), listener.accept());
    Some((outer.ok()?, inner.ok()?.0))
}

/// [`ServerConfig::latency`](super::ServerConfig::latency): the control connection relayed to libunftp over a loopback
/// connection on the same address (so its passive replies name the address the client
/// connected to), every chunk delivered half a round trip after it was sent, the greeting
/// two round trips after the connect.
async fn serve_delayed(
    client: TcpStream,
    rtt: Duration,
    server: libunftp::Server<FaultyFs, unftp_core::auth::DefaultUser>,
) {
    let Ok(local) = client.local_addr() else {
        return;
    };
    let Some((outer, inner)) = loopback_pair(local.ip()).await else {
        return;
    };
    let relay = async move {
        // The handshake's round trip, and half of the greeting's (the other half below).
        tokio::time::sleep(rtt + rtt / 2).await;
        let (client_read, client_write) = client.into_split();
        let (outer_read, outer_write) = outer.into_split();
        // When either direction ends, its write side is shut down: libunftp sees the client
        // go away, the client sees the server close.
        tokio::join!(
            delayed_copy(client_read, outer_write, rtt / 2),
            delayed_copy(outer_read, client_write, rtt / 2)
        );
    };
    let _ = tokio::join!(server.service(inner), relay);
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in order (a link's
/// one-way latency); shuts `to` down when `from` ends or fails.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::AsyncReadExt;
    // Control traffic is small; the bound only keeps a flooding client from growing it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        // Dropping `tx` lets the writer finish what is queued, then stop.
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
