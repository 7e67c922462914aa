//! Errors that end a run, each with a one-line message and a documented exit code.
//!
//! Every failure the user can meet maps to one [`Error`] variant. The message says what was
//! wrong and what to do; [`Error::exit_code`] is the process exit status (the table is in the
//! README, "Exit codes"). Nothing here ever holds a password: URLs are stored redacted.
//!
//! A failed step on an FTP session ([`SessionError`]) becomes an [`Error`] in one place,
//! [`Error::from_session`]: what the reply means depends only on the step it answered
//! ([`Step`]). Whether the step is tried again first is [`crate::retry`]'s rule.

use std::path::{Path, PathBuf};

use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, SessionError};
use crate::storage::StorageError;

/// Exit codes, one per kind of failure. Keep in sync with README.md "Exit codes".
pub mod exit {
    /// The file was downloaded and verified.
    pub const OK: i32 = 0;
    /// An unexpected internal error (a bug: please report it).
    pub const INTERNAL: i32 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: i32 = 2;
    /// The URL, or the credentials for it, could not be used.
    pub const BAD_URL: i32 = 3;
    /// Host unknown, connection refused, or the network timed out.
    pub const NETWORK: i32 = 4;
    /// The server refused the login (530).
    pub const LOGIN: i32 = 5;
    /// The remote file does not exist or cannot be read (550).
    pub const NOT_FOUND: i32 = 6;
    /// The server kept refusing service (421, too many connections) or failed repeatedly.
    pub const SERVER: i32 = 7;
    /// The local disk cannot hold the file, or writing failed.
    pub const LOCAL_IO: i32 = 8;
    /// The output file exists already (use --force).
    pub const EXISTS: i32 = 9;
    /// The manifest is unreadable, damaged, or describes another file.
    pub const MANIFEST: i32 = 10;
    /// The remote file changed, or can no longer be resumed, since the download started
    /// (use --restart).
    pub const REMOTE_CHANGED: i32 = 11;
    /// The server broke the protocol (a reply or data that makes no sense), or refused a
    /// command we cannot do without (`PORT`/`EPRT` with `--active`).
    pub const PROTOCOL: i32 = 12;
    /// TLS failed: the server refused AUTH TLS, its certificate is not trusted, the handshake
    /// failed, or the TLS settings (`--ca-file`, the system's roots) cannot be used.
    pub const TLS: i32 = 13;
    /// `ftpseg put`: the uploaded copy does not match the local file (remote SIZE or the
    /// server's hash); it was kept under its temporary name, not renamed.
    pub const VERIFY: i32 = 14;
    /// A downloaded file does not match its expected checksum (`--checksum`,
    /// `--checksum-file`) or the server's own hash (`--verify-remote`); the file was kept.
    pub const CHECKSUM: i32 = 15;
    /// Interrupted by the user (Ctrl-C); progress was saved.
    pub const INTERRUPTED: i32 = 130;
}

