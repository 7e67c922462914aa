//! Sequential digests (SHA-256, SHA-512, SHA-1, MD5) taken while a download runs.
//!
//! `--checksum` and `--checksum-file` need digests that can only be computed in file order,
//! but a segmented download writes its ranges out of order. [`PrefixDigest`] follows the
//! *contiguous written prefix*: the engine tells it, every progress tick (200 ms), how far from
//! byte 0 every byte is written ([`written_prefix`] of the scheduler's snapshot), and a thread
//! of its own reads that prefix back from the `.part` (page cache, `pread`, 4 MiB per step,
//! the lock released between steps) into the hashers. When the download ends, only what the
//! prefix had not reached yet is left to read ([`PrefixDigest::finish`]); on a segmented
//! download that is the part after the first range's owner, which usually keeps up once it
//! has helped the others.
//!
//! Nothing is persisted: after a resume, a new run starts again from byte 0 of what is on
//! disk (the resumed ranges count as written), so the digest is of the final file whatever
//! happened before. If a range is rewound (its bytes will be written again), the digest starts
//! over from byte 0. If anything goes wrong here (a read error, the `.part` replaced), the
//! file is simply read whole at the end, as without this module.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::integrity::checksum::{Algo, Hasher};

/// Bytes read and hashed per step of the hashing thread.
const STEP: usize = 4 << 20;
/// Longest sleep of the hashing thread between checks for a longer prefix.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// The hashing thread gives up (the rest is read at the end) after this long without any new
/// offer: a download stalled that long is retried or failing, and the thread must not live on.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// How far from byte 0 every byte is written, from a scheduler snapshot's `(start, end,
/// written)` ranges (sorted by start, covering the file without gaps).
pub fn written_prefix(ranges: &[(u64, u64, u64)]) -> u64 {
    let mut prefix = 0;
    for &(start, end, written) in ranges {
        if start > prefix {
            break;
        }
        if written < end {
            return prefix.max(written);
        }
        prefix = prefix.max(end);
    }
    prefix
}

/// What the engine last said, and what the caller wants.
#[derive(Debug, Default)]
struct Offer {
    /// The `.part` being written (the first offer names it).
    path: Option<PathBuf>,
    /// Bytes `[0, prefix)` are written.
    prefix: u64,
    /// The scheduler's rewind count with that prefix.
    rewinds: u64,
    /// When the last offer came (the hashing thread gives up after [`GIVE_UP_AFTER`]).
    at: Option<Instant>,
    /// The download ended: hash up to the last prefix, then stop.
    finishing: bool,
    /// The download was dropped (failed, interrupted): stop now.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    offer: Mutex<Offer>,
    wake: Condvar,
    /// Where the hashing thread has got to (for [`Finished::during`]).
    hashed: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Offer> {
        self.offer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The hashing thread's state: the hashers over `[0, pos)` of `file`.
struct Progress {
    file: Option<File>,
    pos: u64,
    rewinds: u64,
    hashers: Vec<Hasher>,
    /// Something went wrong: the result is read from the final file instead.
    failed: bool,
}

/// What [`PrefixDigest::finish`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// Hex digests, in the order of the algorithms given to [`PrefixDigest::new`].
    pub hex: Vec<String>,
    /// Bytes hashed before [`PrefixDigest::finish`] was called: while the download ran and
    /// its file was committed.
    pub during: u64,
    /// Bytes hashed after that: what the caller waited for.
    pub after: u64,
}

/// Sequential digests of a download's file, fed as its written prefix grows (see the module
/// documentation). Dropping it stops its thread.
pub struct PrefixDigest {
    algos: Vec<Algo>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<Progress>>>,
}

impl std::fmt::Debug for PrefixDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixDigest")
            .field("algos", &self.algos)
            .finish()
    }
}

impl PrefixDigest {
    /// Digests of `algos` (BLAKE3 is accepted, though the engine has it for free already).
    pub fn new(algos: &[Algo]) -> PrefixDigest {
        PrefixDigest {
            algos: algos.to_vec(),
            shared: Arc::new(Shared::default()),
            thread: Mutex::new(None),
        }
    }

