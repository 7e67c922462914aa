//! Sending bytes: the state shared by the connections of one file's upload, why sending
//! stopped, and one range of the file sent on one session (the step both the single stream
//! and the parallel pieces are made of).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::PutJob;
use super::connect::{Conn, upload_error};
use super::local::blocking;
use crate::error::Error;
use crate::ftp::upload::Store;
use crate::ftp::{Session, SessionError};
use crate::ui::progress::Progress;

/// Bytes read from the local file and written to the data connection at a time.
const IO_BUF: usize = 256 << 10;
/// How often the progress display is redrawn.
pub(super) const TICK: Duration = Duration::from_millis(200);

/// State shared by the connections of one file's upload.
pub(super) struct Upload {
    pub(super) file: Arc<File>,
    /// The remote path written.
    pub(super) target: String,
    pub(super) size: u64,
    pub(super) max_tries: u32,
    pub(super) busy_retry: Duration,
    /// Bytes written to data connections in this run.
    pub(super) sent: AtomicU64,
    /// A connection failed for good: the others stop taking pieces.
    pub(super) failed: AtomicBool,
}

/// Why sending stopped.
pub(super) enum SendError {
    Session(SessionError),
    GaveUp { tries: u32, last: String },
    Interrupted,
    Local(Error),
}

impl SendError {
    /// The user-facing error.
    pub(super) fn into_error(self, job: &PutJob, path: &str, manifest: &Path) -> Error {
        match self {
            SendError::Session(e) => upload_error(job, path, e),
            SendError::GaveUp { tries, last } => Error::GaveUp { tries, last },
            SendError::Interrupted => Error::Interrupted(manifest.to_owned()),
            SendError::Local(e) => e,
        }
    }
}

/// Sends `[from, to)` of the file on `s`: `STOR` at `from` (or `APPE`), every byte, then the
/// server's `226`. `pos` follows the bytes written.
pub(super) async fn send_range(
    up: &Upload,
    s: &mut Session,
    how: Store,
    from: u64,
    to: u64,
    pos: &AtomicU64,
) -> Result<(), SendError> {
    let command = match how {
        Store::Stor => "STOR",
        Store::Appe => "APPE",
    };
    let mut stream = s
        .open_upload(how, &up.target, from)
        .await
        .map_err(SendError::Session)?;
    let mut buf = vec![0u8; IO_BUF];
    let mut at = from;
    while at < to {
        let n = IO_BUF.min((to - at) as usize);
        let file = up.file.clone();
        let (b, read) = blocking(move || {
            let r = file.read_exact_at(&mut buf[..n], at);
            (buf, r)
        })
        .await
        .map_err(SendError::Local)?;
        buf = b;
        read.map_err(|e| {
            SendError::Local(Error::io("cannot read", PathBuf::from("the local file"), e))
        })?;
        s.write_data(&mut stream, &buf[..n])
            .await
            .map_err(SendError::Session)?;
        at += n as u64;
        up.sent.fetch_add(n as u64, Ordering::Relaxed);
        pos.store(at, Ordering::Relaxed);
    }
    s.end_upload(stream, command)
        .await
        .map_err(SendError::Session)
}

/// What a sending step works with: the upload, how to open sessions, the progress display,
/// and the stop signal (Ctrl-C).
pub(super) struct Sender<'a> {
    pub(super) up: &'a Arc<Upload>,
    pub(super) conn: &'a Arc<Conn>,
    pub(super) progress: &'a mut Progress,
    pub(super) stop: &'a mut watch::Receiver<bool>,
}