/// A failure that ends the download. The Display text is the whole one-line message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Url(#[from] crate::ftp::url::UrlError),
    /// Options that contradict each other or the URL (clap cannot see the URL's scheme).
    #[error("{0}")]
    Usage(String),
    /// A Metalink file that cannot be used: its path and why.
    #[error("{}: {message}; fix it or get it again", file.display())]
    Metalink {
        file: std::path::PathBuf,
        message: String,
    },
    /// A config file that cannot be used: its path, the line (0: the file as a whole) and why.
    #[error("{}{}: {message}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Config {
        file: std::path::PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Tls(#[from] crate::ftp::TlsError),
    #[error("{0}")]
    Credentials(String),
    #[error("cannot resolve host '{host}': {detail}; check the host name and your network")]
    UnknownHost { host: String, detail: String },
    #[error("cannot connect to {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("timed out talking to {host}: {what}; the server or network is not answering")]
    Timeout { what: String, host: String },
    #[error("login refused by {host} for user '{user}': {reply}; check the user name and password")]
    Login {
        host: String,
        user: String,
        reply: String,
    },
    #[error(
        "login refused by {host} for user '{user}': {reply}; the server wants TLS: run again \
         with --ftps (or an ftpes:// URL)"
    )]
    LoginNeedsTls {
        host: String,
        user: String,
        reply: String,
    },
    #[error("remote file '{path}' is not available: {reply}; check the path in the URL")]
    NotFound { path: String, reply: String },
    #[error(
        "server {host} refused service: {reply}; try again later or with fewer connections (-n)"
    )]
    Refused { host: String, reply: String },
    #[error("server {host} sent an unexpected reply to {command}: {reply}")]
    Protocol {
        host: String,
        command: String,
        reply: String,
    },
    #[error("download failed after {tries} tries: {last}")]
    GaveUp { tries: u32, last: String },
    /// The network was missing for longer than `--network-wait`.
    #[error(
        "no network to {host} for {waited} (--network-wait {limit}): {why}; what was \
         downloaded is kept: run the same command again when the network is back"
    )]
    NetworkGone {
        host: String,
        waited: String,
        limit: String,
        why: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The `.part` or the output on the local disk: no space, a failed call, an output that is
    /// there already (the messages are `storage::StorageError`'s).
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Manifest(#[from] crate::storage::manifest::ManifestError),
    #[error(
        "{detail}; the partial download {} was kept. Run with --restart to download the new file from scratch",
        .part.display()
    )]
    RemoteChanged { detail: String, part: PathBuf },
    /// The server's file is not the one asked for (its size is not a Metalink's).
    #[error("{0}; nothing was downloaded: check the Metalink, or give another first URL")]
    NotTheFile(String),
    #[error(
        "the server does not accept REST any more, so the partial download {} ({done} done) \
         cannot be resumed; it was kept. Run with --restart to download the file from scratch",
        .part.display()
    )]
    CannotResume { part: PathBuf, done: String },
    #[error("remote file {0} exists already; use --force to replace it")]
    RemoteExists(String),
    #[error("cannot write {path} on the server: {reply}; check the path and your permissions")]
    UploadRefused { path: String, reply: String },
    #[error("upload manifest {}: {why}", .path.display())]
    UploadManifest { path: PathBuf, why: String },
    #[error(
        "{} changed since the upload started: {detail}; run with --restart to upload it from scratch",
        .local.display()
    )]
    LocalChanged { local: PathBuf, detail: String },
    #[error(
        "upload verification failed: {detail}; the uploaded copy was kept as {temp} and not \
         renamed. Run again with --restart to upload the file again"
    )]
    VerifyFailed { detail: String, temp: String },
    #[error(
        "checksum mismatch for {}: {detail}; the downloaded file was kept (not marked complete): \
         check the source, then delete it or run again with --force to fetch it again",
        .path.display()
    )]
    ChecksumMismatch { path: PathBuf, detail: String },
    #[error("{failed} of {total} file(s) failed (listed above)")]
    BatchFailed {
        failed: usize,
        total: usize,
        code: i32,
    },
    #[error("interrupted; progress is saved in {}: run the same command again to resume", .0.display())]
    Interrupted(PathBuf),
    /// Ctrl-C during a download whose bytes were discarded (`ftpseg bench --discard`).
    #[error("interrupted; nothing was kept (the bytes were being discarded)")]
    InterruptedDiscarding,
    /// Another error whose message had to be cleaned of a password; keeps its exit code.
    #[error("{message}")]
    Redacted { message: String, code: i32 },
    #[error("internal error: {0} (this is a bug in ftpseg; please report it)")]
    Internal(String),
}

