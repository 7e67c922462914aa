//! Sessions to the server for an upload and the waits between their tries. How a failure is
//! classified is `crate::retry`'s, which exit code it becomes `crate::error`'s: the same
//! rules as for downloads.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::PutJob;
use crate::error::{Error, SessionContext, Step};
use crate::ftp::{Credentials, Session, SessionError, Timeouts, TlsClient, Verify};
use crate::retry::network::{self, Network};
use crate::retry::{self, Failure};

/// How to open sessions to the server, and what the first one learned.
pub(super) struct Conn {
    addrs: Vec<SocketAddr>,
    /// Whether the network is there (`--network-wait`), as for downloads.
    net: Network,
    tls: Option<Arc<TlsClient>>,
    creds: Credentials,
    timeouts: Timeouts,
    use_pasv_address: bool,
    active: bool,
    /// What the first session's probe found, for the sessions after it.
    learned: Mutex<Option<Learned>>,
}

/// What a probe found out about the server that later sessions reuse.
#[derive(Clone, Copy)]
struct Learned {
    /// `Session::rest_support`.
    rest: (bool, bool),
    epsv: bool,
}

impl Conn {
    /// Prepares the job's sessions: warns about `--insecure`, sets up TLS, resolves the host.
    pub(super) async fn open(job: &PutJob) -> Result<Conn, Error> {
        if job.url.tls.is_tls() && job.verify == Verify::Insecure {
            eprintln!("ftpseg: warning: certificate verification is off (--insecure)");
        }
        let tls = match job.url.tls.is_tls() {
            true => Some(Arc::new(TlsClient::new(&job.url, &job.verify)?)),
            false => None,
        };
        let addrs = crate::retry::resolve(&job.url, job.timeouts.connect).await?;
        Ok(Conn {
            net: Network::new(job.network_wait, addrs.clone()),
            addrs,
            tls,
            creds: job.creds.clone(),
            timeouts: job.timeouts,
            use_pasv_address: job.use_pasv_address,
            active: job.active,
            learned: Mutex::new(None),
        })
    }

    /// A session for the start of a file: connected, probed; errors as at startup.
    pub(super) async fn first(&self, job: &PutJob) -> Result<Session, Error> {
        let mut s =
            Session::connect_with(&self.addrs, &self.creds, self.timeouts, self.tls.as_ref())
                .await
                .map_err(|e| {
                    Error::from_session(SessionContext::startup(&job.url, &job.creds), e)
                })?;
        s.set_use_pasv_address(self.use_pasv_address);
        s.set_active(self.active);
        s.probe()
            .await
            .map_err(|e| Error::from_session(SessionContext::startup(&job.url, &job.creds), e))?;
        *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = Some(Learned {
            rest: s.rest_support(),
            epsv: s.uses_epsv(),
        });
        Ok(s)
    }

    /// Another session, set up with what the first one learned.
    pub(super) async fn another(&self) -> Result<Session, SessionError> {
        // Without a way out, a connect would only wait for its timeout.
        if let (Err(source), Some(&addr)) = (self.net.route(), self.addrs.first()) {
            return Err(SessionError::Connect { addr, source });
        }
        let mut s =
            Session::connect_with(&self.addrs, &self.creds, self.timeouts, self.tls.as_ref())
                .await?;
        self.net.reached();
        s.set_use_pasv_address(self.use_pasv_address);
        s.set_active(self.active);
        let learned = *self.learned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = learned {
            s.set_rest_support(l.rest);
            s.set_epsv(l.epsv);
        }
        Ok(s)
    }
}

impl Conn {
    /// After a failed try (`e`): `None` when the network is there (the usual rules apply);
    /// otherwise the wait before the next try, which is not counted (`Failure::NoNetwork`,
    /// as for downloads), or the error once the network has been missing for
    /// `--network-wait` (exit 4).
    pub(super) fn network_wait_after(&self, e: &SessionError) -> Option<Result<Duration, Error>> {
        let kind = Failure::after_login(e);
        let no_network =
            kind == Failure::NoNetwork || (kind == Failure::Transient && self.net.route().is_err());
        if !no_network {
            if kind != Failure::Fatal {
                self.net.reached();
            }
            return None;
        }
        self.net.missed(&e.to_string());
        let host = self.addrs.first().map(|a| a.ip().to_string());
        Some(match self.net.gone() {
            Some(gone) => Err(gone.into_error(&host.unwrap_or_default(), self.net.wait_limit())),
            None => Ok(network::POLL),
        })
    }
}

/// The user-facing error for a failed upload step on `path` (the one mapping, in error.rs).
pub(super) fn upload_error(job: &PutJob, path: &str, e: SessionError) -> Error {
    Error::from_session(
        SessionContext::new(&job.url, &job.creds, Step::Upload { path }),
        e,
    )
}

/// The waits between tries of one connection: the download side's backoff, or for a busy
/// server a wait that starts at `--busy-retry` and doubles up to two minutes.
pub(super) struct Waits {
    busy_retry: Duration,
    busy: Duration,
}

impl Waits {
    pub(super) fn new(busy_retry: Duration) -> Waits {
        Waits {
            busy_retry,
            busy: busy_retry,
        }
    }

    /// The wait before try `tries + 1` after a failure classified as `kind`.
    pub(super) fn next(&mut self, kind: Failure, tries: u32) -> Duration {
        if kind == Failure::Busy {
            let w = self.busy;
            self.busy = retry::busy_wait_after(self.busy);
            w
        } else {
            retry::backoff(tries)
        }
    }

    /// A piece arrived: the next busy wait starts from `--busy-retry` again.
    pub(super) fn reset(&mut self) {
        self.busy = self.busy_retry;
    }
}

/// Removes a finished upload's manifest (absent is fine).
pub(super) fn remove_manifest(path: &Path) -> Result<(), Error> {
    crate::storage::remove_if_exists(path).map_err(|e| Error::io("cannot remove", path, e))
}
