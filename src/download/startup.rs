//! The start of a download: resolve the host, open and probe the first session, learn the
//! file's size (from `SIZE`, or from the `RETR` reply when the server has no `SIZE`), and start
//! the other connections' logins early so they overlap the rest of the setup.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::download::{Job, plan};
use crate::error::{Error, SessionContext, Step};
use crate::ftp::pool::Permit;
use crate::ftp::{Session, SessionError, TlsClient, Transfer, Verify};
use crate::retry::backoff;
use crate::retry::network::{Network, lookup_means_no_network, means_no_network};
use crate::ui::progress::{NetNote, Progress};

/// What [`startup`] learned and opened.
pub(super) struct Started {
    /// The network as the first contact found it (an outage it waited out is over).
    pub net: Arc<Network>,
    /// The TLS client when the URL uses TLS.
    pub tls: Option<Arc<TlsClient>>,
    pub first: Session,
    pub size: Option<u64>,
    pub mdtm: Option<String>,
    /// In a batch: the permit the first session holds.
    pub permit: Option<Permit>,
    pub early: EarlyLogins,
}

/// Logins of the other connections, started as soon as the first session has logged in and
/// the file's size is known, so they overlap the rest of the first session's questions
/// (`FEAT`, `REST`, `MDTM`) and the setup of the `.part` and the manifest: over a long path that
/// is several round trips sooner at full speed. Only after the first login worked (wrong
/// credentials cost one failed login, not N) and only as many as the size needs. The k-th
/// goes to worker k + 1; the logins not taken are aborted when this is dropped (a resumed
/// download may need fewer connections, a server without `REST` only one).
pub(super) struct EarlyLogins(Vec<Option<LoginTask>>);

type LoginTask = tokio::task::JoinHandle<Result<Session, SessionError>>;

impl EarlyLogins {
    /// The pending login for worker `id` (worker 0 has the first session).
    pub fn take(&mut self, id: usize) -> Option<PendingLogin> {
        let slot = self.0.get_mut(id.checked_sub(1)?)?;
        slot.take().map(PendingLogin)
    }
}

impl Drop for EarlyLogins {
    fn drop(&mut self) {
        for handle in self.0.iter().flatten() {
            handle.abort();
        }
    }
}

/// What a worker's first attempt starts from, besides its session (if it has one).
pub(super) enum HeadStart {
    /// A login started early ([`EarlyLogins`]).
    Login(PendingLogin),
    /// A transfer from byte 0 the first session already started (a server without `SIZE`).
    Transfer(Transfer),
}

/// One of the [`EarlyLogins`], handed to its worker; aborted if dropped before it is awaited.
pub(super) struct PendingLogin(LoginTask);

impl PendingLogin {
    pub async fn session(mut self) -> Result<Session, SessionError> {
        match (&mut self.0).await {
            Ok(r) => r,
            Err(e) => Err(SessionError::Protocol(format!("a login task ended: {e}"))),
        }
    }
}

