//! The files a download keeps on disk and how a run picks up an earlier one: claiming the
//! output, loading the manifest and checking it describes the same remote file, planning fresh
//! ranges otherwise, opening or creating the `.part`, and verifying its hashed chunks.

use std::path::{Path, PathBuf};

use crate::download::{Job, plan};
use crate::error::Error;
use crate::ftp::url::FtpUrl;
use crate::integrity::verify;
use crate::storage::manifest::{Manifest, RangeRecord};
use crate::storage::{self, Allocation, PartFile, Storage};
use crate::ui::human_bytes;
use crate::ui::progress::Progress;

/// The files of a download kept on disk ([`Storage::File`]): `<out>.ftpseg` and `<out>.part`.
pub(super) struct Files {
    pub manifest: PathBuf,
    pub part: PathBuf,
}

/// What the remote file turned out to be, for the manifest.
pub(super) struct Remote<'a> {
    /// The URL without its password, as the manifest records it.
    pub redacted: &'a str,
    pub size: u64,
    pub mdtm: Option<String>,
    /// The server supports `REST` (a transfer can start anywhere).
    pub rest: bool,
}

/// Where the download starts: the manifest, the `.part` and the bytes already done.
pub(super) struct Resumed {
    pub manifest: Manifest,
    pub part: PartFile,
    pub resumed: u64,
}

impl Files {
    /// The one place the storage choice is made: `None` keeps nothing on disk. Claims the
    /// output for [`Storage::File`] ([`Files::claim`]).
    pub fn for_job(job: &Job) -> Result<Option<Files>, Error> {
        match job.storage {
            Storage::File => Ok(Some(Files::claim(job)?)),
            Storage::Discard if job.digest.is_some() => Err(Error::Usage(
                "a checksum needs the downloaded bytes; it cannot be taken while they are \
                 discarded"
                    .into(),
            )),
            Storage::Discard => Ok(None),
        }
    }

    /// Checks that `job.output` may be written (not a folder; not an existing file unless
    /// `--force`) and, with `--restart`, removes an earlier run's manifest and `.part`.
    fn claim(job: &Job) -> Result<Files, Error> {
        let output = &job.output;
        if output.is_dir() {
            return Err(Error::io(
                "cannot write to",
                output,
                std::io::Error::other("it is a folder; give a file name with -o"),
            ));
        }
        if output.exists() && !job.force {
            return Err(crate::storage::StorageError::Exists(output.clone()).into());
        }
        let files = Files {
            manifest: Manifest::path_for(output),
            part: storage::part_path(output),
        };
        if job.restart {
            remove_if_exists(&files.manifest)?;
            remove_if_exists(&files.part)?;
        }
        Ok(files)
    }

    /// The manifest (resumed if it describes the same remote file, otherwise fresh; saved
    /// before the `.part` is preallocated), the `.part` (reopened or created) and the bytes
    /// already done, with any damaged chunks of a resumed `.part` forgotten.
    pub fn open(&self, job: &Job, progress: &mut Progress, r: &Remote) -> Result<Resumed, Error> {
        let (mut manifest, part_exists) = self.manifest_for(job, progress, r)?;
        if manifest.chunk_size == 0 {
            // A fresh manifest, or one from format version 1: hash chunks from now on.
            manifest.enable_chunks(verify::chunk_size_for(r.size));
        }
        let resumed = manifest.bytes_done();
        // Written before the file is preallocated: a full-size file never exists without it.
        manifest.save(&self.manifest)?;
        crate::trace!("setup: manifest saved");
        let part = if resumed > 0 && part_exists {
            PartFile::open_existing(&self.part, r.size)?
        } else {
            PartFile::create(&self.part, r.size)?
        };
        let part = part.with_store(job.io)?;
        crate::trace!("setup: .part ready, {} store", part.store().name());
        if part.allocation() == Allocation::Sparse {
            progress.note(
                "this filesystem cannot preallocate; the file is sparse (free space was checked)",
            );
        }
        let mut resumed = Resumed {
            manifest,
            part,
            resumed,
        };
        if resumed.resumed > 0 {
            self.verify(progress, &mut resumed, r.size)?;
        }
        Ok(resumed)
    }

