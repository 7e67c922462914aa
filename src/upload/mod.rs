//! `ftpseg put`: resumable, atomic, verified uploads (docs/upload.md).
//!
//! One file goes up like this:
//! 1. Connect and probe as downloads do. Refuse a remote final name that exists (`--force`
//!    replaces it). Load the upload manifest `<local>.ftpseg-put` if there is one.
//! 2. Resume or start: a single stream resumes from the remote `SIZE` of the temporary name
//!    (what actually arrived), after checking the local bytes below it still hash as recorded;
//!    parallel pieces resume from the manifest's acknowledged pieces (a piece counts only once
//!    its `STOR` got `226`). A fresh upload hashes the local file (BLAKE3 per chunk), decides
//!    single or parallel (parallel only where a probe on a scratch file proved that `REST n` +
//!    `STOR` writes in place, also past the end, without truncating), and saves the manifest
//!    before the first byte is sent.
//! 3. Send: one stream (`REST n` + `STOR`, or `APPE` where REST+STOR is refused), or N
//!    connections taking pieces from a queue. Failures reconnect with backoff, as downloads do.
//! 4. Verify: remote `SIZE` equals the local size, and the server's hash (`HASH`, `XSHA256`,
//!    `XMD5`, `SITE MD5`) equals ours where the server offers one. A mismatch keeps the
//!    temporary file and fails.
//! 5. `RNFR`/`RNTO` to the final name (not with `--no-temp`), remove the manifest.
//!
//! The pure parts (names, piece plan, resume decisions, the manifest) are separate from the
//! I/O and unit tested.

use std::collections::VecDeque;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::{Error, SessionContext, Step};
use crate::ftp::upload::{HashAlgo, HashCommand, RemoteHash, Store, hash_commands};
use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, Session, SessionError, Timeouts, TlsClient, Verify};
use crate::integrity::verify;
use crate::ui::human_bytes;
use crate::ui::progress::{ConnState, ConnView, Progress, View};

/// `format` of an upload manifest.
pub const MANIFEST_FORMAT: &str = "ftpseg-upload";
/// Version of the upload manifest format written by this ftpseg.
pub const MANIFEST_VERSION: u32 = 1;
/// Appended to the remote name while uploading (`--temp-suffix` changes it).
pub const DEFAULT_TEMP_SUFFIX: &str = ".ftpseg-part";
/// Appended to the local file's name for its upload manifest.
pub const MANIFEST_SUFFIX: &str = ".ftpseg-put";
/// Appended to the remote name for the parallel-upload probe's scratch file.
pub const PROBE_SUFFIX: &str = ".ftpseg-probe";
/// Smallest and largest parallel piece (one `STOR` each).
pub const MIN_PIECE: u64 = 1 << 20;
pub const MAX_PIECE: u64 = 64 << 20;
/// Bytes read from the local file and written to the data connection at a time.
const IO_BUF: usize = 256 << 10;
/// Size of each of the probe's three blocks.
const PROBE_BLOCK: usize = 4096;
/// How often the progress display is redrawn.
const TICK: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Pure parts

/// The upload manifest's path for a local file: `<local>.ftpseg-put`, beside it.
pub fn manifest_path(local: &Path) -> PathBuf {
    let mut s = local.as_os_str().to_owned();
    s.push(MANIFEST_SUFFIX);
    PathBuf::from(s)
}

/// The remote name written while uploading: the final name plus `suffix`, or the final name
/// itself (`--no-temp`, `suffix` None).
pub fn temp_name(final_path: &str, suffix: Option<&str>) -> String {
    match suffix {
        Some(s) => format!("{final_path}{s}"),
        None => final_path.to_owned(),
    }
}

/// `dir/name` for a remote folder path (empty: the login folder).
pub fn remote_join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// One `STOR` of a parallel upload: the bytes `[start, end)`, and whether the server confirmed
/// them with `226`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
    pub acked: bool,
}

/// The size of the pieces of a parallel upload: about four per connection, at least
/// [`MIN_PIECE`], at most [`MAX_PIECE`] (a lost piece is sent again whole).
pub fn piece_size(size: u64, connections: usize) -> u64 {
    (size / (connections.max(1) as u64 * 4)).clamp(MIN_PIECE, MAX_PIECE)
}

/// Cuts `[0, size)` into consecutive pieces of `piece` bytes (the last one shorter).
pub fn plan_pieces(size: u64, piece: u64) -> Vec<Piece> {
    let piece = piece.max(1);
    (0..size.div_ceil(piece))
        .map(|k| Piece {
            start: k * piece,
            end: ((k + 1) * piece).min(size),
            acked: false,
        })
        .collect()
}

/// Whether a parallel upload is worth probing for: more than one connection asked for and at
/// least two pieces.
pub fn wants_parallel(size: u64, connections: usize) -> bool {
    connections > 1 && size >= 2 * MIN_PIECE
}

/// Where a single-stream upload goes on, from the remote size of the file being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SingleResume {
    /// Nothing there: from byte 0.
    Fresh,
    /// Go on from this offset (the remote size).
    From(u64),
    /// The remote file is larger than the local one: it is not (only) ours.
    TooLarge(u64),
}

/// The resume decision of a single stream: the remote size is the truth of what arrived
/// (the server wrote a prefix of what we sent), as long as it is not larger than the file.
pub fn single_resume(remote_size: Option<u64>, local_size: u64) -> SingleResume {
    match remote_size {
        None | Some(0) => SingleResume::Fresh,
        Some(n) if n > local_size => SingleResume::TooLarge(n),
        Some(n) => SingleResume::From(n),
    }
}

/// The chunks (indexes) whose bytes overlap `[from, to)`.
pub fn chunks_overlapping(from: u64, to: u64, chunk_size: u64) -> std::ops::Range<u64> {
    if to <= from {
        return 0..0;
    }
    from / chunk_size..to.div_ceil(chunk_size)
}

/// The probe's bytes: three blocks that differ from each other and from zeros.
pub fn probe_bytes() -> Vec<u8> {
    (0..3 * PROBE_BLOCK)
        .map(|i| ((i * 7 + i / PROBE_BLOCK * 101 + 13) % 251) as u8 + 1)
        .collect()
}

