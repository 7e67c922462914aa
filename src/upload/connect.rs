//! Sessions to the server for an upload, how a failed step is classified and retried, and the
//! user-facing error of a refused upload step.
//!
//! Every use of `crate::download` by upload/ is in this file (name resolution, the startup
//! error mapping, the backoff, removing a file), so they can be repointed in one place.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::PutJob;
use crate::download;
use crate::error::Error;
use crate::ftp::{Credentials, Session, SessionError, Timeouts, TlsClient, Verify};

/// The longest wait between tries after "too many connections".
const MAX_BUSY_WAIT: Duration = Duration::from_secs(120);

/// How to open sessions to the server, and what the first one learned.
pub(super) struct Conn {
    addrs: Vec<SocketAddr>,
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
        let addrs = download::resolve(&job.url, job.timeouts.connect).await?;
        Ok(Conn {
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
                .map_err(|e| download::startup_error(&job.url, &job.creds, e))?;
        s.set_use_pasv_address(self.use_pasv_address);
        s.set_active(self.active);
        s.probe()
            .await
            .map_err(|e| download::startup_error(&job.url, &job.creds, e))?;
        *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = Some(Learned {
            rest: s.rest_support(),
            epsv: s.uses_epsv(),
        });
        Ok(s)
    }

    /// Another session, set up with what the first one learned.
    pub(super) async fn another(&self) -> Result<Session, SessionError> {
        let mut s =
            Session::connect_with(&self.addrs, &self.creds, self.timeouts, self.tls.as_ref())
                .await?;
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

/// The user-facing error for a failed upload step on `path`.
pub(super) fn upload_error(job: &PutJob, path: &str, e: SessionError) -> Error {
    match e {
        SessionError::Reply {
            code: code @ (450 | 452 | 532 | 550 | 551 | 552 | 553),
            text,
            command,
        } if code >= 500 || !text.is_empty() => Error::UploadRefused {
            path: path.to_owned(),
            reply: format!("{command}: {text}"),
        },
        other => download::startup_error(&job.url, &job.creds, other),
    }
}

/// What to do after a failed step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Not worth another try.
    Fatal,
    /// Try again on a new session after a backoff.
    Transient,
    /// The server is busy ("too many connections"): try again after the busy wait.
    Busy,
}

impl Retry {
    /// Whether a failed step is worth another try on a new session, and whether the server
    /// said it is busy.
    pub(super) fn of(e: &SessionError) -> Retry {
        if e.is_busy() || e.code() == Some(530) {
            Retry::Busy
        } else if e.is_transient() {
            Retry::Transient
        } else {
            Retry::Fatal
        }
    }
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
    pub(super) fn next(&mut self, kind: Retry, tries: u32) -> Duration {
        if kind == Retry::Busy {
            let w = self.busy;
            self.busy = (self.busy * 2).min(MAX_BUSY_WAIT);
            w
        } else {
            backoff(tries)
        }
    }

    /// A piece arrived: the next busy wait starts from `--busy-retry` again.
    pub(super) fn reset(&mut self) {
        self.busy = self.busy_retry;
    }
}

/// The download side's backoff before try `tries + 1`.
pub(super) fn backoff(tries: u32) -> Duration {
    download::backoff(tries)
}

/// Removes a finished upload's manifest (absent is fine).
pub(super) fn remove_manifest(path: &Path) -> Result<(), Error> {
    download::remove_if_exists(path)
}
