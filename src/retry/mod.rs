//! When to try again: the one classification of a session failure (no network, transient,
//! busy, fatal), the waits between tries, and the name lookup every command starts with.
//! [`network`]: the wait for a missing network (`--network-wait`); [`clock`]: whether the
//! machine slept.
//!
//! Downloads, uploads and batches all retry by these rules; which exit code a failure that is
//! not retried becomes is decided in [`crate::error`] (`Error::from_session`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Error;
use crate::ftp::SessionError;
use crate::ftp::url::FtpUrl;

pub mod clock;
pub mod network;

/// What a failed step on a session means for the next try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// This machine has no network to the server ([`network::means_no_network`]): not the
    /// server's fault, not counted towards `--max-tries`; wait for the network.
    NoNetwork,
    /// Trying again on a new session can help (timeouts, lost connections, 4xx replies).
    Transient,
    /// The server has too many connections or users: use fewer, or wait
    /// ([`busy_wait_after`]).
    Busy,
    /// Trying again cannot help: the step fails for good.
    Fatal,
}

impl Failure {
    /// Classifies a failure on a session opened after a first login with the same credentials
    /// worked: a 530 then means "too many users" however the server words it.
    pub fn after_login(e: &SessionError) -> Failure {
        if network::means_no_network(e) {
            Failure::NoNetwork
        } else if e.is_busy() || e.code() == Some(530) {
            Failure::Busy
        } else if e.is_transient() {
            Failure::Transient
        } else {
            Failure::Fatal
        }
    }
}

/// Exponential backoff with jitter: about 0.5 s, 1 s, 2 s ... capped at 30 s, each scaled by a
/// random factor in [0.5, 1.5) so that connections do not retry in lockstep.
pub fn backoff(tries: u32) -> Duration {
    let base = 0.5 * 2f64.powi(tries.saturating_sub(1).min(6) as i32);
    let jitter = 0.5 + rand::random::<f64>();
    Duration::from_secs_f64((base * jitter).min(30.0))
}

/// Longest wait before a connection refused as "too many" tries to come back.
pub const BUSY_RETRY_MAX: Duration = Duration::from_secs(120);

/// The wait after `wait` for a connection the server keeps refusing as busy: doubled, at most
/// [`BUSY_RETRY_MAX`].
pub fn busy_wait_after(wait: Duration) -> Duration {
    (wait * 2).min(BUSY_RETRY_MAX)
}

/// Resolves the URL's host to socket addresses, within the connect timeout.
pub async fn resolve(url: &FtpUrl, limit: Duration) -> Result<Vec<SocketAddr>, Error> {
    let host = url.host_for_connect();
    let lookup = tokio::net::lookup_host((host.clone(), url.port));
    match tokio::time::timeout(limit, lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(Error::UnknownHost {
                    host,
                    detail: "no address found".into(),
                })
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(Error::UnknownHost {
            host,
            detail: e.to_string(),
        }),
        Err(_) => Err(Error::Timeout {
            what: format!("name lookup (no answer within {} s)", limit.as_secs_f64()),
            host,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> SessionError {
        SessionError::Reply {
            command: "RETR f".into(),
            code,
            text: text.into(),
        }
    }

    #[test]
    fn classifies_busy_transient_and_fatal() {
        assert_eq!(Failure::after_login(&reply(421, "bye")), Failure::Busy);
        assert_eq!(Failure::after_login(&reply(530, "no")), Failure::Busy);
        assert_eq!(
            Failure::after_login(&reply(550, "too many users")),
            Failure::Busy
        );
        assert_eq!(
            Failure::after_login(&reply(425, "no data")),
            Failure::Transient
        );
        assert_eq!(Failure::after_login(&reply(550, "no file")), Failure::Fatal);
        assert_eq!(
            Failure::after_login(&SessionError::Changed("x".into())),
            Failure::Fatal
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for tries in 0..20 {
            let w = backoff(tries).as_secs_f64();
            assert!((0.25..=30.0).contains(&w), "{tries}: {w}");
        }
        assert_eq!(busy_wait_after(Duration::from_secs(100)), BUSY_RETRY_MAX);
        assert_eq!(
            busy_wait_after(Duration::from_secs(3)),
            Duration::from_secs(6)
        );
    }
}