    /// The algorithms, in the order of [`Finished::hex`].
    pub fn algos(&self) -> &[Algo] {
        &self.algos
    }

    /// Bytes `[0, prefix)` of `part` are written, with the scheduler at `rewinds` rewinds.
    /// Cheap: stores the offer and wakes the hashing thread (started by the first offer).
    pub fn offer(&self, part: &Path, prefix: u64, rewinds: u64) {
        {
            let mut o = self.shared.lock();
            if o.path.is_none() {
                o.path = Some(part.to_path_buf());
            }
            o.prefix = prefix;
            o.rewinds = rewinds;
            o.at = Some(Instant::now());
        }
        self.shared.wake.notify_all();
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_none() {
            let shared = self.shared.clone();
            let algos = self.algos.clone();
            let spawned = std::thread::Builder::new()
                .name("ftpseg-digest".into())
                .spawn(move || follow(&shared, &algos));
            // No thread (out of resources): the file is read at the end instead.
            *thread = spawned.ok();
        }
    }

    /// The digests of the finished file at `path` (the `.part` offered, renamed): waits for
    /// the thread to hash the last prefix offered, then reads what is left of `path`. Blocking
    /// (run it on a blocking thread).
    pub fn finish(&self, path: &Path) -> std::io::Result<Finished> {
        let hashed_before = self.shared.hashed.load(Ordering::Relaxed);
        self.shared.lock().finishing = true;
        self.shared.wake.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let progress = handle.and_then(|h| h.join().ok());
        let mut file = File::open(path)?;
        let (mut hashers, mut pos) = match progress {
            Some(p) if !p.failed && p.file.as_ref().is_some_and(|f| same_file(f, &file)) => {
                // Keep reading through the descriptor the prefix was read from.
                if let Some(f) = p.file {
                    file = f;
                }
                (p.hashers, p.pos)
            }
            _ => (self.algos.iter().map(|&a| Hasher::new(a)).collect(), 0),
        };
        let len = file.metadata()?.len();
        if pos > len {
            // Cannot happen for a file that only grew; start over rather than trust it.
            hashers = self.algos.iter().map(|&a| Hasher::new(a)).collect();
            pos = 0;
        }
        // What the thread had hashed when we were called (none if its work is not used).
        let during = if pos > 0 { hashed_before.min(pos) } else { 0 };
        let mut buf = vec![0u8; STEP];
        let after = len - during;
        while pos < len {
            let n = STEP.min((len - pos) as usize);
            file.read_exact_at(&mut buf[..n], pos)?;
            for h in &mut hashers {
                h.update(&buf[..n]);
            }
            pos += n as u64;
        }
        Ok(Finished {
            hex: hashers.into_iter().map(Hasher::finish_hex).collect(),
            during,
            after,
        })
    }
}

