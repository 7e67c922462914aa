//! The run for one file: check what is on the server and in the manifest, resume or start
//! (hash, probe, plan, record), send, verify, rename into place.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use super::connect::{Conn, remove_manifest, upload_error};
use super::local::{LocalState, blocking, first_changed_chunk, hash_chunks, local_state};
use super::manifest::{
    MANIFEST_FORMAT, MANIFEST_VERSION, UploadManifest, UploadMode, manifest_path,
};
use super::parallel::send_parallel;
use super::plan::{
    SingleResume, piece_size, plan_pieces, single_resume, temp_name, wants_parallel,
};
use super::probe::probe_parallel;
use super::send::{SendError, Sender, Upload};
use super::single::send_single;
use super::verify::{VerifyError, remote_exists, remote_size, verify_remote};
use super::{PutJob, PutOutcome};
use crate::error::Error;
use crate::ftp::{Session, SessionError};
use crate::integrity::verify;
use crate::ui::human_bytes;
use crate::ui::progress::Progress;

/// Uploads one file to `final_path`.
pub(super) async fn put_file(
    job: &PutJob,
    conn: &Arc<Conn>,
    local: &Path,
    final_path: &str,
    progress: &mut Progress,
    mut stop: watch::Receiver<bool>,
) -> Result<PutOutcome, Error> {
    let started = Instant::now();
    let f = OneFile::new(job, conn, local, final_path)?;
    let mut first = tokio::select! {
        r = conn.first(job) => r?,
        _ = stop.wait_for(|s| *s) => return Err(Error::Interrupted(f.mpath.clone())),
    };
    let manifest = f.earlier_manifest()?;
    let (manifest, remote_now) = f.check_remote(&mut first, manifest, progress).await?;
    let resumed = match &manifest {
        Some(m) => f.check_resume(m, remote_now, progress).await?,
        None => 0,
    };
    let mut m = match manifest {
        Some(m) => m,
        None => f.fresh_manifest(&mut first, progress).await?,
    };
    m.save(&f.mpath)?;
    if resumed > 0 {
        progress.note(&format!(
            "resuming the upload of {}: {} of {} already on the server",
            local.display(),
            human_bytes(resumed),
            human_bytes(f.state.size)
        ));
    }

    let up = Arc::new(Upload {
        file: f.file.clone(),
        target: f.target.clone(),
        size: f.state.size,
        max_tries: job.max_tries,
        busy_retry: job.busy_retry,
        sent: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    });
    let mut tx = Sender {
        up: &up,
        conn,
        progress,
        stop: &mut stop,
    };
    let resume_at = remote_now.filter(|_| resumed > 0);
    let sent = f.send(&mut tx, first, &mut m, resume_at).await?;
    progress.finish();

    let verified_by = f.verify_and_rename().await?;
    Ok(PutOutcome {
        local: local.to_owned(),
        remote: f.url_text,
        size: f.state.size,
        sent: up.sent.load(Ordering::Relaxed),
        resumed,
        connections: sent.connections,
        parallel: sent.parallel,
        verified_by,
        elapsed: started.elapsed(),
    })
}

/// How a file was sent.
struct Sent {
    connections: usize,
    parallel: bool,
}

/// One file of the job: where it goes, and the local file as it was at the start.
struct OneFile<'a> {
    job: &'a PutJob,
    conn: &'a Arc<Conn>,
    local: &'a Path,
    final_path: &'a str,
    /// The remote path written: the temporary name, or the final one with `--no-temp`.
    target: String,
    /// The upload manifest's path.
    mpath: PathBuf,
    /// The final URL, password redacted (as the manifest records it).
    url_text: String,
    state: LocalState,
    file: Arc<File>,
}