/// How the pieces of a file are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadMode {
    /// One stream; the remote size tells how far it got.
    Single,
    /// Pieces on several connections; the manifest's `acked` tells which arrived.
    Parallel,
}

/// The on-disk record of an unfinished upload (`<local>.ftpseg-put`, JSON, written atomically).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadManifest {
    pub format: String,
    pub version: u32,
    /// The final remote URL (password never stored).
    pub url: String,
    /// The remote path being written (the temporary name, or the final one with `--no-temp`).
    pub remote_path: String,
    /// The local file when the upload started: size, modification time (ns since the epoch).
    pub local_size: u64,
    pub local_mtime_ns: u64,
    /// BLAKE3 chaining value (hex) of each `chunk_size` chunk of the local file.
    pub chunk_size: u64,
    pub chunks: Vec<String>,
    pub mode: UploadMode,
    /// Parallel mode: every piece, in order, with its acknowledgement.
    #[serde(default)]
    pub pieces: Vec<Piece>,
}

impl UploadManifest {
    /// Checks what a hand edit or a damaged file could break.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!("not an upload manifest (format {:?})", self.format));
        }
        if self.version != MANIFEST_VERSION {
            return Err(format!(
                "upload manifest version {} is not supported (this ftpseg reads version {})",
                self.version, MANIFEST_VERSION
            ));
        }
        if self.chunk_size == 0 || !self.chunk_size.is_power_of_two() {
            return Err("bad chunk size".into());
        }
        if self.chunks.len() as u64 != self.local_size.div_ceil(self.chunk_size) {
            return Err("chunk count does not match the file size".into());
        }
        if self.chunks.iter().any(|c| verify::from_hex(c).is_none()) {
            return Err("a chunk hash is malformed".into());
        }
        if self.mode == UploadMode::Parallel {
            let mut at = 0;
            for p in &self.pieces {
                if p.start != at || p.end <= p.start {
                    return Err("pieces do not tile the file".into());
                }
                at = p.end;
            }
            if at != self.local_size {
                return Err("pieces do not cover the file".into());
            }
            // Piece 0 (the one that creates the file) is always acknowledged before any other
            // piece starts.
            if self.pieces.iter().skip(1).any(|p| p.acked) && !self.pieces[0].acked {
                return Err("a piece is acknowledged before the first one".into());
            }
        }
        Ok(())
    }

    /// Bytes the server confirmed (parallel mode).
    pub fn acked_bytes(&self) -> u64 {
        self.pieces
            .iter()
            .filter(|p| p.acked)
            .map(|p| p.end - p.start)
            .sum()
    }

    /// Reads the manifest at `path`; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<UploadManifest>, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        let m: UploadManifest = serde_json::from_str(&text)
            .map_err(|e| e.to_string())
            .and_then(|m: UploadManifest| m.validate().map(|()| m))
            .map_err(|why| Error::UploadManifest {
                path: path.to_owned(),
                why,
            })?;
        Ok(Some(m))
    }

    /// Writes the manifest atomically: a temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Internal(format!("upload manifest: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            crate::storage::sync_parent(path)
        };
        write().map_err(|e| Error::io("cannot save the upload manifest", path, e))
    }
}

// ---------------------------------------------------------------------------------------------
// The job

/// What one `ftpseg put` run is asked to do.
#[derive(Clone, Debug)]
pub struct PutJob {
    /// The server, login, and the remote path: a file, or a folder when `into_dir`.
    pub url: FtpUrl,
    pub creds: Credentials,
    /// Local files (or folders with `recursive`).
    pub locals: Vec<PathBuf>,
    /// The URL's path is a folder: each file goes into it under its own name.
    pub into_dir: bool,
    pub recursive: bool,
    pub connections: usize,
    pub timeouts: Timeouts,
    pub max_tries: u32,
    pub force: bool,
    pub restart: bool,
    /// `None`: `--no-temp`, write the final name directly.
    pub temp_suffix: Option<String>,
    pub use_pasv_address: bool,
    /// Active mode (`--active`): the server connects to us for data.
    pub active: bool,
    pub verify: Verify,
    pub busy_retry: Duration,
}

/// What one uploaded file reports.
#[derive(Clone, Debug)]
pub struct PutOutcome {
    pub local: PathBuf,
    pub remote: String,
    pub size: u64,
    /// Bytes sent in this run (a piece sent twice counts twice).
    pub sent: u64,
    /// Bytes already on the server from an earlier run.
    pub resumed: u64,
    pub connections: usize,
    pub parallel: bool,
    /// How the remote copy was checked: "SIZE", or "SIZE and XSHA256" ...
    pub verified_by: String,
    pub elapsed: Duration,
}

impl PutOutcome {
    /// One line for the user.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let resumed = if self.resumed > 0 {
            format!(
                ", {} resumed from an earlier run",
                human_bytes(self.resumed)
            )
        } else {
            String::new()
        };
        format!(
            "uploaded {} to {} ({}) in {:.2} s, {}/s over {} connection(s){}; sent {} bytes; \
             verified by {}",
            self.local.display(),
            self.remote,
            human_bytes(self.size),
            secs,
            human_bytes((self.sent as f64 / secs) as u64),
            self.connections,
            resumed,
            self.sent,
            self.verified_by
        )
    }
}