impl Drop for PrefixDigest {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// Whether two open files are the same file (device and inode).
fn same_file(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The hashing thread: hashes `[pos, prefix)` in steps as offers come, until told to stop.
/// Every wait is bounded ([`IDLE_WAIT`]); it ends when the download ends (`finishing`, once
/// the last prefix is hashed), is dropped (`closed`), or offers nothing for [`GIVE_UP_AFTER`].
fn follow(shared: &Shared, algos: &[Algo]) -> Progress {
    let fresh = || algos.iter().map(|&a| Hasher::new(a)).collect::<Vec<_>>();
    let mut p = Progress {
        file: None,
        pos: 0,
        rewinds: 0,
        hashers: fresh(),
        failed: false,
    };
    let mut buf = vec![0u8; STEP];
    loop {
        let (path, prefix) = {
            let mut o = shared.lock();
            loop {
                if o.closed {
                    return p;
                }
                if o.rewinds != p.rewinds {
                    // A range was rewound: bytes already hashed may be written again.
                    p.rewinds = o.rewinds;
                    p.pos = 0;
                    p.hashers = fresh();
                    shared.hashed.store(0, Ordering::Relaxed);
                }
                if o.prefix > p.pos {
                    break;
                }
                if o.finishing || o.at.is_some_and(|t| t.elapsed() >= GIVE_UP_AFTER) {
                    return p;
                }
                o = shared
                    .wake
                    .wait_timeout(o, IDLE_WAIT)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            (o.path.clone(), o.prefix)
        };
        if p.file.is_none() {
            match path.as_deref().map(File::open) {
                Some(Ok(f)) => p.file = Some(f),
                _ => {
                    p.failed = true;
                    return p;
                }
            }
        }
        let Some(file) = p.file.as_ref() else {
            p.failed = true;
            return p;
        };
        let n = STEP.min((prefix - p.pos) as usize);
        if file.read_exact_at(&mut buf[..n], p.pos).is_err() {
            p.failed = true;
            return p;
        }
        for h in &mut p.hashers {
            h.update(&buf[..n]);
        }
        p.pos += n as u64;
        shared.hashed.store(p.pos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::checksum::hash_file;

    #[test]
    fn prefix_of_snapshots() {
        assert_eq!(written_prefix(&[]), 0);
        assert_eq!(written_prefix(&[(0, 10, 4), (10, 20, 20)]), 4);
        assert_eq!(written_prefix(&[(0, 10, 10), (10, 20, 15)]), 15);
        assert_eq!(
            written_prefix(&[(0, 10, 10), (10, 20, 20), (20, 30, 30)]),
            30
        );
        assert_eq!(written_prefix(&[(0, 10, 0), (10, 20, 20)]), 0);
        // A gap (should not happen) ends the prefix.
        assert_eq!(written_prefix(&[(0, 10, 10), (12, 20, 20)]), 10);
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn follows_the_prefix_then_reads_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        let fin = dir.path().join("f");
        let bytes = data(3 * STEP + 12345);
        std::fs::write(&part, &bytes).unwrap();
        let algos = [Algo::Sha256, Algo::Md5, Algo::Sha1, Algo::Sha512];
        let d = PrefixDigest::new(&algos);
        for prefix in [0, 1000, STEP as u64 + 7, 2 * STEP as u64] {
            d.offer(&part, prefix, 0);
        }
        std::fs::rename(&part, &fin).unwrap();
        let got = d.finish(&fin).unwrap();
        assert_eq!(got.hex, hash_file(&fin, &algos).unwrap());
        assert_eq!(got.during + got.after, bytes.len() as u64);
        assert!(got.during <= 2 * STEP as u64, "{got:?}");
    }

    #[test]
    fn a_rewind_starts_over_and_a_replaced_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("g.part");
        let mut bytes = data(2 * STEP + 3);
        std::fs::write(&part, &bytes).unwrap();
        let d = PrefixDigest::new(&[Algo::Sha256]);
        d.offer(&part, bytes.len() as u64, 0);
        // The same bytes rewritten differently after a rewind: the digest must follow.
        bytes[5] ^= 0xff;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&part)
            .unwrap()
            .write_all_at(&bytes[..10], 0)
            .unwrap();
        d.offer(&part, bytes.len() as u64, 1);
        let got = d.finish(&part).unwrap();
        assert_eq!(got.hex, hash_file(&part, &[Algo::Sha256]).unwrap());

        // Another file at the final path (a new inode): read whole.
        let other = dir.path().join("other");
        std::fs::write(&other, b"something else").unwrap();
        let d = PrefixDigest::new(&[Algo::Md5]);
        d.offer(&part, bytes.len() as u64, 0);
        let got = d.finish(&other).unwrap();
        assert_eq!(got.hex, hash_file(&other, &[Algo::Md5]).unwrap());
        assert_eq!((got.during, got.after), (0, 14));
    }

    #[test]
    fn no_offer_reads_the_file_and_drop_stops_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("h");
        std::fs::write(&f, data(1000)).unwrap();
        let d = PrefixDigest::new(&[Algo::Sha1]);
        let got = d.finish(&f).unwrap();
        assert_eq!(got.hex, hash_file(&f, &[Algo::Sha1]).unwrap());
        assert_eq!((got.during, got.after), (0, 1000));
        // Dropped mid-download: the thread ends (nothing to assert but that drop returns).
        let d = PrefixDigest::new(&[Algo::Sha1]);
        d.offer(&f, 10, 0);
        drop(d);
    }
}