impl<'a> OneFile<'a> {
    fn new(
        job: &'a PutJob,
        conn: &'a Arc<Conn>,
        local: &'a Path,
        final_path: &'a str,
    ) -> Result<OneFile<'a>, Error> {
        let state = local_state(local)?;
        let mpath = manifest_path(local);
        let target = temp_name(final_path, job.temp_suffix.as_deref());
        let url_text = {
            let mut u = job.url.clone();
            u.path = final_path.to_owned();
            u.redacted()
        };
        let file = Arc::new(File::open(local).map_err(|e| Error::io("cannot read", local, e))?);
        Ok(OneFile {
            job,
            conn,
            local,
            final_path,
            target,
            mpath,
            url_text,
            state,
            file,
        })
    }

    /// The user-facing error of a failed step.
    fn fail(&self, e: SessionError) -> Error {
        upload_error(self.job, self.final_path, e)
    }

    /// The manifest of an earlier try (not with `--restart`); an error when it is about
    /// another upload or the local file's size changed.
    fn earlier_manifest(&self) -> Result<Option<UploadManifest>, Error> {
        let manifest = if self.job.restart {
            None
        } else {
            UploadManifest::load(&self.mpath)?
        };
        let Some(m) = &manifest else {
            return Ok(None);
        };
        if m.url != self.url_text || m.remote_path != self.target {
            return Err(Error::UploadManifest {
                path: self.mpath.clone(),
                why: format!(
                    "it records an unfinished upload to {} (as {}), not to {} (as {}); \
                     finish that one, or run with --restart to start this one over",
                    m.url, m.remote_path, self.url_text, self.target
                ),
            });
        }
        if m.local_size != self.state.size {
            return Err(Error::LocalChanged {
                local: self.local.to_owned(),
                detail: format!(
                    "its size is {} bytes, {} when the upload started",
                    self.state.size, m.local_size
                ),
            });
        }
        Ok(manifest)
    }

    /// Checks the remote names: the final one must not be overwritten without `--force`
    /// (with `--no-temp`, an upload we are resuming is allowed to be there); a temporary file
    /// without a manifest is refused, a manifest without its temporary file is dropped.
    /// Returns the manifest still valid and the remote size of the target.
    async fn check_remote(
        &self,
        first: &mut Session,
        manifest: Option<UploadManifest>,
        progress: &mut Progress,
    ) -> Result<(Option<UploadManifest>, Option<u64>), Error> {
        let (job, target) = (self.job, &self.target);
        let resuming_in_place = manifest.is_some() && target == self.final_path;
        if !job.force
            && !resuming_in_place
            && remote_exists(first, self.final_path)
                .await
                .map_err(|e| self.fail(e))?
        {
            return Err(Error::RemoteExists(self.url_text.clone()));
        }
        let remote_now = remote_size(first, target).await.map_err(|e| self.fail(e))?;
        if manifest.is_none() && remote_now.is_some() && !job.restart && target != self.final_path {
            return Err(Error::UploadManifest {
                path: self.mpath.clone(),
                why: format!(
                    "the remote temporary file {target} exists, but there is no record of \
                     uploading it from {}; run with --restart to overwrite it",
                    self.local.display()
                ),
            });
        }
        if manifest.is_some() && remote_now.is_none() {
            progress.note(&format!(
                "the remote temporary file {target} is gone: starting the upload over"
            ));
            return Ok((None, remote_now));
        }
        Ok((manifest, remote_now))
    }

    /// Resume: checks that the local bytes the server already has still hash as recorded.
    /// Returns the bytes already on the server.
    async fn check_resume(
        &self,
        m: &UploadManifest,
        remote_now: Option<u64>,
        progress: &mut Progress,
    ) -> Result<u64, Error> {
        let size = self.state.size;
        let sent_region = self.sent_region(m, remote_now)?;
        let (cs, recorded) = (m.chunk_size, m.chunks.clone());
        let f = self.file.clone();
        let bad = blocking(move || first_changed_chunk(&f, size, cs, &recorded, &sent_region))
            .await?
            .map_err(|e| Error::io("cannot read", self.local, e))?;
        if let Some(at) = bad {
            return Err(Error::LocalChanged {
                local: self.local.to_owned(),
                detail: format!("its bytes from offset {at} differ from what was already uploaded"),
            });
        }
        let resumed = match m.mode {
            UploadMode::Single => remote_now.unwrap_or(0),
            UploadMode::Parallel => m.acked_bytes(),
        };
        if m.local_mtime_ns != self.state.mtime_ns {
            progress.note(&format!(
                "{} was touched since the last try, but the bytes already uploaded still match",
                self.local.display()
            ));
        }
        Ok(resumed)
    }

    /// The byte ranges the server already holds: a prefix of the remote size (one stream), or
    /// the acknowledged pieces.
    fn sent_region(
        &self,
        m: &UploadManifest,
        remote_now: Option<u64>,
    ) -> Result<Vec<(u64, u64)>, Error> {
        let size = self.state.size;
        Ok(match m.mode {
            UploadMode::Single => match single_resume(remote_now, size) {
                SingleResume::TooLarge(n) => {
                    return Err(Error::UploadManifest {
                        path: self.mpath.clone(),
                        why: format!(
                            "the remote temporary file {} holds {n} bytes, more than the \
                             {size} of {}; run with --restart to upload it over",
                            self.target,
                            self.local.display()
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
        })
    }

    /// A fresh upload: hashes the file and chooses the mode (parallel only where the probe
    /// passed). `first` is replaced when the probe lost it.
    async fn fresh_manifest(
        &self,
        first: &mut Session,
        progress: &mut Progress,
    ) -> Result<UploadManifest, Error> {
        let (job, size) = (self.job, self.state.size);
        let chunk_size = verify::chunk_size_for(size);
        let f = self.file.clone();
        let chunks =
            blocking(move || hash_chunks(&f, size, chunk_size, 0..size.div_ceil(chunk_size)))
                .await?
                .map_err(|e| Error::io("cannot read", self.local, e))?;
        let mut mode = UploadMode::Single;
        if wants_parallel(size, job.connections) {
            match probe_parallel(first, self.final_path).await {
                Ok(()) => mode = UploadMode::Parallel,
                Err(why) => {
                    progress.note(&format!(
                        "parallel upload is not possible on this server ({why}): using one \
                         connection"
                    ));
                    if why.session_lost {
                        *first = self.conn.first(job).await?;
                    }
                }
            }
        }
        let pieces = match mode {
            UploadMode::Parallel => plan_pieces(size, piece_size(size, job.connections)),
            UploadMode::Single => vec![],
        };
        Ok(UploadManifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            url: self.url_text.clone(),
            remote_path: self.target.clone(),
            local_size: size,
            local_mtime_ns: self.state.mtime_ns,
            chunk_size,
            chunks,
            mode,
            pieces,
        })
    }

    /// Sends the file as `m` says: one stream from `resume_at`, or the pieces not yet
    /// acknowledged.
    async fn send(
        &self,
        tx: &mut Sender<'_>,
        first: Session,
        m: &mut UploadManifest,
        resume_at: Option<u64>,
    ) -> Result<Sent, Error> {
        let into_error = |e: SendError| e.into_error(self.job, self.final_path, &self.mpath);
        match m.mode {
            UploadMode::Single => {
                send_single(tx, first, resume_at)
                    .await
                    .map_err(into_error)?;
                Ok(Sent {
                    connections: 1,
                    parallel: false,
                })
            }
            UploadMode::Parallel => {
                let n = send_parallel(tx, first, m, &self.mpath, self.job.connections)
                    .await
                    .map_err(into_error)?;
                Ok(Sent {
                    connections: n,
                    parallel: true,
                })
            }
        }
    }

    /// Verifies before the rename (nothing under the final name until it passes), renames
    /// into place, removes the manifest. Returns how the remote copy was checked.
    async fn verify_and_rename(&self) -> Result<Vec<String>, Error> {
        let mut s = self.conn.first(self.job).await?;
        if local_state(self.local)? != self.state {
            return Err(Error::LocalChanged {
                local: self.local.to_owned(),
                detail: "it was modified during the upload (the remote copy was kept under the \
                         temporary name)"
                    .into(),
            });
        }
        let verified_by = verify_remote(
            &mut s,
            &self.file,
            self.state.size,
            self.local,
            &self.target,
        )
        .await
        .map_err(|e| match e {
            VerifyError::Session(e) => self.fail(e),
            VerifyError::Local(e) => e,
        })?;
        if self.target != self.final_path {
            self.rename_into_place(&mut s).await?;
        }
        s.quit().await;
        remove_manifest(&self.mpath)?;
        Ok(verified_by)
    }

    /// `RNFR`/`RNTO` to the final name, checked again first (another client may have made
    /// it); with `--force`, a server that refuses to rename over a file gets `DELE` first.
    async fn rename_into_place(&self, s: &mut Session) -> Result<(), Error> {
        let final_path = self.final_path;
        if !self.job.force
            && remote_exists(s, final_path)
                .await
                .map_err(|e| self.fail(e))?
        {
            return Err(Error::RemoteExists(self.url_text.clone()));
        }
        if let Err(e) = s.rename(&self.target, final_path).await {
            // Some servers refuse to rename over a file: with --force, delete it first.
            let exists = remote_exists(s, final_path).await.unwrap_or(false);
            if self.job.force && exists && matches!(e, SessionError::Reply { .. }) {
                s.delete(final_path).await.map_err(|e| self.fail(e))?;
                s.rename(&self.target, final_path)
                    .await
                    .map_err(|e| self.fail(e))?;
            } else {
                return Err(self.fail(e));
            }
        }
        Ok(())
    }
}
