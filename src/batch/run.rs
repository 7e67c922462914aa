//! The downloads of a batch: `-j` files at once, in the list's order, each first compared
//! with a local copy (skipped when complete: same size and modification time as on the
//! server), then downloaded on the server's pool and checked ([`super::checks`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::checks::{expected_for, streamed_algos, verify};
use super::walk::session;
use super::{Ctx, Ended, FileEnd, FileJob, report};
use crate::download;
use crate::error::{Error, SessionContext};
use crate::integrity::digest::PrefixDigest;
use crate::ui::progress::Progress;

/// Downloads `files`, `jobs` at a time, reporting each as it ends; the ends in the list's
/// order.
pub(super) async fn download_all(ctx: &Arc<Ctx>, files: Vec<FileJob>, jobs: usize) -> Vec<Ended> {
    let turns = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in files.into_iter().enumerate() {
        let ctx = ctx.clone();
        // Turns are taken here, in the list's order: tasks waiting for one would start in
        // whatever order the runtime first polled them (with -j 1, the second file could come
        // first; tests/it/bulk.rs `killed_batch_...` failed 2 times in 12 under load that way).
        let Ok(turn) = turns.clone().acquire_owned().await else {
            break;
        };
        set.spawn(async move {
            let _turn = turn;
            let label = f.url.redacted();
            let path = f.output.clone();
            let end = one_file(&ctx, f).await;
            report::file_end(&ctx, &label, Some(&path), &end);
            (i, label, path, end)
        });
    }
    let mut done: Vec<(usize, String, PathBuf, FileEnd)> = Vec::new();
    let mut failed: Vec<Ended> = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => done.push(r),
            Err(e) => failed.push((
                "?".into(),
                None,
                FileEnd::Failed(Error::Internal(format!("a download task failed: {e}"))),
            )),
        }
    }
    done.sort_by_key(|d| d.0);
    failed.extend(done.into_iter().map(|(_, l, p, e)| (l, Some(p), e)));
    failed
}

/// Downloads one file (or skips it), then checks it.
async fn one_file(ctx: &Ctx, f: FileJob) -> FileEnd {
    match fetch_and_check(ctx, &f).await {
        Ok(end) => end,
        Err(e) => FileEnd::Failed(e.scrub(&ctx.hosts[f.host].template.creds.password)),
    }
}

/// Skips a complete local copy, or downloads the file and checks it.
async fn fetch_and_check(ctx: &Ctx, f: &FileJob) -> Result<FileEnd, Error> {
    if let Some(why) = complete_already(ctx, f).await? {
        return Ok(FileEnd::Skipped(why.into()));
    }
    let h = &ctx.hosts[f.host];
    if let Some(parent) = f.output.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io("cannot create the folder", parent, e))?;
    }
    ctx.events.emit(
        "file_start",
        json!({"url": f.url.redacted(), "path": f.output.display().to_string()}),
    );
    // Known before the download, so the sequential digests can follow it (crate::integrity::digest).
    let expected = expected_for(ctx, f).await?;
    let stream = streamed_algos(expected.as_ref().map(|(e, _)| e.algo), ctx.verify_remote);
    let digest = (!stream.is_empty()).then(|| Arc::new(PrefixDigest::new(&stream)));
    let mut job = h.template.clone();
    job.url = f.url.clone();
    job.output = f.output.clone();
    job.pool = Some(h.pool.clone());
    job.digest = digest.clone();
    job.mirrors = f.mirrors.clone();
    job.pieces = f.pieces.clone();
    job.expected_size = f.expected_size;
    job.per_mirror = Some(h.pool.limit());
    let mut progress =
        Progress::new(ctx.mode).with_events(ctx.events.clone(), f.url.redacted().to_string());
    let outcome = download::download(&job, &mut progress, ctx.stop.clone()).await?;
    crate::trace!("{}: downloaded", f.output.display());
    let remote_time = outcome.remote_mtime.as_deref().and_then(mdtm_to_time);
    let set_time = |t: SystemTime| {
        let _ = std::fs::File::options()
            .write(true)
            .open(&f.output)
            .and_then(|file| file.set_modified(t));
    };
    // Pieces fetched again after the digests read them: the digests are stale.
    let digest = digest.filter(|_| !outcome.pieces_repaired);
    let checks = match verify(ctx, f, &outcome, expected, digest).await {
        Ok(checks) => checks,
        Err(e) => {
            // Kept, but never taken for complete by a later run: its time differs from the
            // server's (the download may have finished within the second the file was made).
            if let Some(t) = remote_time {
                set_time(t + Duration::from_secs(1));
            }
            return Err(e);
        }
    };
    // The server's time on the file, so the next run sees it is complete.
    if let Some(t) = remote_time {
        set_time(t);
    }
    Ok(FileEnd::Done { outcome, checks })
}