impl Error {
    /// An error whose message contains the password (a server that echoes it back in a reply,
    /// say) is rewritten with the password replaced: passwords never reach the terminal.
    pub fn scrub(self, password: &str) -> Error {
        let e = self;
        let message = e.to_string();
        if password.is_empty() || !message.contains(password) {
            return e;
        }
        Error::Redacted {
            message: message.replace(password, "<password>"),
            code: e.exit_code(),
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Url(_) | Error::Credentials(_) | Error::Metalink { .. } => exit::BAD_URL,
            Error::Usage(_) | Error::Config { .. } => exit::USAGE,
            Error::Tls(_) => exit::TLS,
            Error::UnknownHost { .. }
            | Error::Connect { .. }
            | Error::Timeout { .. }
            | Error::NetworkGone { .. } => exit::NETWORK,
            Error::Login { .. } | Error::LoginNeedsTls { .. } => exit::LOGIN,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::Refused { .. } | Error::GaveUp { .. } => exit::SERVER,
            Error::Protocol { .. } => exit::PROTOCOL,
            Error::Io { .. } => exit::LOCAL_IO,
            Error::Storage(StorageError::Exists(_)) | Error::RemoteExists(_) => exit::EXISTS,
            Error::Storage(_) => exit::LOCAL_IO,
            Error::UploadRefused { .. } => exit::NOT_FOUND,
            Error::UploadManifest { .. } | Error::LocalChanged { .. } => exit::MANIFEST,
            Error::VerifyFailed { .. } => exit::VERIFY,
            Error::ChecksumMismatch { .. } => exit::CHECKSUM,
            Error::BatchFailed { code, .. } => *code,
            Error::Manifest(
                crate::storage::manifest::ManifestError::Io { .. }
                | crate::storage::manifest::ManifestError::RefusedSave { .. },
            ) => exit::LOCAL_IO,
            Error::Manifest(_) => exit::MANIFEST,
            Error::RemoteChanged { .. } | Error::CannotResume { .. } | Error::NotTheFile(_) => {
                exit::REMOTE_CHANGED
            }
            Error::Interrupted(_) | Error::InterruptedDiscarding => exit::INTERRUPTED,
            Error::Redacted { code, .. } => *code,
            Error::Internal(_) => exit::INTERNAL,
        }
    }

    /// Shorthand for a local I/O failure on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What a session was doing when it failed: decides which [`Error`] its failure becomes.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    /// Connecting, logging in, probing, asking about the server (before any data).
    Startup,
    /// Asking about the file itself or starting its transfer at startup (`SIZE`, `RETR`):
    /// a 550 means the file is not there, whatever its text says.
    File,
    /// A ranged transfer of a download's worker, on a session opened after the first login
    /// worked. `host`: the address connected to; `part`: the download's `.part`.
    Range { host: &'a str, part: &'a Path },
    /// The single stream of a file without a size, not retried; `rest`: whether a rerun can
    /// resume it.
    Stream { rest: bool },
    /// An upload step on the remote `path` (`STOR`, `APPE`, `MKD`, ...).
    Upload { path: &'a str },
}

/// A session failure's circumstances: the URL and user it was for, and the step that failed.
#[derive(Clone, Copy, Debug)]
pub struct SessionContext<'a> {
    pub url: &'a FtpUrl,
    pub creds: &'a Credentials,
    pub step: Step<'a>,
}

impl<'a> SessionContext<'a> {
    /// A failure before any data: connect, login, probe ([`Step::Startup`]).
    pub fn startup(url: &'a FtpUrl, creds: &'a Credentials) -> Self {
        SessionContext {
            url,
            creds,
            step: Step::Startup,
        }
    }

    /// A failure of `step` for `url`.
    pub fn new(url: &'a FtpUrl, creds: &'a Credentials, step: Step<'a>) -> Self {
        SessionContext { url, creds, step }
    }
}

