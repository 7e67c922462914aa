//! Servers that report no size at all: one connection streams the file to its end, written in
//! order to `<out>.part`. The manifest records the durable length (`streamed`), so a rerun
//! resumes with `REST` where the server supports it.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::download::resume::adopt_same_file;
use crate::download::sched::READ_CHUNK;
use crate::download::{Job, Outcome};
use crate::error::{Error, SessionContext, Step};
use crate::ftp::{DataStream, Session, SessionError, Transfer};
use crate::integrity::verify;
use crate::storage::{self, manifest::Manifest};
use crate::ui::human_bytes;
use crate::ui::progress::{ConnState, ConnView, Progress, View};

/// The `.part` being streamed into and its manifest.
struct Streamed {
    part_path: PathBuf,
    manifest_path: PathBuf,
    manifest: Manifest,
    file: File,
    /// Bytes in the `.part`, and how many of them an earlier run left.
    written: u64,
    resumed: u64,
}

impl Streamed {
    /// Makes the written bytes durable, then records them in the manifest.
    fn save(&mut self) -> Result<(), Error> {
        tokio::task::block_in_place(|| {
            self.file
                .sync_data()
                .map_err(|e| Error::io("cannot flush", &self.part_path, e))?;
            self.manifest.streamed = Some(self.written);
            self.manifest.save(&self.manifest_path)?;
            Ok(())
        })
    }
}

/// Streams the file whose transfer `first` started at byte 0 to its end, resuming an earlier
/// run's `.part` where the manifest says (with `REST`).
pub(super) async fn stream_unknown_size(
    job: &Job,
    progress: &mut Progress,
    mut stop: watch::Receiver<bool>,
    mut session: Session,
    first: Transfer,
    mdtm: Option<String>,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let rest = session.supports_rest();
    let failed = |e| {
        let ctx = SessionContext::new(&job.url, &job.creds, Step::Stream { rest });
        Error::from_session(ctx, e)
    };
    let mut out = open_part(job, progress, &mdtm, rest)?;
    let mut stream = if out.written == 0 {
        first.stream
    } else {
        session
            .end_transfer(first.stream, false)
            .await
            .map_err(failed)?;
        let from = session.retr(&job.url.path, out.written).await;
        from.map_err(failed)?.stream
    };
    if let Err(e) = read_to_end(
        job,
        progress,
        &mut stop,
        &mut session,
        &mut stream,
        &mut out,
    )
    .await
    {
        return Err(match e {
            Ended::Session(e) => failed(e),
            Ended::Other(e) => e,
        });
    }
    progress.finish();
    // The data ended: the server must confirm the transfer was complete.
    if let Err(e) = session.end_transfer(stream, true).await {
        out.save()?;
        return Err(failed(e));
    }
    session.quit().await;
    commit(job, out, mdtm, started)
}

/// The manifest (an earlier run's if it describes the same file) and the `.part`, opened at
/// the offset the manifest has as durable.
fn open_part(
    job: &Job,
    progress: &mut Progress,
    mdtm: &Option<String>,
    rest: bool,
) -> Result<Streamed, Error> {
    let output = &job.output;
    let manifest_path = Manifest::path_for(output);
    let part_path = storage::part_path(output);
    let redacted = job.url.redacted();
    let mut manifest = match Manifest::load(&manifest_path)? {
        Some(mut m) => {
            adopt_same_file(&mut m, &job.url);
            if let Err(mismatch) = m.check_same_remote(&redacted, None, mdtm.as_deref()) {
                return Err(Error::RemoteChanged {
                    detail: mismatch.to_string(),
                    part: part_path,
                });
            }
            m
        }
        None => Manifest::new(&redacted, None, mdtm.clone(), Vec::new())?,
    };
    let offset = resume_offset(progress, &manifest, &manifest_path, &part_path, rest)?;
    manifest.streamed = Some(offset);
    manifest.save(&manifest_path)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part_path)
        .map_err(|e| Error::io("cannot open", &part_path, e))?;
    file.set_len(offset)
        .and_then(|_| file.seek(SeekFrom::Start(offset)).map(|_| ()))
        .map_err(|e| Error::io("cannot prepare", &part_path, e))?;
    Ok(Streamed {
        part_path,
        manifest_path,
        manifest,
        file,
        written: offset,
        resumed: offset,
    })
}