impl Drop for PendingLogin {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connections for a download with `bytes` still to fetch: `-n` (one without `REST`), at most
/// one per `--min-range` bytes.
pub(super) fn workers_for(job: &Job, bytes: u64, rest: bool) -> usize {
    let connections = match rest {
        true => job.connections.clamp(1, plan::MAX_CONNECTIONS),
        false => 1,
    };
    let by_size = usize::try_from(bytes.div_ceil(job.min_range.max(1))).unwrap_or(usize::MAX);
    connections.min(by_size).max(1)
}

/// How many of `workers` start at once: all, or with `-n auto` the tuner's start.
pub(super) fn starting_workers(job: &Job, workers: usize) -> usize {
    match job.auto_connections {
        true => crate::download::autotune::START.min(workers),
        false => workers,
    }
}

/// The TLS client when the URL asks for TLS (with the warning for `--insecure`).
pub(super) fn tls_client(job: &Job) -> Result<Option<Arc<TlsClient>>, Error> {
    if !job.url.tls.is_tls() {
        return Ok(None);
    }
    if job.verify == Verify::Insecure {
        // Shown even with --quiet: the user should not forget it is on.
        eprintln!("ftpseg: warning: certificate verification is off (--insecure)");
    }
    Ok(Some(Arc::new(TlsClient::new(&job.url, &job.verify)?)))
}

/// The error for a run stopped by Ctrl-C: where its progress is, if anywhere.
pub(super) fn interrupted(manifest: Option<&std::path::Path>) -> Error {
    match manifest {
        Some(path) => Error::Interrupted(path.to_owned()),
        None => Error::InterruptedDiscarding,
    }
}

/// [`startup`], bounded by the timeouts; Ctrl-C ends it at once (`saved_in`: where an
/// earlier run's progress is, for the message).
pub(super) async fn startup_or_stop(
    job: &Job,
    tls: Option<Arc<TlsClient>>,
    mut stop: watch::Receiver<bool>,
    saved_in: Option<&std::path::Path>,
    progress: &mut Progress,
) -> Result<Started, Error> {
    tokio::select! {
        r = startup(job, tls, progress) => r,
        _ = stop.wait_for(|s| *s) => Err(interrupted(saved_in)),
    }
}

/// Resolves the host, opens the first session ([`first_contact`]), asks `SIZE`, starts the
/// other logins ([`EarlyLogins`]), then probes the first session (`FEAT`, `REST`) and asks
/// `MDTM`.
async fn startup(
    job: &Job,
    tls: Option<Arc<TlsClient>>,
    progress: &mut Progress,
) -> Result<Started, Error> {
    let failed = |e| Error::from_session(SessionContext::startup(&job.url, &job.creds), e);
    let (net, permit, mut first) = first_contact(job, tls.as_ref(), progress).await?;
    let addrs = net.addrs();
    first.set_use_pasv_address(job.use_pasv_address);
    first.set_active(job.active);
    // SIZE first (the session is in binary mode since its login): the size says how many
    // connections the download needs, and their logins can start now.
    let size = first.size(&job.url.path).await.map_err(|e| {
        Error::from_session(SessionContext::new(&job.url, &job.creds, Step::File), e)
    })?;
    crate::trace!("startup: SIZE answered {size:?}");
    let early = early_logins(job, &addrs, tls.as_ref(), size);
    first.probe().await.map_err(failed)?;
    let mdtm = first
        .mdtm(&job.url.path)
        .await
        .map_err(failed)?
        .map(|m| m.0);
    crate::trace!("startup: probed, {} early logins", early.0.len());
    Ok(Started {
        net,
        tls,
        first,
        size,
        mdtm,
        permit,
        early,
    })
}

/// Resolves the host and logs in the first session. A missing network (no route, no DNS
/// answer, connects timing out) is waited for, up to `--network-wait`, without counting
/// tries; a TLS handshake cut short is tried again, up to `--max-tries` (unFTP/libunftp can
/// read the client's first TLS bytes as a command when they arrive before it has switched
/// the connection to TLS); a refusal as one connection too many (421) is waited out as
/// `--busy-retry` says, up to `--max-tries`. Any other failure ends the download at once, as
/// before: at the first contact it usually means a wrong URL, host or password.
async fn first_contact(
    job: &Job,
    tls: Option<&Arc<TlsClient>>,
    progress: &mut Progress,
) -> Result<(Arc<Network>, Option<Permit>, Session), Error> {
    let failed = |e| Error::from_session(SessionContext::startup(&job.url, &job.creds), e);
    let net = Arc::new(Network::new(job.network_wait, Vec::new()));
    let host = job.url.host_for_connect();
    let mut said_lost = false;
    let mut tls_tries = 0;
    let (mut busy_tries, mut busy_wait) = (0, job.busy_retry);
    loop {
        crate::trace!("startup: resolving {host}");
        let missing = match crate::retry::resolve(&job.url, job.timeouts.connect).await {
            Err(Error::UnknownHost { detail, .. }) if lookup_means_no_network(&detail) => detail,
            Err(e) => return Err(e),
            Ok(addrs) => {
                net.set_addrs(addrs.clone());
                // Without a way out, a connect would only wait for its timeout.
                if let Err(e) = net.route() {
                    e.to_string()
                } else {
                    match open_first(job, &addrs, tls).await {
                        Ok((permit, first)) => {
                            if let Some(since) = net.missing_since() {
                                progress.network(&NetNote::Back {
                                    after: since.elapsed(),
                                });
                            }
                            net.reached();
                            return Ok((net, permit, first));
                        }
                        Err(e)
                            if means_no_network(&e)
                                || (e.is_transient() && net.route().is_err()) =>
                        {
                            e.to_string()
                        }
                        // Refused as one too many (often right after a kill: the old
                        // sessions still hold the server's slots): wait, then again.
                        Err(e) if e.is_busy() && busy_tries + 1 < job.max_tries => {
                            busy_tries += 1;
                            progress.note(&format!(
                                "{} refuses more connections ({e}); trying again in {}",
                                job.url.host_for_connect(),
                                crate::ui::human_duration(busy_wait)
                            ));
                            tokio::time::sleep(busy_wait).await;
                            busy_wait = crate::retry::busy_wait_after(busy_wait);
                            continue;
                        }
                        Err(SessionError::Tls(t))
                            if t.is_transient() && tls_tries + 1 < job.max_tries =>
                        {
                            tls_tries += 1;
                            crate::trace!("startup: TLS handshake cut short ({t}), trying again");
                            tokio::time::sleep(backoff(tls_tries)).await;
                            continue;
                        }
                        Err(e) => return Err(failed(e)),
                    }
                }
            }
        };
        net.missed(&missing);
        if !said_lost {
            said_lost = true;
            progress.network(&NetNote::Lost {
                why: missing,
                limit: job.network_wait,
            });
        }
        net.wait_for_return()
            .await
            .map_err(|gone| gone.into_error(&host, job.network_wait))?;
    }
}

/// The first session: in a batch, one another file left logged in or a new one under a
/// permit of the pool; otherwise a new one.
async fn open_first(
    job: &Job,
    addrs: &[SocketAddr],
    tls: Option<&Arc<TlsClient>>,
) -> Result<(Option<Permit>, Session), SessionError> {
    let connect = || Session::connect_with(addrs, &job.creds, job.timeouts, tls);
    match &job.pool {
        Some(pool) => {
            let (p, s) = pool.acquire().await;
            let (p, s) = pool.connect_or_wait(p, s, connect).await?;
            Ok((Some(p), s))
        }
        None => Ok((None, connect().await?)),
    }
}

/// Starts the logins of the connections a file of `size` bytes needs besides the first (none
/// in a batch: there connections are opened with the pool's permits, when workers get them).
fn early_logins(
    job: &Job,
    addrs: &[SocketAddr],
    tls: Option<&Arc<TlsClient>>,
    size: Option<u64>,
) -> EarlyLogins {
    let (Some(size), None) = (size, &job.pool) else {
        return EarlyLogins(Vec::new());
    };
    if size == 0 {
        return EarlyLogins(Vec::new());
    }
    let size = job.limit.map_or(size, |limit| limit.clamp(1, size));
    // REST is probed only later; without it, these logins are aborted unused. With mirrors,
    // only this server's share, within its limit (the mirrors are opened later).
    let all = starting_workers(job, workers_for(job, size, true));
    let share = all.div_ceil(1 + job.mirrors.len());
    let mine = match job.mirrors.is_empty() {
        true => all,
        false => share.min(job.per_mirror.unwrap_or(usize::MAX)),
    };
    let others = mine.max(1) - 1;
    EarlyLogins(
        (0..others)
            .map(|_| {
                let (addrs, creds) = (addrs.to_vec(), job.creds.clone());
                let (timeouts, tls) = (job.timeouts, tls.cloned());
                Some(tokio::spawn(async move {
                    Session::connect_with(&addrs, &creds, timeouts, tls.as_ref()).await
                }))
            })
            .collect(),
    )
}

/// The size to download, decided by the transfer itself when `SIZE` gave none (or 0).
pub(super) enum Size {
    /// Known: from `SIZE`, or announced in the reply to a `RETR` from byte 0, which is then
    /// `preopened` for the first worker.
    Known {
        size: u64,
        preopened: Option<Transfer>,
    },
    /// Unknown even from the transfer (already started at byte 0): stream it to its end.
    Unknown(Transfer),
}

/// No SIZE, or SIZE 0 (some servers answer 0 for any file in binary mode, as curl notes):
/// starts the transfer at byte 0 and looks for "(N bytes)" in its 150 reply. `keeps_files`:
/// the bytes go to a file (an unknown size can only be streamed into one).
pub(super) async fn settle_size(
    job: &Job,
    progress: &mut Progress,
    first: &mut Session,
    size: Option<u64>,
    keeps_files: bool,
) -> Result<Size, Error> {
    if let Some(size) = size.filter(|&s| s > 0) {
        return Ok(Size::Known {
            size,
            preopened: None,
        });
    }
    let transfer = first.retr(&job.url.path, 0).await.map_err(|e| {
        Error::from_session(SessionContext::new(&job.url, &job.creds, Step::File), e)
    })?;
    match transfer.announced_size {
        // "(0 bytes)" proves nothing: stream and let the end of the data decide.
        Some(n) if n > 0 => {
            progress.note(&format!(
                "the server does not answer SIZE; using the size its RETR reply announced ({n} \
                 bytes)"
            ));
            Ok(Size::Known {
                size: n,
                preopened: Some(transfer),
            })
        }
        _ if !keeps_files => Err(Error::Usage(format!(
            "the server reports no size for {}, so it can only be streamed into a file; \
             measure it without --discard",
            job.url.path
        ))),
        _ => {
            progress.note("the server reports no file size: streaming on one connection");
            Ok(Size::Unknown(transfer))
        }
    }
}
