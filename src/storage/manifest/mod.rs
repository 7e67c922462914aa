//! The resume manifest: `<output>.ftpseg`, a small JSON file next to the
//! output that records how far each byte range of a download has been
//! *durably* written into `<output>.part`.
//!
//! After `kill -9`, a crash or a power loss, running the same command again
//! loads the manifest, checks with [`Manifest::check_same_remote`] that the
//! remote file is still the same one, and resumes every range from its
//! recorded `done` offset.
//!
//! # The rule: never claim a byte that is not on disk
//!
//! The engine makes the `.part`'s written bytes durable (`fdatasync`) first and only then calls
//! [`Manifest::save`], so every byte the manifest reports is already on disk.
//! The manifest is written before the `.part` file is preallocated, so a
//! `.part` without a manifest never looks resumable.
//!
//! # Save protocol
//!
//! [`Manifest::save`] never modifies the manifest in place:
//!
//! 1. serialize to pretty JSON,
//! 2. write it to `<manifest>.tmp` in the same folder,
//! 3. `fsync` that file,
//! 4. rename it over `<manifest>` (atomic on POSIX file systems),
//! 5. `fsync` the folder, so the rename itself is durable.
//!
//! A crash at any point leaves either the old or the new manifest, complete.
//! A leftover `.tmp` is ignored by [`Manifest::load`] and deleted by the next
//! save or by [`Manifest::remove`].
//!
//! The on-disk format, its invariants and its compatibility rules are
//! described in `docs/manifest.md`.
//!
//! This file holds the format's types and the in-memory updates; `file.rs` loads, saves and
//! removes the file, `validate.rs` checks the invariants, `error.rs` words what went wrong.

mod error;
mod file;
mod validate;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use error::{IoOp, ManifestError, Mismatch};
use validate::url_has_password;

/// Value of the `format` field of every manifest.
pub const FORMAT: &str = "ftpseg-manifest";

/// Version of the on-disk format this module reads and writes.
pub const VERSION: u32 = 2;

/// The oldest format version this ftpseg still reads (version 1 had no chunk hashes; it is
/// upgraded in memory and saved as the current version).
pub const OLDEST_VERSION: u32 = 1;

/// Length of the hex chaining value recorded per chunk (BLAKE3, 32 bytes).
pub const CHUNK_HASH_HEX: usize = 64;

/// Manifests larger than this are refused by [`Manifest::load`] without being
/// read in full, and [`Manifest::save`] refuses to write one. A range record
/// takes about 80 bytes of pretty JSON, so this allows ~200,000 ranges.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Suffix appended to the output path to name its manifest.
const SUFFIX: &str = ".ftpseg";

/// Suffix appended to the manifest path to name the temporary file of a save.
const TMP_SUFFIX: &str = ".tmp";

/// Suffix of the partial download, used in error messages.
const PART_SUFFIX: &str = ".part";

/// The durable state of one download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The URL without a password (a URL with one is refused).
    pub url: String,
    /// Remote size from `SIZE`; `None` when unknown (streamed download).
    pub size: Option<u64>,
    /// Remote modification time from `MDTM`, verbatim; `None` if unavailable.
    pub mdtm: Option<String>,
    /// When the download started, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// When the manifest was last saved, in seconds since the Unix epoch.
    pub updated_unix: u64,
    /// With a known size: sorted, contiguous, non-empty ranges covering
    /// `[0, size)` exactly (no ranges when `size == 0`). Empty otherwise.
    pub ranges: Vec<RangeRecord>,
    /// Without a known size: durable length of the streamed prefix.
    /// Must be `None` when `size` is `Some`.
    pub streamed: Option<u64>,
    /// Size of the hashed chunks: a power of two of at least 1024 bytes; 0 when chunks are not
    /// hashed (unknown size, or a manifest from version 1). Chunk `k` is the bytes
    /// `[k * chunk_size, min((k + 1) * chunk_size, size))`.
    #[serde(default)]
    pub chunk_size: u64,
    /// One entry per chunk: the BLAKE3 chaining value (64 hex digits) of a chunk whose bytes are
    /// all durable, or `null`. See docs/manifest.md.
    #[serde(default)]
    pub chunks: Vec<Option<String>>,
}

/// One byte range `[start, end)` of the output; bytes `[start, done)` are
/// durably on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRecord {
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte of the range.
    pub end: u64,
    /// Durable offset: `start <= done <= end`.
    pub done: u64,
}

impl RangeRecord {
    /// A range `[start, end)` with nothing downloaded yet.
    pub fn new(start: u64, end: u64) -> RangeRecord {
        RangeRecord {
            start,
            end,
            done: start,
        }
    }

    /// True when every byte of the range is durably on disk.
    pub fn is_complete(&self) -> bool {
        self.done >= self.end
    }

    /// Bytes still to download (`end - done`, never underflows).
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.done)
    }

    /// Bytes durably on disk (`done - start`, never underflows).
    pub fn durable(&self) -> u64 {
        self.done.saturating_sub(self.start)
    }
}