/// Where the stream goes on: the manifest's durable length if the `.part` still holds it,
/// else 0. A `.part` shorter than that, or a server without `REST`, cannot be resumed.
fn resume_offset(
    progress: &mut Progress,
    manifest: &Manifest,
    manifest_path: &std::path::Path,
    part_path: &std::path::Path,
    rest: bool,
) -> Result<u64, Error> {
    let offset = manifest.streamed.unwrap_or(0);
    if offset == 0 {
        return Ok(0);
    }
    match std::fs::metadata(part_path) {
        Err(_) => {
            progress.note(&format!(
                "{} is missing, so the progress recorded in {} is lost: starting over",
                part_path.display(),
                manifest_path.display()
            ));
            Ok(0)
        }
        Ok(m) if m.len() < offset => Err(Error::io(
            "cannot resume into",
            part_path,
            std::io::Error::other(format!(
                "it is {} bytes long but the manifest says {offset} are done; run with \
                 --restart to start over",
                m.len()
            )),
        )),
        Ok(_) if !rest => Err(Error::CannotResume {
            part: part_path.to_owned(),
            done: human_bytes(offset),
        }),
        Ok(_) => Ok(offset),
    }
}

/// Why reading the stream stopped before its end.
enum Ended {
    /// The session failed (progress saved).
    Session(SessionError),
    /// Ctrl-C (progress saved), or a local failure.
    Other(Error),
}

/// Reads the stream into the `.part` until the data ends, with a progress line every 200 ms
/// and a checkpoint every `--checkpoint-interval`.
async fn read_to_end(
    job: &Job,
    progress: &mut Progress,
    stop: &mut watch::Receiver<bool>,
    session: &mut Session,
    stream: &mut DataStream,
    out: &mut Streamed,
) -> Result<(), Ended> {
    let mut buf = vec![0u8; READ_CHUNK as usize];
    let mut last_checkpoint = Instant::now();
    let mut last_view = Instant::now();
    loop {
        let n = tokio::select! {
            r = session.read_data(stream, &mut buf) => r,
            _ = stop.changed() => {
                out.save().map_err(Ended::Other)?;
                return Err(Ended::Other(Error::Interrupted(out.manifest_path.clone())));
            }
        };
        let n = match n {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => {
                out.save().map_err(Ended::Other)?;
                return Err(Ended::Session(e));
            }
        };
        out.file
            .write_all(&buf[..n])
            .map_err(|e| Ended::Other(Error::io("cannot write", &out.part_path, e)))?;
        out.written += n as u64;
        if last_view.elapsed() >= Duration::from_millis(200) {
            last_view = Instant::now();
            progress.update(&View {
                done: out.written,
                total: None,
                conns: vec![ConnView {
                    bytes: out.written - out.resumed,
                    range: None,
                    state: ConnState::Streaming,
                }],
                network_missing: None,
            });
        }
        if last_checkpoint.elapsed() >= job.checkpoint_interval {
            last_checkpoint = Instant::now();
            out.save().map_err(Ended::Other)?;
        }
    }
}

/// The stream is complete: sync, hash, rename the `.part` to the output, remove the manifest.
fn commit(
    job: &Job,
    out: Streamed,
    mdtm: Option<String>,
    started: Instant,
) -> Result<Outcome, Error> {
    let output = &job.output;
    let Streamed {
        part_path,
        manifest_path,
        file,
        written,
        resumed,
        ..
    } = out;
    file.sync_all()
        .map_err(|e| Error::io("cannot sync", &part_path, e))?;
    drop(file);
    let hash_started = Instant::now();
    let hash = tokio::task::block_in_place(|| verify::hash_file(&part_path))
        .map_err(|e| Error::io("cannot read back", &part_path, e))?;
    let hash_time = hash_started.elapsed();
    storage::rename(&part_path, output, job.force)?;
    storage::sync_parent(output).map_err(|e| Error::io("cannot sync the folder of", output, e))?;
    Manifest::remove(&manifest_path)?;
    Ok(Outcome {
        path: output.clone(),
        size: written,
        elapsed: started.elapsed(),
        fetched: written - resumed,
        resumed,
        blake3: Some(hash),
        hash_time,
        hash_from_chunks: false,
        connections: 1,
        remote_mtime: mdtm,
        first_byte: None,
    })
}