impl Error {
    /// The one mapping from a failed session step to the user-facing error (and so its exit
    /// code).
    pub fn from_session(ctx: SessionContext<'_>, e: SessionError) -> Error {
        match ctx.step {
            Step::Startup => startup_error(ctx, e),
            Step::File => match e {
                SessionError::Reply {
                    code: 550, text, ..
                } => Error::NotFound {
                    path: ctx.url.path.clone(),
                    reply: text,
                },
                other => startup_error(ctx, other),
            },
            Step::Range { host, part } => range_error(ctx, host, part, e),
            Step::Stream { rest } if e.is_transient() => {
                let next = if rest {
                    "run the same command again to resume"
                } else {
                    "the server does not support REST, so a new run starts over"
                };
                Error::GaveUp {
                    tries: 1,
                    last: format!("{e}; {next}"),
                }
            }
            Step::Stream { .. } => Error::from_session(
                SessionContext {
                    step: Step::File,
                    ..ctx
                },
                e,
            ),
            Step::Upload { path } => match e {
                SessionError::Reply {
                    code: code @ (450 | 452 | 532 | 550 | 551 | 552 | 553),
                    text,
                    command,
                } if code >= 500 || !text.is_empty() => Error::UploadRefused {
                    path: path.to_owned(),
                    reply: format!("{command}: {text}"),
                },
                other => startup_error(ctx, other),
            },
        }
    }
}

/// A failure of the first session of a run (before any data).
fn startup_error(ctx: SessionContext<'_>, e: SessionError) -> Error {
    let (url, creds) = (ctx.url, ctx.creds);
    let host = url.host_for_connect();
    match e {
        SessionError::Connect { addr, source } => Error::Connect {
            addr: addr.to_string(),
            detail: source.to_string(),
        },
        SessionError::Timeout(what) => Error::Timeout { what, host },
        ref r @ SessionError::Reply { .. } if r.is_busy() => Error::Refused {
            host,
            reply: r.to_string(),
        },
        SessionError::Reply {
            code: code @ (530 | 534 | 550),
            command,
            text,
        } if !url.tls.is_tls() && command == "login" && (code == 534 || asks_for_tls(&text)) => {
            Error::LoginNeedsTls {
                host,
                user: creds.user.clone(),
                reply: text,
            }
        }
        SessionError::Reply {
            code: 530, text, ..
        } => Error::Login {
            host,
            user: creds.user.clone(),
            reply: text,
        },
        SessionError::Reply {
            command,
            code: 550,
            text,
        } if command != "login" => Error::NotFound {
            path: url.path.clone(),
            reply: text,
        },
        SessionError::Reply {
            command,
            code: 0,
            text,
        } => Error::Protocol {
            host,
            command,
            reply: format!("{text} (no valid reply code)"),
        },
        SessionError::Reply {
            command,
            code,
            text,
            ..
        } if code < 500 => Error::Refused {
            host,
            reply: format!("{command}: {text}"),
        },
        SessionError::Reply { command, text, .. } => Error::Protocol {
            host,
            command,
            reply: text,
        },
        SessionError::Io { command, source } => Error::Connect {
            addr: host,
            detail: format!("connection lost during {command}: {source}"),
        },
        SessionError::Protocol(p) | SessionError::Desync(p) | SessionError::Changed(p) => {
            Error::Protocol {
                host,
                command: "probe".into(),
                reply: p,
            }
        }
        SessionError::Tls(e) => Error::Tls(e),
    }
}

/// A login refusal that says the server wants TLS first: vsftpd answers "530 Anonymous sessions
/// must use encryption.", libunftp "534 A TLS connection is required on the control channel"
/// (534 is RFC 2228's "denied for policy reasons"), proftpd's mod_tls is documented to answer
/// "550 SSL/TLS required on the control channel".
fn asks_for_tls(reply: &str) -> bool {
    let r = reply.to_ascii_lowercase();
    ["encrypt", "tls", "ssl"].iter().any(|w| r.contains(w))
}

