//! Servers that report no size at all: one connection streams the file to its end, written in
//! order to `<out>.part`. The manifest records the durable length (`streamed`), so a broken
//! stream goes on with a new session and `REST` from there, within the run where the server
//! supports it (a missing network waited for without counting a try, other transient failures
//! up to `--max-tries`, as a range's worker does), and a rerun resumes the same way.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use std::sync::Arc;

use crate::download::resume::adopt_same_file;
use crate::download::sched::READ_CHUNK;
use crate::download::{Job, Outcome};
use crate::error::{Error, SessionContext, Step};
use crate::ftp::{DataStream, Session, SessionError, TlsClient, Transfer};
use crate::integrity::verify;
use crate::retry::network::Network;
use crate::retry::{Failure, backoff};
use crate::storage::{self, manifest::Manifest};
use crate::ui::human_bytes;
use crate::ui::progress::{ConnState, ConnView, NetNote, Progress, View};

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
    link: Link,
    first: Transfer,
    mdtm: Option<String>,
) -> Result<Outcome, Error> {
    let mut session = link.session;
    let rest_support = session.rest_support();
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
    let mut tries = 0;
    let mut broke_at = None;
    loop {
        let e = match read_to_end(
            job,
            progress,
            &mut stop,
            &mut session,
            &mut stream,
            &mut out,
        )
        .await
        {
            // The data ended: the server must confirm the transfer was complete. Without that
            // (a server killed or restarted closes both connections), the stream goes on from
            // the offset: the rest, or nothing more and then the confirmation.
            Ok(()) => match session.end_transfer(stream, true).await {
                Ok(()) => break,
                Err(e) => {
                    out.save()?;
                    if !rest {
                        return Err(failed(e));
                    }
                    e
                }
            },
            Err(Ended::Other(e)) => return Err(e),
            Err(Ended::Session(e)) if !rest => return Err(failed(e)),
            Err(Ended::Session(e)) => e,
        };
        // Tries count failures in a row without progress, as for ranges.
        if broke_at != Some(out.written) {
            tries = 0;
        }
        broke_at = Some(out.written);
        let again = Again {
            job,
            net: &link.net,
            tls: link.tls.as_ref(),
            rest: rest_support,
            offset: out.written,
        };
        (session, stream) = match again.reopen(e, &mut tries, progress, &mut stop).await {
            Ok(pair) => pair,
            Err(Ended::Session(e)) => return Err(failed(e)),
            Err(Ended::Other(Error::Interrupted(_))) => {
                return Err(Error::Interrupted(out.manifest_path.clone()));
            }
            Err(Ended::Other(e)) => return Err(e),
        };
    }
    progress.finish();
    session.quit().await;
    commit(job, out, mdtm, started)
}

/// What the stream needs to start over: its first session, the network it found, the TLS
/// client.
pub(super) struct Link {
    pub session: Session,
    pub net: Arc<Network>,
    pub tls: Option<Arc<TlsClient>>,
}

/// A broken stream going on from `offset` with a new session.
struct Again<'a> {
    job: &'a Job,
    net: &'a Network,
    tls: Option<&'a Arc<TlsClient>>,
    /// What the first session learned about `REST`.
    rest: (bool, bool),
    offset: u64,
}

impl Again<'_> {
    /// After the stream broke with `e`: waits for a missing network (no try), or a backoff
    /// (a try; `--max-tries` in a row without progress end the run), then a new session and
    /// `REST offset` + `RETR`; again while that fails. A fatal failure ends the run
    /// (`Ended::Session`); so does Ctrl-C (`Ended::Other(Interrupted)`).
    async fn reopen(
        &self,
        mut e: SessionError,
        tries: &mut u32,
        progress: &mut Progress,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(Session, DataStream), Ended> {
        let (job, net) = (self.job, self.net);
        let interrupted = || Ended::Other(Error::Interrupted(Default::default()));
        loop {
            let mut failure = Failure::after_login(&e);
            if failure == Failure::Transient && net.route().is_err() {
                failure = Failure::NoNetwork;
            }
            crate::trace!("stream broke at {} ({e}): {failure:?}", self.offset);
            match failure {
                Failure::Fatal => return Err(Ended::Session(e)),
                Failure::NoNetwork => {
                    if net.missing_since().is_none() {
                        progress.network(&NetNote::Lost {
                            why: e.to_string(),
                            limit: job.network_wait,
                        });
                    }
                    net.missed(&e.to_string());
                    let host = job.url.host_for_connect();
                    tokio::select! {
                        r = net.wait_for_return() => r.map_err(|gone| {
                            Ended::Other(gone.into_error(&host, job.network_wait))
                        })?,
                        _ = stop.changed() => return Err(interrupted()),
                    }
                }
                Failure::Transient | Failure::Busy => {
                    *tries += 1;
                    if *tries >= job.max_tries {
                        return Err(Ended::Other(Error::GaveUp {
                            tries: *tries,
                            last: e.to_string(),
                        }));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(*tries)) => {}
                        _ = stop.changed() => return Err(interrupted()),
                    }
                }
            }
            match self.connect().await {
                Ok(pair) => {
                    if let Some(since) = net.missing_since() {
                        progress.network(&NetNote::Back {
                            after: since.elapsed(),
                        });
                    }
                    net.reached();
                    return Ok(pair);
                }
                Err(next) => e = next,
            }
        }
    }

    /// A new session and the transfer from `offset`.
    async fn connect(&self) -> Result<(Session, DataStream), SessionError> {
        let job = self.job;
        let addrs = self.net.addrs();
        if let (Err(source), Some(&addr)) = (self.net.route(), addrs.first()) {
            return Err(SessionError::Connect { addr, source });
        }
        let mut s = Session::connect_with(&addrs, &job.creds, job.timeouts, self.tls).await?;
        s.set_rest_support(self.rest);
        s.set_use_pasv_address(job.use_pasv_address);
        s.set_active(job.active);
        let t = s.retr(&job.url.path, self.offset).await?;
        Ok((s, t.stream))
    }
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
                    server: 0,
                }],
                network_missing: None,
                servers: Vec::new(),
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
        sources: Vec::new(),
        pieces_repaired: false,
        remote_mtime: mdtm,
        first_byte: None,
    })
}