    /// The manifest to go on from, and whether the `.part` it describes is there to be used.
    fn manifest_for(
        &self,
        job: &Job,
        progress: &mut Progress,
        r: &Remote,
    ) -> Result<(Manifest, bool), Error> {
        let fresh = || fresh_manifest(r, job);
        let mut manifest = match Manifest::load(&self.manifest)? {
            Some(mut m) => {
                adopt_same_file(&mut m, &job.url);
                if let Err(mismatch) =
                    m.check_same_remote(r.redacted, Some(r.size), r.mdtm.as_deref())
                {
                    return Err(Error::RemoteChanged {
                        detail: mismatch.to_string(),
                        part: self.part.clone(),
                    });
                }
                m
            }
            None => {
                if self.part.exists() {
                    progress.note(&format!(
                        "{} has no manifest beside it, so its bytes cannot be trusted: starting \
                         over",
                        self.part.display()
                    ));
                }
                fresh()?
            }
        };
        let mut part_exists = self.part.exists();
        if manifest.bytes_done() > 0 && !part_exists {
            progress.note(&format!(
                "{} is missing, so the progress recorded in {} is lost: starting over",
                self.part.display(),
                self.manifest.display()
            ));
            manifest = fresh()?;
        }
        if !r.rest && manifest.bytes_done() > 0 && part_exists {
            // Never throw away downloaded bytes on our own: the user decides.
            return Err(Error::CannotResume {
                part: self.part.clone(),
                done: human_bytes(manifest.bytes_done()),
            });
        }
        if !r.rest && manifest.ranges.len() > 1 {
            manifest = fresh()?;
            part_exists = false;
        }
        Ok((manifest, part_exists))
    }

    /// Checks the resumed `.part` against the manifest's chunk hashes; damaged chunks are
    /// fetched again.
    fn verify(&self, progress: &mut Progress, r: &mut Resumed, size: u64) -> Result<(), Error> {
        let (checked, bad) =
            tokio::task::block_in_place(|| verify_chunks(&r.part, &mut r.manifest))?;
        if bad > 0 {
            progress.note(&format!(
                "{bad} of {checked} hashed chunk(s) of {} no longer match what was downloaded \
                 (damaged or edited since the last run): fetching only those again",
                self.part.display()
            ));
            r.manifest.save(&self.manifest)?;
            r.resumed = r.manifest.bytes_done();
        }
        progress.note(&format!(
            "resuming: {} of {} already on disk ({checked} chunk(s) verified)",
            human_bytes(r.resumed),
            human_bytes(size)
        ));
        Ok(())
    }
}

/// Where the download starts: from the files on disk ([`Files::open`]) or, for discarded
/// bytes, from scratch ([`discarded`]). Says so when the server cannot resume at all.
pub(super) fn resume_or_start(
    job: &Job,
    progress: &mut Progress,
    files: Option<&Files>,
    r: &Remote,
) -> Result<Resumed, Error> {
    let resumed = match files {
        Some(f) => f.open(job, progress, r)?,
        None => discarded(job, r)?,
    };
    if !r.rest {
        progress.note(
            "the server does not support REST: using one connection; an interrupted download \
             will have to start over",
        );
    }
    Ok(resumed)
}

/// Where a download whose bytes are discarded starts: fresh ranges, a manifest that is never
/// saved, no chunk hashes.
fn discarded(job: &Job, r: &Remote) -> Result<Resumed, Error> {
    Ok(Resumed {
        manifest: fresh_manifest(r, job)?,
        part: PartFile::discard(r.size)?,
        resumed: 0,
    })
}

/// A manifest for a download from scratch: one range per connection, or a single range when
/// the server cannot start a transfer anywhere but at byte 0.
fn fresh_manifest(r: &Remote, job: &Job) -> Result<Manifest, Error> {
    let connections = match (r.rest, job.auto_connections) {
        (false, _) => 1,
        (true, false) => job.connections,
        // The connections added later take their share by stealing.
        (true, true) => crate::download::autotune::START.min(job.connections),
    };
    let ranges = plan::initial_ranges(r.size, connections, job.min_range)
        .into_iter()
        .map(|r| RangeRecord {
            start: r.start,
            end: r.end,
            done: r.start,
        })
        .collect();
    Ok(Manifest::new(
        r.redacted,
        Some(r.size),
        r.mdtm.clone(),
        ranges,
    )?)
}

/// Removes `path`; one that is not there is fine.
fn remove_if_exists(path: &Path) -> Result<(), Error> {
    storage::remove_if_exists(path).map_err(|e| Error::io("cannot remove", path, e))
}