/// The files to upload, each with its remote path: one file to the URL's path, or each file
/// (and, with `-r`, each folder's files, keeping their relative paths) into the URL's folder.
/// Upload manifests (`*.ftpseg-put`) are never uploaded.
pub fn files_to_upload(job: &PutJob) -> Result<Vec<(PathBuf, String)>, Error> {
    let mut out = Vec::new();
    for local in &job.locals {
        let meta =
            std::fs::metadata(local).map_err(|e| Error::io("cannot read", local.clone(), e))?;
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::Usage(format!("{} has no file name to upload", local.display()))
            })?;
        if meta.is_dir() {
            if !job.recursive {
                return Err(Error::Usage(format!(
                    "{} is a folder; use -r to upload it with everything in it",
                    local.display()
                )));
            }
            let base = remote_join(&job.url.path, &name);
            walk(local, &base, &mut out)?;
        } else if job.into_dir {
            out.push((local.clone(), remote_join(&job.url.path, &name)));
        } else {
            out.push((local.clone(), job.url.path.clone()));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, remote: &str, out: &mut Vec<(PathBuf, String)>) -> Result<(), Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("cannot list", dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io("cannot list", dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let kind = e
            .file_type()
            .map_err(|err| Error::io("cannot read", &path, err))?;
        if kind.is_dir() {
            walk(&path, &remote_join(remote, &name), out)?;
        } else if kind.is_file()
            && !name.ends_with(MANIFEST_SUFFIX)
            && !name.ends_with(&format!("{MANIFEST_SUFFIX}.tmp"))
        {
            out.push((path, remote_join(remote, &name)));
        }
    }
    Ok(())
}

