//! Why a session step failed ([`SessionError`]), and how a suppaftp error or an unexpected
//! reply becomes one.

use std::net::SocketAddr;

use suppaftp::FtpError;

use crate::ftp::reply;
use crate::ftp::tls::TlsError;

/// Why a session step failed. `crate::retry::Failure` decides from this whether to try again.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0} timed out")]
    Timeout(String),
    /// The server answered `command` with a reply we cannot go on with.
    #[error("{command}: {text}")]
    Reply {
        command: String,
        code: u16,
        text: String,
    },
    /// A connection (control or data) failed: reset, closed, refused, ended early.
    #[error("connection lost during {command}: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
    /// Something we cannot go on with on any connection (e.g. no REST when we need it).
    #[error("{0}")]
    Protocol(String),
    /// The control channel is out of step (a reply that belongs to an earlier command, a reply
    /// that cannot be parsed): this session is finished, a new one may work.
    #[error("{0}")]
    Desync(String),
    /// The file is changing on the server (more bytes than SIZE announced).
    #[error("{0}")]
    Changed(String),
    /// TLS failed: AUTH TLS refused, certificate not trusted, handshake failed.
    #[error("{0}")]
    Tls(TlsError),
}

impl SessionError {
    /// The reply code, when the server sent one.
    pub fn code(&self) -> Option<u16> {
        match self {
            SessionError::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when trying again on a new session can help: timeouts, lost connections, an
    /// out-of-step control channel (including a 1xx-3xx reply where none was due), 4xx
    /// replies, and "too many connections/users" in whatever code the server chose (proftpd
    /// says it with 530).
    pub fn is_transient(&self) -> bool {
        match self {
            SessionError::Connect { .. }
            | SessionError::Timeout(_)
            | SessionError::Io { .. }
            | SessionError::Desync(_) => true,
            SessionError::Reply { code, .. } if *code < 500 => true,
            SessionError::Reply { .. } => self.is_busy(),
            SessionError::Protocol(_) | SessionError::Changed(_) => false,
            SessionError::Tls(e) => e.is_transient(),
        }
    }

    /// True when the server says it has too many connections or users (421, or a 530 whose text
    /// says so): a reason to use fewer connections, not a bad password.
    pub fn is_busy(&self) -> bool {
        match self {
            SessionError::Reply { code, text, .. } => {
                let t = text.to_ascii_lowercase();
                *code == 421
                    || ((*code == 530 || *code == 550)
                        && (t.contains("too many") || t.contains("maximum") || t.contains("limit")))
            }
            _ => false,
        }
    }

    pub(in crate::ftp) fn from_ftp(command: &str, e: FtpError) -> SessionError {
        match e {
            FtpError::UnexpectedResponse(r) => SessionError::from_reply(command, &r.body),
            FtpError::ConnectionError(source)
                if source
                    .get_ref()
                    .is_some_and(|inner| inner.is::<suppaftp::ReplyTooLarge>()) =>
            {
                // Out of step for this session (a new one may be fine); at startup the engine
                // reports it as a protocol error.
                SessionError::Desync(format!(
                    "{command}: the server sent a reply larger than 256 KiB"
                ))
            }
            FtpError::ConnectionError(source) => SessionError::Io {
                command: command.to_owned(),
                source,
            },
            other => SessionError::Desync(format!("{command}: {other}")),
        }
    }

    /// A reply we did not expect, with its code; code 0 when it has none in 100..=599
    /// (`999 what`). Such a reply is complete, so the channel is still in step: optional
    /// commands (FEAT, MDTM) ignore it, a worker retries on a new session, and at startup it
    /// is a protocol error.
    pub(in crate::ftp) fn from_reply(command: &str, body: &[u8]) -> SessionError {
        SessionError::Reply {
            command: command.to_owned(),
            code: reply::reply_code(body).unwrap_or(0),
            text: reply::reply_text(body),
        }
    }
}