/// A ranged transfer's failure that is not retried (or no longer): the first login worked, so
/// a 530 is a refused login; a file that went away is not found; a changing file is reported
/// with the `.part` kept.
fn range_error(ctx: SessionContext<'_>, host: &str, part: &Path, e: SessionError) -> Error {
    let host = host.to_owned();
    match e {
        SessionError::Reply {
            code: 530, text, ..
        } => Error::Login {
            host,
            user: ctx.creds.user.clone(),
            reply: text,
        },
        SessionError::Reply {
            code: 550 | 551 | 553,
            text,
            ..
        } => Error::NotFound {
            path: ctx.url.path.clone(),
            reply: text,
        },
        SessionError::Reply { command, text, .. } => Error::Protocol {
            host,
            command,
            reply: text,
        },
        SessionError::Changed(detail) => Error::RemoteChanged {
            detail,
            part: part.to_owned(),
        },
        SessionError::Tls(e) => Error::Tls(e),
        other => Error::Protocol {
            host,
            command: "RETR".into(),
            reply: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(crate::ui::human_bytes(0), "0 B");
        assert_eq!(crate::ui::human_bytes(1023), "1023 B");
        assert_eq!(crate::ui::human_bytes(1024), "1.00 KiB");
        assert_eq!(crate::ui::human_bytes(3 << 29), "1.50 GiB");
    }

    #[test]
    fn exit_codes_are_distinct_per_kind() {
        let e = Error::Storage(StorageError::Exists(PathBuf::from("a")));
        assert_eq!(e.exit_code(), exit::EXISTS);
        assert_eq!(
            e.to_string(),
            "a exists already; use --force to overwrite it"
        );
        let e = Error::Interrupted(PathBuf::from("a.ftpseg"));
        assert_eq!(e.exit_code(), 130);
        let e = Error::Tls(crate::ftp::TlsError::Setup("x".into()));
        assert_eq!(e.exit_code(), 13);
    }

    fn reply(command: &str, code: u16, text: &str) -> SessionError {
        SessionError::Reply {
            command: command.into(),
            code,
            text: text.into(),
        }
    }

    #[test]
    fn one_mapping_from_session_failures() {
        let url = FtpUrl::parse("ftp://h.example/dir/f").unwrap();
        let creds = Credentials {
            user: "u".into(),
            password: "p".into(),
        };
        let ctx = |step| SessionContext::new(&url, &creds, step);
        let code = |step, e| Error::from_session(ctx(step), e).exit_code();
        let part = Path::new("f.part");
        let range = Step::Range {
            host: "127.0.0.1",
            part,
        };
        assert_eq!(code(Step::Startup, reply("login", 530, "no")), exit::LOGIN);
        assert_eq!(
            code(Step::Startup, reply("SIZE f", 421, "busy")),
            exit::SERVER
        );
        assert_eq!(
            code(Step::Startup, reply("login", 530, "must use encryption")),
            exit::LOGIN
        );
        // A busy 550 at startup is a refusal; asking for the file, it is "not found".
        let busy550 = || reply("SIZE f", 550, "too many users");
        assert_eq!(code(Step::Startup, busy550()), exit::SERVER);
        assert_eq!(code(Step::File, busy550()), exit::NOT_FOUND);
        assert_eq!(code(range, reply("RETR f", 553, "gone")), exit::NOT_FOUND);
        assert_eq!(code(range, reply("RETR f", 530, "no")), exit::LOGIN);
        assert_eq!(
            code(range, SessionError::Changed("bigger".into())),
            exit::REMOTE_CHANGED
        );
        assert_eq!(
            code(
                Step::Stream { rest: true },
                SessionError::Timeout("x".into())
            ),
            exit::SERVER
        );
        assert_eq!(
            code(Step::Stream { rest: true }, reply("RETR f", 550, "x")),
            exit::NOT_FOUND
        );
        assert_eq!(
            code(Step::Upload { path: "f" }, reply("STOR f", 553, "no")),
            exit::NOT_FOUND
        );
        assert_eq!(
            code(Step::Upload { path: "f" }, reply("STOR f", 452, "")),
            exit::SERVER
        );
    }
}