/// Uploads every file of the job, one after another. `stop` turning true (Ctrl-C) ends the
/// run with [`Error::Interrupted`]; the manifest keeps what is needed to resume.
pub async fn put(
    job: &PutJob,
    progress: &mut Progress,
    stop: watch::Receiver<bool>,
) -> Result<Vec<PutOutcome>, Error> {
    let files = files_to_upload(job)?;
    if files.is_empty() {
        return Err(Error::Usage("nothing to upload (no files found)".into()));
    }
    if job.url.tls.is_tls() && job.verify == Verify::Insecure {
        eprintln!("ftpseg: warning: certificate verification is off (--insecure)");
    }
    let tls = match job.url.tls.is_tls() {
        true => Some(Arc::new(TlsClient::new(&job.url, &job.verify)?)),
        false => None,
    };
    let addrs = crate::retry::resolve(&job.url, job.timeouts.connect).await?;
    let conn = Arc::new(Conn {
        addrs,
        tls,
        creds: job.creds.clone(),
        timeouts: job.timeouts,
        use_pasv_address: job.use_pasv_address,
        active: job.active,
        learned: Mutex::new(None),
    });
    let mut made_dirs: Vec<String> = Vec::new();
    let mut outcomes = Vec::new();
    for (local, remote) in files {
        if job.recursive || job.into_dir {
            make_parents(&conn, job, &remote, &mut made_dirs).await?;
        }
        let outcome = put_file(job, &conn, &local, &remote, progress, stop.clone()).await?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Creates the remote folders above `remote` (with `-r`), each once; a folder that exists
/// already is fine.
async fn make_parents(
    conn: &Arc<Conn>,
    job: &PutJob,
    remote: &str,
    made: &mut Vec<String>,
) -> Result<(), Error> {
    let Some((parent, _)) = remote.rsplit_once('/') else {
        return Ok(());
    };
    let mut wanted = Vec::new();
    let mut at = String::new();
    for part in parent.split('/') {
        if !at.is_empty() || parent.starts_with('/') {
            at.push('/');
        }
        at.push_str(part);
        if !part.is_empty() && !made.contains(&at) {
            wanted.push(at.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let mut s = conn.first(job).await?;
    for dir in wanted {
        s.make_dir(&dir)
            .await
            .map_err(|e| upload_error(job, &dir, e))?;
        made.push(dir);
    }
    s.quit().await;
    Ok(())
}

/// How to open sessions to the server, and what the first one learned.
struct Conn {
    addrs: Vec<SocketAddr>,
    tls: Option<Arc<TlsClient>>,
    creds: Credentials,
    timeouts: Timeouts,
    use_pasv_address: bool,
    active: bool,
    /// (REST support, EPSV) from the first probe.
    learned: Mutex<Option<((bool, bool), bool)>>,
}

impl Conn {
    /// A session for the start of a file: connected, probed; errors as at startup.
    async fn first(&self, job: &PutJob) -> Result<Session, Error> {
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
        *self.learned.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((s.rest_support(), s.uses_epsv()));
        Ok(s)
    }

    /// Another session, set up with what the first one learned.
    async fn another(&self) -> Result<Session, SessionError> {
        let mut s =
            Session::connect_with(&self.addrs, &self.creds, self.timeouts, self.tls.as_ref())
                .await?;
        s.set_use_pasv_address(self.use_pasv_address);
        s.set_active(self.active);
        let learned = *self.learned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((rest, epsv)) = learned {
            s.set_rest_support(rest);
            s.set_epsv(epsv);
        }
        Ok(s)
    }
}

/// The user-facing error for a failed upload step on `path`.
fn upload_error(job: &PutJob, path: &str, e: SessionError) -> Error {
    Error::from_session(
        SessionContext::new(&job.url, &job.creds, Step::Upload { path }),
        e,
    )
}

/// The local file as it is now: size and modification time (ns since the epoch).
fn local_state(local: &Path) -> Result<(u64, u64), Error> {
    let meta = std::fs::metadata(local).map_err(|e| Error::io("cannot read", local, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            "cannot upload",
            local,
            std::io::Error::other("not a regular file"),
        ));
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok((meta.len(), mtime))
}

/// BLAKE3 chaining values (hex) of the chunks `which` of `file` (blocking).
fn hash_chunks(
    file: &File,
    size: u64,
    chunk_size: u64,
    which: std::ops::Range<u64>,
) -> std::io::Result<Vec<String>> {
    let mut buf = vec![0u8; 1 << 20];
    which
        .map(|k| {
            let (from, to) = verify::chunk_range(k, chunk_size, size);
            verify::hash_chunk(from, to, &mut buf, |b, at| file.read_exact_at(b, at))
                .map(|cv| verify::to_hex(&cv))
        })
        .collect()
}

/// The local file's digest with `algo` (blocking).
fn local_digest(file: &File, algo: HashAlgo) -> std::io::Result<String> {
    use md5::Digest;
    let mut buf = vec![0u8; 1 << 20];
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha256::new();
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        match algo {
            HashAlgo::Md5 => md5.update(&buf[..n]),
            HashAlgo::Sha256 => sha.update(&buf[..n]),
        }
        at += n as u64;
    }
    let bytes: Vec<u8> = match algo {
        HashAlgo::Md5 => md5.finalize().to_vec(),
        HashAlgo::Sha256 => sha.finalize().to_vec(),
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("background task failed: {e}")))
}

/// The remote size of `path`: `None` when it does not exist (550) or the server has no SIZE.
async fn remote_size(s: &mut Session, path: &str) -> Result<Option<u64>, SessionError> {
    match s.size(path).await {
        Ok(n) => Ok(n),
        Err(SessionError::Reply { code: 550, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the remote final name exists: SIZE, and for servers without SIZE, nothing known.
async fn remote_exists(s: &mut Session, path: &str) -> Result<bool, SessionError> {
    Ok(remote_size(s, path).await?.is_some())
}

/// Uploads one file to `final_path`.
async fn put_file(
    job: &PutJob,
    conn: &Arc<Conn>,
    local: &Path,
    final_path: &str,
    progress: &mut Progress,
    mut stop: watch::Receiver<bool>,
) -> Result<PutOutcome, Error> {
    let started = Instant::now();
    let (size, mtime) = local_state(local)?;
    let mpath = manifest_path(local);
    let target = temp_name(final_path, job.temp_suffix.as_deref());
    let url_text = {
        let mut u = job.url.clone();
        u.path = final_path.to_owned();
        u.redacted()
    };
    let file = Arc::new(File::open(local).map_err(|e| Error::io("cannot read", local, e))?);

    let mut first = tokio::select! {
        r = conn.first(job) => r?,
        _ = stop.wait_for(|s| *s) => return Err(Error::Interrupted(mpath)),
    };
    let fail = |e| upload_error(job, final_path, e);

    // The manifest of an earlier try, if it is about this upload.
    let mut manifest = if job.restart {
        None
    } else {
        UploadManifest::load(&mpath)?
    };
    if let Some(m) = &manifest
        && (m.url != url_text || m.remote_path != target)
    {
        return Err(Error::UploadManifest {
            path: mpath.clone(),
            why: format!(
                "it records an unfinished upload to {} (as {}), not to {url_text} (as {target}); \
                 finish that one, or run with --restart to start this one over",
                m.url, m.remote_path
            ),
        });
    }
    if let Some(m) = &manifest
        && m.local_size != size
    {
        return Err(Error::LocalChanged {
            local: local.to_owned(),
            detail: format!(
                "its size is {size} bytes, {} when the upload started",
                m.local_size
            ),
        });
    }

    // The final name must not be overwritten without --force (with --no-temp, an upload we
    // are resuming is allowed to be there).
    let resuming_in_place = manifest.is_some() && target == final_path;
    if !job.force
        && !resuming_in_place
        && remote_exists(&mut first, final_path).await.map_err(fail)?
    {
        return Err(Error::RemoteExists(url_text));
    }
    let remote_now = remote_size(&mut first, &target).await.map_err(fail)?;
    if manifest.is_none() && remote_now.is_some() && !job.restart && target != final_path {
        return Err(Error::UploadManifest {
            path: mpath.clone(),
            why: format!(
                "the remote temporary file {target} exists, but there is no record of \
                 uploading it from {}; run with --restart to overwrite it",
                local.display()
            ),
        });
    }
    if manifest.is_some() && remote_now.is_none() {
        progress.note(&format!(
            "the remote temporary file {target} is gone: starting the upload over"
        ));
        manifest = None;
    }

    // Resume: check the local bytes the server already has, and where to go on.
    let mut resumed = 0;
    if let Some(m) = &manifest {
        let sent_region: Vec<(u64, u64)> = match m.mode {
            UploadMode::Single => match single_resume(remote_now, size) {
                SingleResume::TooLarge(n) => {
                    return Err(Error::UploadManifest {
                        path: mpath.clone(),
                        why: format!(
                            "the remote temporary file {target} holds {n} bytes, more than the \
                             {size} of {}; run with --restart to upload it over",
                            local.display()
                        ),
                    });
                }
                SingleResume::Fresh => vec![],
                SingleResume::From(n) => vec![(0, n)],
            },
            UploadMode::Parallel => m
                .pieces
                .iter()
                .filter(|p| p.acked)
                .map(|p| (p.start, p.end))
                .collect(),
        };
        let (cs, recorded) = (m.chunk_size, m.chunks.clone());
        let f = file.clone();
        let bad = blocking(move || -> std::io::Result<Option<u64>> {
            for (from, to) in sent_region {
                for k in chunks_overlapping(from, to, cs) {
                    let now = hash_chunks(&f, size, cs, k..k + 1)?;
                    if now[0] != recorded[k as usize] {
                        return Ok(Some(k * cs));
                    }
                }
            }
            Ok(None)
        })
        .await?
        .map_err(|e| Error::io("cannot read", local, e))?;
        if let Some(at) = bad {
            return Err(Error::LocalChanged {
                local: local.to_owned(),
                detail: format!("its bytes from offset {at} differ from what was already uploaded"),
            });
        }
        resumed = match m.mode {
            UploadMode::Single => remote_now.unwrap_or(0),
            UploadMode::Parallel => m.acked_bytes(),
        };
        if m.local_mtime_ns != mtime {
            progress.note(&format!(
                "{} was touched since the last try, but the bytes already uploaded still match",
                local.display()
            ));
        }
    }

    // A fresh upload: hash the file, choose the mode, record it before sending anything.
    let mut m = match manifest {
        Some(m) => m,
        None => {
            let chunk_size = verify::chunk_size_for(size);
            let f = file.clone();
            let chunks =
                blocking(move || hash_chunks(&f, size, chunk_size, 0..size.div_ceil(chunk_size)))
                    .await?
                    .map_err(|e| Error::io("cannot read", local, e))?;
            let mut mode = UploadMode::Single;
            if wants_parallel(size, job.connections) {
                match probe_parallel(&mut first, final_path).await {
                    Ok(()) => mode = UploadMode::Parallel,
                    Err(why) => {
                        progress.note(&format!(
                            "parallel upload is not possible on this server ({why}): using one \
                             connection"
                        ));
                        if why.session_lost {
                            first = conn.first(job).await?;
                        }
                    }
                }
            }
            let pieces = match mode {
                UploadMode::Parallel => plan_pieces(size, piece_size(size, job.connections)),
                UploadMode::Single => vec![],
            };
            UploadManifest {
                format: MANIFEST_FORMAT.into(),
                version: MANIFEST_VERSION,
                url: url_text.clone(),
                remote_path: target.clone(),
                local_size: size,
                local_mtime_ns: mtime,
                chunk_size,
                chunks,
                mode,
                pieces,
            }
        }
    };
    m.save(&mpath)?;
    if resumed > 0 {
        progress.note(&format!(
            "resuming the upload of {}: {} of {} already on the server",
            local.display(),
            human_bytes(resumed),
            human_bytes(size)
        ));
    }

    let ctx = Arc::new(Upload {
        file: file.clone(),
        target: target.clone(),
        size,
        max_tries: job.max_tries,
        busy_retry: job.busy_retry,
        sent: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    });
    let (connections, parallel) = match m.mode {
        UploadMode::Single => {
            let r = send_single(
                &ctx,
                conn,
                first,
                remote_now.filter(|_| resumed > 0),
                progress,
                &mut stop,
            )
            .await;
            r.map_err(|e| e.into_error(job, final_path, &mpath))?;
            (1, false)
        }
        UploadMode::Parallel => {
            let n = send_parallel(&ctx, conn, first, &mut m, &mpath, job, progress, &mut stop)
                .await
                .map_err(|e| e.into_error(job, final_path, &mpath))?;
            (n, true)
        }
    };
    progress.finish();

    // Verify before the rename; nothing under the final name until it passes.
    let mut s = conn.first(job).await?;
    let (size_now, mtime_now) = local_state(local)?;
    if (size_now, mtime_now) != (size, mtime) {
        return Err(Error::LocalChanged {
            local: local.to_owned(),
            detail: "it was modified during the upload (the remote copy was kept under the \
                     temporary name)"
                .into(),
        });
    }
    let verified_by = verify_remote(&mut s, &ctx, local, &target)
        .await
        .map_err(|e| match e {
            VerifyError::Session(e) => fail(e),
            VerifyError::Local(e) => e,
        })?;

    if target != final_path {
        if !job.force && remote_exists(&mut s, final_path).await.map_err(fail)? {
            return Err(Error::RemoteExists(url_text));
        }
        if let Err(e) = s.rename(&target, final_path).await {
            // Some servers refuse to rename over a file: with --force, delete it first.
            let exists = remote_exists(&mut s, final_path).await.unwrap_or(false);
            if job.force && exists && matches!(e, SessionError::Reply { .. }) {
                s.delete(final_path).await.map_err(fail)?;
                s.rename(&target, final_path).await.map_err(fail)?;
            } else {
                return Err(fail(e));
            }
        }
    }
    s.quit().await;
    crate::storage::remove_if_exists(&mpath).map_err(|e| Error::io("cannot remove", &mpath, e))?;
    Ok(PutOutcome {
        local: local.to_owned(),
        remote: url_text,
        size,
        sent: ctx.sent.load(Ordering::Relaxed),
        resumed,
        connections,
        parallel,
        verified_by,
        elapsed: started.elapsed(),
    })
}

/// Why parallel upload cannot be used; `session_lost` when the probe session must be replaced.
#[derive(Debug)]
struct ProbeFailure {
    why: String,
    session_lost: bool,
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Proves, on a scratch file, that the server writes `REST n` + `STOR` in place: block 0 with
/// a plain STOR, block 2 past the end (a hole), then block 1 in the middle. The file must then
/// be exactly the three blocks, read back with RETR. The scratch file is deleted.
async fn probe_parallel(s: &mut Session, final_path: &str) -> Result<(), ProbeFailure> {
    if !s.supports_rest() {
        return Err(ProbeFailure {
            why: "no REST".into(),
            session_lost: false,
        });
    }
    let scratch = format!("{final_path}{PROBE_SUFFIX}");
    let data = probe_bytes();
    let r = probe_steps(s, &scratch, &data).await;
    let cleanup = s.delete(&scratch).await;
    match r {
        Ok(()) => Ok(()),
        Err(ProbeStep::Refused(why)) => Err(ProbeFailure {
            why,
            session_lost: cleanup
                .as_ref()
                .is_err_and(|e| !matches!(e, SessionError::Reply { .. })),
        }),
        Err(ProbeStep::Lost(e)) => Err(ProbeFailure {
            why: format!("the probe failed: {e}"),
            session_lost: true,
        }),
    }
}

enum ProbeStep {
    /// The server answered, but not as parallel upload needs.
    Refused(String),
    /// The session failed.
    Lost(SessionError),
}

async fn probe_steps(s: &mut Session, scratch: &str, data: &[u8]) -> Result<(), ProbeStep> {
    let b = PROBE_BLOCK;
    let step = |e: SessionError, what: &str| match e {
        SessionError::Reply { text, .. } => ProbeStep::Refused(format!("{what}: {text}")),
        other => ProbeStep::Lost(other),
    };
    for (from, what) in [
        (0, "STOR"),
        (2 * b, "REST past the end + STOR"),
        (b, "REST + STOR in the middle"),
    ] {
        let mut stream = s
            .open_upload(Store::Stor, scratch, from as u64)
            .await
            .map_err(|e| step(e, what))?;
        s.write_data(&mut stream, &data[from..from + b])
            .await
            .map_err(ProbeStep::Lost)?;
        s.end_upload(stream, what)
            .await
            .map_err(|e| step(e, what))?;
    }
    let size = s.size(scratch).await.map_err(|e| step(e, "SIZE"))?;
    if let Some(n) = size
        && n != data.len() as u64
    {
        return Err(ProbeStep::Refused(format!(
            "REST + STOR truncated or misplaced the data ({n} bytes instead of {})",
            data.len()
        )));
    }
    let mut t = s.retr(scratch, 0).await.map_err(|e| step(e, "RETR"))?;
    let mut back = vec![0u8; data.len() + 1];
    let mut got = 0;
    loop {
        let n = s
            .read_data(&mut t.stream, &mut back[got..])
            .await
            .map_err(ProbeStep::Lost)?;
        if n == 0 {
            break;
        }
        got += n;
        if got == back.len() {
            break;
        }
    }
    let to_eof = got < back.len();
    s.end_transfer(t.stream, to_eof)
        .await
        .map_err(|e| step(e, "RETR"))?;
    if back[..got] != *data {
        return Err(ProbeStep::Refused(format!(
            "REST + STOR truncated or misplaced the data (read back {got} bytes that differ)"
        )));
    }
    Ok(())
}

/// State shared by the connections of one file's upload.
struct Upload {
    file: Arc<File>,
    target: String,
    size: u64,
    max_tries: u32,
    busy_retry: Duration,
    /// Bytes written to data connections in this run.
    sent: AtomicU64,
    failed: AtomicBool,
}

/// Why sending stopped.
enum SendError {
    Session(SessionError),
    GaveUp { tries: u32, last: String },
    Interrupted,
    Local(Error),
}

impl SendError {
    fn into_error(self, job: &PutJob, path: &str, manifest: &Path) -> Error {
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
async fn send_range(
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

/// Whether a failed step is worth another try on a new session, and whether the server said
/// it is busy.
fn retry_kind(e: &SessionError) -> (bool, bool) {
    let failure = crate::retry::Failure::after_login(e);
    (failure.retry(), failure == crate::retry::Failure::Busy)
}

/// The single stream: from `resume_at` (the remote size) to the end; after a failure, a new
/// session asks the remote size again and goes on from there.
async fn send_single(
    up: &Arc<Upload>,
    conn: &Arc<Conn>,
    first: Session,
    resume_at: Option<u64>,
    progress: &mut Progress,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), SendError> {
    let mut session = Some(first);
    let mut offset = resume_at.unwrap_or(0);
    let mut use_appe = false;
    let mut tries = 0u32;
    let pos = Arc::new(AtomicU64::new(offset));
    let mut busy_wait = up.busy_retry;
    loop {
        if *stop.borrow() {
            return Err(SendError::Interrupted);
        }
        let mut tick = tokio::time::interval(TICK);
        let view = |p: u64| View {
            done: p,
            total: Some(up.size),
            conns: vec![ConnView {
                bytes: up.sent.load(Ordering::Relaxed),
                range: Some((p, up.size)),
                state: ConnState::Sending,
            }],
        };
        let result = {
            let attempt = async {
                let s = match session.as_mut() {
                    Some(s) => s,
                    None => {
                        let mut s = conn.another().await.map_err(SendError::Session)?;
                        // What arrived is what the server has: go on from there.
                        offset = match remote_size(&mut s, &up.target)
                            .await
                            .map_err(SendError::Session)?
                        {
                            Some(n) if n <= up.size => n,
                            _ => 0,
                        };
                        pos.store(offset, Ordering::Relaxed);
                        session.insert(s)
                    }
                };
                let how = if use_appe && offset > 0 {
                    Store::Appe
                } else {
                    Store::Stor
                };
                match send_range(up, s, how, offset, up.size, &pos).await {
                    Err(SendError::Session(SessionError::Reply { code, command, .. }))
                        if how == Store::Stor
                            && offset > 0
                            && code >= 500
                            && (command == "REST" || command.starts_with("STOR")) =>
                    {
                        // REST + STOR refused: append instead (the server's size is the offset).
                        use_appe = true;
                        send_range(up, s, Store::Appe, offset, up.size, &pos).await
                    }
                    Err(SendError::Session(SessionError::Protocol(_))) if offset > 0 => {
                        use_appe = true;
                        send_range(up, s, Store::Appe, offset, up.size, &pos).await
                    }
                    other => other,
                }
            };
            tokio::pin!(attempt);
            loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    _ = tick.tick() => progress.update(&view(pos.load(Ordering::Relaxed))),
                    _ = stop.wait_for(|s| *s) => return Err(SendError::Interrupted),
                }
            }
        };
        progress.update(&view(pos.load(Ordering::Relaxed)));
        let e = match result {
            Ok(()) => {
                if let Some(s) = session.take() {
                    s.quit().await;
                }
                return Ok(());
            }
            Err(SendError::Session(e)) => e,
            Err(other) => return Err(other),
        };
        drop(session.take());
        let (retry, busy) = retry_kind(&e);
        if !retry {
            return Err(SendError::Session(e));
        }
        let progressed = pos.load(Ordering::Relaxed) > offset;
        tries = if progressed { 1 } else { tries + 1 };
        if tries >= up.max_tries {
            return Err(SendError::GaveUp {
                tries,
                last: e.to_string(),
            });
        }
        let wait = if busy {
            let w = busy_wait;
            busy_wait = (busy_wait * 2).min(Duration::from_secs(120));
            w
        } else {
            crate::retry::backoff(tries)
        };
        progress.note(&format!(
            "upload interrupted ({e}); retrying in {:.1} s",
            wait.as_secs_f64()
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return Err(SendError::Interrupted),
        }
    }
}

/// Parallel pieces: piece 0 first on the first session (it creates the file; a `STOR` from
/// byte 0 truncates), then up to N connections take the other pieces from a queue. Each piece
/// is acknowledged in the manifest once its `226` arrived. Returns the connections used.
#[allow(clippy::too_many_arguments)]
async fn send_parallel(
    up: &Arc<Upload>,
    conn: &Arc<Conn>,
    first: Session,
    m: &mut UploadManifest,
    mpath: &Path,
    job: &PutJob,
    progress: &mut Progress,
    stop: &mut watch::Receiver<bool>,
) -> Result<usize, SendError> {
    let mut first = Some(first);
    if !m.pieces[0].acked {
        let p = m.pieces[0];
        let mut tries = 0;
        loop {
            let pos = AtomicU64::new(0);
            let attempt = async {
                let s = match first.as_mut() {
                    Some(s) => s,
                    None => first.insert(conn.another().await.map_err(SendError::Session)?),
                };
                send_range(up, s, Store::Stor, p.start, p.end, &pos).await
            };
            let r = tokio::select! {
                r = attempt => r,
                _ = stop.wait_for(|s| *s) => return Err(SendError::Interrupted),
            };
            match r {
                Ok(()) => break,
                Err(SendError::Session(e)) if retry_kind(&e).0 => {
                    first = None;
                    tries += 1;
                    if tries >= up.max_tries {
                        return Err(SendError::GaveUp {
                            tries,
                            last: e.to_string(),
                        });
                    }
                    tokio::time::sleep(crate::retry::backoff(tries)).await;
                }
                Err(other) => return Err(other),
            }
        }
        m.pieces[0].acked = true;
        m.save(mpath).map_err(SendError::Local)?;
    }
    let todo: VecDeque<usize> = (0..m.pieces.len())
        .filter(|&i| !m.pieces[i].acked)
        .collect();
    let workers = job.connections.min(todo.len()).max(1);
    let shared = Arc::new(Pieces {
        queue: Mutex::new(todo),
        manifest: Mutex::new(m.clone()),
        mpath: mpath.to_owned(),
        positions: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        in_piece: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        tries: (0..m.pieces.len()).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut set = JoinSet::new();
    for id in 0..workers {
        let s = if id == 0 { first.take() } else { None };
        set.spawn(piece_worker(
            id,
            up.clone(),
            shared.clone(),
            conn.clone(),
            s,
        ));
    }
    let mut tick = tokio::time::interval(TICK);
    let view = |shared: &Pieces| {
        let acked = shared
            .manifest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acked_bytes();
        let conns: Vec<ConnView> = (0..workers)
            .map(|i| ConnView {
                bytes: shared.positions[i].load(Ordering::Relaxed),
                range: None,
                state: ConnState::Sending,
            })
            .collect();
        let inflight: u64 = shared
            .in_piece
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        View {
            done: (acked + inflight).min(up.size),
            total: Some(up.size),
            conns,
        }
    };
    let mut result = Ok(());
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    up.failed.store(true, Ordering::SeqCst);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Some(Err(e)) => {
                    up.failed.store(true, Ordering::SeqCst);
                    result = Err(SendError::Local(Error::Internal(format!("upload task: {e}"))));
                }
            },
            _ = tick.tick() => progress.update(&view(&shared)),
            _ = stop.wait_for(|s| *s) => {
                up.failed.store(true, Ordering::SeqCst);
                set.abort_all();
                while set.join_next().await.is_some() {}
                *m = shared.manifest.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return Err(SendError::Interrupted);
            }
        }
    }
    progress.update(&view(&shared));
    *m = shared
        .manifest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    result?;
    if m.pieces.iter().any(|p| !p.acked) {
        return Err(SendError::Local(Error::Internal(
            "upload ended with pieces not acknowledged".into(),
        )));
    }
    Ok(workers)
}

/// The pieces still to send, and the manifest their acknowledgements go to.
struct Pieces {
    queue: Mutex<VecDeque<usize>>,
    manifest: Mutex<UploadManifest>,
    mpath: PathBuf,
    /// Bytes each connection sent (progress).
    positions: Vec<AtomicU64>,
    /// Bytes of its current piece each connection has sent (progress).
    in_piece: Vec<AtomicU64>,
    /// Failed attempts in a row per piece.
    tries: Vec<AtomicU64>,
}

/// One connection of a parallel upload: takes pieces until none is left.
async fn piece_worker(
    id: usize,
    up: Arc<Upload>,
    shared: Arc<Pieces>,
    conn: Arc<Conn>,
    mut session: Option<Session>,
) -> Result<(), SendError> {
    let mut busy_wait = up.busy_retry;
    loop {
        if up.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let next = shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(i) = next else { break };
        let piece = shared
            .manifest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pieces[i];
        let pos = AtomicU64::new(piece.start);
        let attempt = async {
            let s = match session.as_mut() {
                Some(s) => s,
                None => session.insert(conn.another().await.map_err(SendError::Session)?),
            };
            send_range(&up, s, Store::Stor, piece.start, piece.end, &pos).await
        };
        let watch_pos = async {
            loop {
                shared.in_piece[id]
                    .store(pos.load(Ordering::Relaxed) - piece.start, Ordering::Relaxed);
                tokio::time::sleep(TICK).await;
            }
        };
        let r = tokio::select! {
            r = attempt => r,
            _ = watch_pos => unreachable!("the position watcher never ends"),
        };
        shared.positions[id]
            .fetch_add(pos.load(Ordering::Relaxed) - piece.start, Ordering::Relaxed);
        shared.in_piece[id].store(0, Ordering::Relaxed);
        match r {
            Ok(()) => {
                let mut m = shared.manifest.lock().unwrap_or_else(|p| p.into_inner());
                m.pieces[i].acked = true;
                m.save(&shared.mpath).map_err(SendError::Local)?;
                shared.tries[i].store(0, Ordering::Relaxed);
                busy_wait = up.busy_retry;
            }
            Err(SendError::Session(e)) => {
                drop(session.take());
                shared
                    .queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(i);
                let (retry, busy) = retry_kind(&e);
                if !retry {
                    return Err(SendError::Session(e));
                }
                let tries = shared.tries[i].fetch_add(1, Ordering::Relaxed) + 1;
                if tries >= u64::from(up.max_tries) {
                    return Err(SendError::GaveUp {
                        tries: tries as u32,
                        last: e.to_string(),
                    });
                }
                let wait = if busy {
                    let w = busy_wait;
                    busy_wait = (busy_wait * 2).min(Duration::from_secs(120));
                    w
                } else {
                    crate::retry::backoff(tries as u32)
                };
                tokio::time::sleep(wait).await;
            }
            Err(other) => return Err(other),
        }
    }
    if let Some(s) = session {
        s.quit().await;
    }
    Ok(())
}

enum VerifyError {
    Session(SessionError),
    Local(Error),
}

/// Checks the remote copy before the rename: its SIZE, and the server's hash where offered.
/// Returns how it was checked.
async fn verify_remote(
    s: &mut Session,
    up: &Upload,
    local: &Path,
    target: &str,
) -> Result<String, VerifyError> {
    let mut how = Vec::new();
    match s.size(target).await.map_err(VerifyError::Session)? {
        Some(n) if n == up.size => how.push("SIZE".to_string()),
        Some(n) => {
            return Err(VerifyError::Local(Error::VerifyFailed {
                detail: format!(
                    "the server holds {n} bytes of {target}, the local file {} has {}",
                    local.display(),
                    up.size
                ),
                temp: target.to_owned(),
            }));
        }
        None => {}
    }
    let f = s.features();
    let commands: Vec<HashCommand> = hash_commands(f.hash.as_deref(), &f.raw);
    // The server reads the whole file to answer: give it time (100 MB/s at least).
    let remote: Option<RemoteHash> = s
        .remote_hash(target, &commands)
        .await
        .map_err(VerifyError::Session)?;
    if let Some(r) = remote {
        let algo = r.command.algo();
        let file = up.file.clone();
        let ours = blocking(move || local_digest(&file, algo))
            .await
            .map_err(VerifyError::Local)?
            .map_err(|e| VerifyError::Local(Error::io("cannot read", local, e)))?;
        if ours != r.hex {
            return Err(VerifyError::Local(Error::VerifyFailed {
                detail: format!(
                    "the server's {} of {target} is {}, the local file's is {ours}",
                    r.command.label(),
                    r.hex
                ),
                temp: target.to_owned(),
            }));
        }
        how.push(r.command.label());
    }
    if how.is_empty() {
        Ok("nothing (the server offers neither SIZE nor a hash)".into())
    } else {
        Ok(how.join(" and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        assert_eq!(
            manifest_path(Path::new("/a/b.iso")),
            PathBuf::from("/a/b.iso.ftpseg-put")
        );
        assert_eq!(temp_name("up/x", Some(".part")), "up/x.part");
        assert_eq!(temp_name("up/x", None), "up/x");
        assert_eq!(remote_join("", "x"), "x");
        assert_eq!(remote_join("up", "x"), "up/x");
        assert_eq!(remote_join("/up/", "x"), "/up/x");
    }

    #[test]
    fn single_resume_trusts_the_remote_size_up_to_the_file_size() {
        assert_eq!(single_resume(None, 10), SingleResume::Fresh);
        assert_eq!(single_resume(Some(0), 10), SingleResume::Fresh);
        assert_eq!(single_resume(Some(4), 10), SingleResume::From(4));
        assert_eq!(single_resume(Some(10), 10), SingleResume::From(10));
        assert_eq!(single_resume(Some(11), 10), SingleResume::TooLarge(11));
    }

    #[test]
    fn chunk_overlap() {
        assert_eq!(chunks_overlapping(0, 0, 4), 0..0);
        assert_eq!(chunks_overlapping(0, 1, 4), 0..1);
        assert_eq!(chunks_overlapping(0, 4, 4), 0..1);
        assert_eq!(chunks_overlapping(3, 9, 4), 0..3);
    }

    #[test]
    fn probe_blocks_differ() {
        let d = probe_bytes();
        let b = PROBE_BLOCK;
        assert_eq!(d.len(), 3 * b);
        assert!(d.iter().all(|&x| x != 0));
        assert_ne!(d[..b], d[b..2 * b]);
        assert_ne!(d[b..2 * b], d[2 * b..]);
    }

    fn manifest(size: u64, mode: UploadMode, piece: u64) -> UploadManifest {
        let cs = verify::CHUNK_SIZE;
        UploadManifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            url: "ftp://h/x".into(),
            remote_path: "x.ftpseg-part".into(),
            local_size: size,
            local_mtime_ns: 1,
            chunk_size: cs,
            chunks: vec!["00".repeat(32); size.div_ceil(cs) as usize],
            mode,
            pieces: if mode == UploadMode::Parallel {
                plan_pieces(size, piece)
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn manifest_round_trip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.ftpseg-put");
        let mut m = manifest(10 << 20, UploadMode::Parallel, MIN_PIECE);
        m.pieces[0].acked = true;
        m.save(&p).unwrap();
        assert_eq!(UploadManifest::load(&p).unwrap(), Some(m.clone()));
        assert_eq!(m.acked_bytes(), MIN_PIECE);
        // A piece acknowledged without the first one is impossible.
        let mut bad = m.clone();
        bad.pieces[0].acked = false;
        bad.pieces[1].acked = true;
        assert!(bad.validate().is_err());
        let mut bad = m.clone();
        bad.version = 99;
        assert!(bad.validate().unwrap_err().contains("version 99"));
        let mut bad = m.clone();
        bad.pieces.pop();
        assert!(bad.validate().is_err());
        let mut bad = m;
        bad.chunks.pop();
        assert!(bad.validate().is_err());
        std::fs::write(&p, "{ not json").unwrap();
        let e = UploadManifest::load(&p).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::MANIFEST);
        assert!(
            UploadManifest::load(&dir.path().join("none"))
                .unwrap()
                .is_none()
        );
    }

    proptest! {
        #[test]
        fn pieces_tile_the_file(size in 1u64..(1 << 34), n in 1usize..64) {
            let piece = piece_size(size, n);
            prop_assert!((MIN_PIECE..=MAX_PIECE).contains(&piece));
            let pieces = plan_pieces(size, piece);
            prop_assert_eq!(pieces[0].start, 0);
            prop_assert_eq!(pieces.last().unwrap().end, size);
            for w in pieces.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
            prop_assert!(pieces.iter().all(|p| p.end > p.start && p.end - p.start <= piece));
        }

        #[test]
        fn single_resume_never_beyond_the_file(remote in proptest::option::of(0u64..1000), size in 0u64..1000) {
            match single_resume(remote, size) {
                SingleResume::From(n) => prop_assert!(n > 0 && n <= size),
                SingleResume::TooLarge(n) => prop_assert!(n > size),
                SingleResume::Fresh => prop_assert!(remote.unwrap_or(0) == 0),
            }
        }
    }
}