/// The manifest of an earlier run over another TLS mode (`ftp://` then `--ftps`, say) still
/// describes the same file: it takes this run's URL, so the exact comparison that follows
/// passes, and only the scheme in the manifest changes.
pub(super) fn adopt_same_file(m: &mut Manifest, url: &FtpUrl) {
    if m.url != url.redacted() && FtpUrl::parse(&m.url).is_ok_and(|old| old.same_file(url)) {
        m.url = url.redacted();
    }
}

/// Hashes every chunk the manifest has a hash for, from the `.part`, and forgets the ones that
/// differ so they are fetched again. Returns (chunks checked, chunks that differed). The chunks
/// are shared out over the machine's cores (at most [`VERIFY_THREADS`]), each thread reading
/// with `pread` into its own buffer: an unreadable byte is an error, never a signal, as it
/// would be through a map (docs/architecture.md, "Stores").
fn verify_chunks(part: &PartFile, manifest: &mut Manifest) -> Result<(usize, usize), Error> {
    let (Some(size), cs) = (manifest.size, manifest.chunk_size) else {
        return Ok((0, 0));
    };
    let todo: Vec<(usize, String)> = (manifest.chunks.iter().enumerate())
        .filter_map(|(k, c)| c.clone().map(|c| (k, c)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Each thread's verdicts: (chunk, matched), or the first read error.
    let check = || -> Result<Vec<(usize, bool)>, Error> {
        let mut buf = vec![0u8; crate::download::checkpoint::HASH_BUF];
        let mut seen = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((k, expected)) = todo.get(i) else {
                return Ok(seen);
            };
            let (from, to) = verify::chunk_range(*k as u64, cs, size);
            let cv = verify::hash_chunk(from, to, &mut buf, |b, at| part.read_exact_at(b, at))?;
            seen.push((*k, verify::to_hex(&cv) == *expected));
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, VERIFY_THREADS)
        .min(todo.len().max(1));
    let verdicts: Vec<Result<Vec<(usize, bool)>, Error>> = std::thread::scope(|s| {
        let workers: Vec<_> = (1..threads).map(|_| s.spawn(check)).collect();
        let mut all = vec![check()];
        all.extend(
            workers
                .into_iter()
                .map(|w| w.join().expect("a verify thread panicked")),
        );
        all
    });
    let mut bad = 0;
    for verdict in verdicts {
        for (k, matched) in verdict? {
            if !matched {
                bad += 1;
                let (from, to) = verify::chunk_range(k as u64, cs, size);
                manifest.forget(from, to);
            }
        }
    }
    Ok((todo.len(), bad))
}

/// Most threads that hash a resumed `.part` at once.
const VERIFY_THREADS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// The threads share the chunks out: every recorded chunk is checked once, and exactly the
    /// damaged ones are forgotten.
    #[test]
    fn verify_forgets_exactly_the_damaged_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (cs, size) = (256u64 << 10, 5_000_000u64);
        let data: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
        let path = dir.path().join("f.part");
        let part = PartFile::create(&path, size).unwrap();
        std::fs::write(&path, &data).unwrap();
        let ranges = vec![RangeRecord {
            start: 0,
            end: size,
            done: size,
        }];
        let mut m = Manifest::new("ftp://h/f", Some(size), None, ranges).unwrap();
        m.enable_chunks(cs);
        for k in 0..m.chunks.len() {
            let (from, to) = verify::chunk_range(k as u64, cs, size);
            let cv = verify::chunk_cv(from, &data[from as usize..to as usize]);
            m.chunks[k] = Some(verify::to_hex(&cv));
        }
        let recorded = m.chunks.len();
        // Damage one byte in chunk 2 and the last byte of the file (the short last chunk).
        let mut damaged = data.clone();
        damaged[2 * cs as usize + 17] ^= 0xff;
        damaged[size as usize - 1] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(verify_chunks(&part, &mut m).unwrap(), (recorded, 2));
        let last = size - (recorded as u64 - 1) * cs;
        assert_eq!(m.bytes_done(), size - cs - last);
        assert!(m.chunks[2].is_none() && m.chunks[recorded - 1].is_none());
        assert_eq!(
            m.chunks.iter().filter(|c| c.is_some()).count(),
            recorded - 2
        );
    }
}