/// Why the local file is complete already (same size and modification time as the server's,
/// or the same size where the server gives no time), if it is; a partial download (with its
/// manifest) never is.
async fn complete_already(ctx: &Ctx, f: &FileJob) -> Result<Option<&'static str>, Error> {
    let Ok(meta) = std::fs::metadata(&f.output) else {
        return Ok(None);
    };
    if !meta.is_file() || crate::storage::manifest::Manifest::path_for(&f.output).exists() {
        return Ok(None);
    }
    let (size, mdtm) = match (f.size, &f.mdtm) {
        (Some(s), Some(m)) => (Some(s), Some(m.clone())),
        _ => remote_size_mdtm(ctx, f).await?,
    };
    let local = meta.modified().ok().map(|t| (meta.len(), t));
    Ok(
        match local_state(local, size, mdtm.as_deref().and_then(mdtm_to_time)) {
            Local::Complete => {
                Some("complete already (same size and modification time as on the server)")
            }
            Local::SameSizeNoTime => {
                Some("complete already (same size; the server gives no modification time)")
            }
            Local::Fetch | Local::Different => None,
        },
    )
}

/// `SIZE` and `MDTM` of a file, on a session of the pool.
async fn remote_size_mdtm(ctx: &Ctx, f: &FileJob) -> Result<(Option<u64>, Option<String>), Error> {
    let h = &ctx.hosts[f.host];
    let (permit, mut s) = session(ctx, f.host).await?;
    let t = &h.template;
    let size = s
        .size(&f.url.path)
        .await
        .map_err(|e| Error::from_session(SessionContext::startup(&f.url, &t.creds), e))?;
    let mdtm = s
        .mdtm(&f.url.path)
        .await
        .map_err(|e| Error::from_session(SessionContext::startup(&f.url, &t.creds), e))?;
    h.pool.give_back(Some(s), permit);
    Ok((size, mdtm.map(|m| m.0)))
}

/// `YYYYMMDDHHMMSS` (UTC, from MDTM) as a time; `None` when malformed.
pub fn mdtm_to_time(mdtm: &str) -> Option<SystemTime> {
    let d = mdtm.get(..14)?;
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |a: usize, b: usize| d[a..b].parse::<i64>().ok();
    let (y, mo, day, h, mi, s) = (
        n(0, 4)?,
        n(4, 6)?,
        n(6, 8)?,
        n(8, 10)?,
        n(10, 12)?,
        n(12, 14)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from 1970-01-01 to y-mo-day (proleptic Gregorian).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// What to do with a local file before downloading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    /// Nothing there (or a partial download with its manifest): download (or resume).
    Fetch,
    /// Already complete: same size and same modification time as the server's.
    Complete,
    /// Same size, and the server gives no modification time to compare.
    SameSizeNoTime,
    /// Something else is there: leave it alone (the download refuses without --force).
    Different,
}

/// The skip decision from the local file's (size, mtime) and the server's.
pub fn local_state(
    local: Option<(u64, SystemTime)>,
    remote_size: Option<u64>,
    remote_mtime: Option<SystemTime>,
) -> Local {
    let Some((size, mtime)) = local else {
        return Local::Fetch;
    };
    match (remote_size, remote_mtime) {
        (Some(rs), Some(rt)) if rs == size && same_second(rt, mtime) => Local::Complete,
        (Some(rs), None) if rs == size => Local::SameSizeNoTime,
        _ => Local::Different,
    }
}

fn same_second(a: SystemTime, b: SystemTime) -> bool {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    secs(a) == secs(b)
}