impl Manifest {
    /// A fresh manifest for a download: timestamps set to now, `streamed` set
    /// to `Some(0)` when `size` is `None` (and `None` otherwise). Fails if the
    /// URL contains a password or the ranges break an invariant of
    /// [`Manifest::validate`].
    pub fn new(
        url: &str,
        size: Option<u64>,
        mdtm: Option<String>,
        ranges: Vec<RangeRecord>,
    ) -> Result<Manifest, ManifestError> {
        if url_has_password(url) {
            return Err(ManifestError::PasswordInUrl);
        }
        let now = now_unix();
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            version: VERSION,
            url: url.to_owned(),
            size,
            mdtm,
            created_unix: now,
            updated_unix: now,
            ranges,
            streamed: if size.is_none() { Some(0) } else { None },
            chunk_size: 0,
            chunks: Vec::new(),
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest path of an output: `<output>.ftpseg` (the suffix is
    /// appended, so `a.iso` gives `a.iso.ftpseg`).
    pub fn path_for(output: &Path) -> PathBuf {
        append_suffix(output, SUFFIX)
    }

    /// The temporary file [`Manifest::save`] writes before renaming:
    /// `<path>.tmp`.
    pub fn tmp_path_for(path: &Path) -> PathBuf {
        append_suffix(path, TMP_SUFFIX)
    }

    /// Whether every byte of `[from, to)` lies in the done part of its range.
    pub fn is_durable(&self, from: u64, to: u64) -> bool {
        self.ranges
            .iter()
            .filter(|r| r.start < to && r.end > from)
            .all(|r| r.done >= r.end.min(to))
    }

    /// Marks the bytes `[from, to)` as not done (their chunk failed verification), splitting
    /// ranges so that no other done byte is lost. The ranges still tile the file.
    pub fn forget(&mut self, from: u64, to: u64) {
        let mut out = Vec::with_capacity(self.ranges.len() + 2);
        for r in self.ranges.drain(..) {
            if r.end <= from || r.start >= to || r.done <= from {
                out.push(r);
                continue;
            }
            let (a, b) = (from.max(r.start), to.min(r.end));
            if a > r.start {
                out.push(RangeRecord {
                    start: r.start,
                    end: a,
                    done: r.done.min(a),
                });
            }
            out.push(RangeRecord {
                start: a,
                end: b,
                done: a,
            });
            if r.end > b {
                out.push(RangeRecord {
                    start: b,
                    end: r.end,
                    done: r.done.max(b),
                });
            }
        }
        self.ranges = out;
        self.drop_stale_chunks();
    }

    /// Clears the hash of every chunk whose bytes are no longer all done.
    pub fn drop_stale_chunks(&mut self) {
        let (Some(size), cs) = (self.size, self.chunk_size) else {
            return;
        };
        if cs == 0 {
            return;
        }
        for k in 0..self.chunks.len() {
            if self.chunks[k].is_some() {
                let from = k as u64 * cs;
                if !self.is_durable(from, (from + cs).min(size)) {
                    self.chunks[k] = None;
                }
            }
        }
    }

    /// Turns on chunk hashing with `chunk_size` (a power of two), no chunk hashed yet.
    pub fn enable_chunks(&mut self, chunk_size: u64) {
        if let Some(size) = self.size {
            self.chunk_size = chunk_size;
            self.chunks = vec![None; size.div_ceil(chunk_size) as usize];
        }
    }

    /// Bytes durably on disk: the sum of `done - start` over the ranges, or
    /// `streamed` when the size is unknown. Saturates instead of overflowing.
    pub fn bytes_done(&self) -> u64 {
        if self.size.is_none() {
            return self.streamed.unwrap_or(0);
        }
        self.ranges
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.durable()))
    }

    /// True when the size is known and every range is complete (a download
    /// of size 0 is complete). A streamed download (size unknown) is never
    /// complete by its manifest: only reaching the end of the data stream
    /// tells.
    pub fn is_complete(&self) -> bool {
        self.size.is_some() && self.ranges.iter().all(RangeRecord::is_complete)
    }

    /// Does this manifest describe the same remote file?
    ///
    /// * `url` must be equal (exact string comparison of the password-free
    ///   URL);
    /// * `size` must be equal, including known/unknown: the ranges are laid
    ///   out for one size, so a size that changed, appeared or disappeared is
    ///   a mismatch;
    /// * `mdtm` is compared only when both sides have one: `None` on either
    ///   side means "cannot compare" (servers without `MDTM`, or a transient
    ///   failure of the command), and is accepted. Two different values are a
    ///   mismatch.
    ///
    /// The first difference found, in that order, is returned.
    pub fn check_same_remote(
        &self,
        url: &str,
        size: Option<u64>,
        mdtm: Option<&str>,
    ) -> Result<(), Mismatch> {
        if self.url != url {
            return Err(Mismatch::Url {
                old: self.url.clone(),
                new: url.to_owned(),
            });
        }
        if self.size != size {
            return Err(Mismatch::Size {
                old: self.size,
                new: size,
            });
        }
        match (self.mdtm.as_deref(), mdtm) {
            (Some(old), Some(new)) if old != new => Err(Mismatch::Mdtm {
                old: old.to_owned(),
                new: new.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `path` with `suffix` appended to its last component.
fn append_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
