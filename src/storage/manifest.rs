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

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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

/// What went wrong with a file-system operation on a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Opening or reading the manifest.
    Read,
    /// Creating, writing or syncing `<manifest>.tmp`.
    Write,
    /// Renaming `<manifest>.tmp` over the manifest.
    Rename,
    /// Syncing the folder that holds the manifest.
    SyncFolder,
    /// Deleting the manifest or its `.tmp`.
    Remove,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Rename => "replace",
            IoOp::SyncFolder => "sync the folder of",
            IoOp::Remove => "remove",
        })
    }
}

/// Every failure of this module. Each message is a single line that names the
/// manifest (when there is one) and tells the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file-system operation failed.
    #[error("cannot {op} manifest {}: {source}: {}", .path.display(), io_advice(*.op, .path))]
    Io {
        /// The manifest path.
        path: PathBuf,
        /// What was being done.
        op: IoOp,
        /// The underlying error.
        source: io::Error,
    },
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error(
        "manifest {} is too large ({size} bytes, the limit is {MAX_MANIFEST_BYTES}), so it is not an ftpseg manifest or it is damaged: {}",
        .path.display(), restart_advice(.path)
    )]
    TooLarge {
        /// The manifest path.
        path: PathBuf,
        /// Its size in bytes (at least the limit + 1).
        size: u64,
    },
    /// The manifest file is empty (or only whitespace).
    #[error(
        "manifest {} is empty (probably cut short by a crash or a full disk): {}",
        .path.display(), restart_advice(.path)
    )]
    Empty {
        /// The manifest path.
        path: PathBuf,
    },
    /// The JSON ends early.
    #[error(
        "manifest {} is truncated (the JSON stops at line {line}, column {column}; probably cut short by a crash or a full disk): {}",
        .path.display(), restart_advice(.path)
    )]
    Truncated {
        /// The manifest path.
        path: PathBuf,
        /// Line where the text ends (1-based).
        line: usize,
        /// Column where the text ends (1-based).
        column: usize,
    },
    /// The file is not JSON at all.
    #[error(
        "manifest {} is not valid JSON (line {line}, column {column}: {message}): {}",
        .path.display(), restart_advice(.path)
    )]
    Syntax {
        /// The manifest path.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// Valid JSON, but a field is missing or has the wrong type.
    #[error(
        "manifest {} has a missing or malformed field (line {line}, column {column}: {message}): {}",
        .path.display(), restart_advice(.path)
    )]
    Schema {
        /// The manifest path.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The `format` field is missing or is not [`FORMAT`].
    #[error(
        "{} is not an ftpseg manifest (format is {found}, expected \"{FORMAT}\"): move it away if it is someone else's file, or run again with --restart to start over",
        .path.display()
    )]
    WrongFormat {
        /// The manifest path.
        path: PathBuf,
        /// What was found instead, as JSON (or `missing`).
        found: String,
    },
    /// The `version` field is missing or is not [`VERSION`].
    #[error(
        "manifest {} has format version {found}, but this ftpseg reads only version {VERSION}: use the ftpseg that started this download, or run again with --restart to start over (the partial download {} was kept)",
        .path.display(), part_display(.path)
    )]
    UnsupportedVersion {
        /// The manifest path.
        path: PathBuf,
        /// The version found, as JSON (or `missing`).
        found: String,
    },
    /// A loaded manifest breaks an invariant (see [`Manifest::validate`]).
    #[error(
        "manifest {} is inconsistent ({reason}): {}",
        .path.display(), restart_advice(.path)
    )]
    Corrupt {
        /// The manifest path.
        path: PathBuf,
        /// Which invariant is broken.
        reason: String,
    },
    /// [`Manifest::save`] was asked to write a manifest that breaks an
    /// invariant; nothing was written.
    #[error(
        "refusing to save manifest {} ({reason}); the previous manifest is unchanged: this is a bug in ftpseg, please report it",
        .path.display()
    )]
    RefusedSave {
        /// The manifest path.
        path: PathBuf,
        /// Which invariant is broken.
        reason: String,
    },
    /// [`Manifest::new`] or [`Manifest::validate`] found a broken invariant.
    #[error("invalid download manifest ({reason}): this is a bug in ftpseg, please report it")]
    Invalid {
        /// Which invariant is broken.
        reason: String,
    },
    /// The URL given to [`Manifest::new`] (or found in a manifest being
    /// validated) carries a password. The URL itself is not kept, so the
    /// password cannot leak through this error either.
    #[error(
        "refusing to record a URL that contains a password in the download manifest: pass the URL with its password removed (this is a bug in ftpseg, please report it)"
    )]
    PasswordInUrl,
}

/// The remote file is not the one the manifest was made for.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Different URL.
    #[error("the manifest belongs to another URL (was {old}, now {new})")]
    Url {
        /// URL in the manifest.
        old: String,
        /// URL of this run.
        new: String,
    },
    /// Different size, or the size became known/unknown.
    #[error(
        "the remote file changed since the last run (size was {}, now {})",
        size_display(*.old), size_display(*.new)
    )]
    Size {
        /// Size in the manifest.
        old: Option<u64>,
        /// Size reported now.
        new: Option<u64>,
    },
    /// Different modification time.
    #[error("the remote file changed since the last run (modification time was {old}, now {new})")]
    Mdtm {
        /// MDTM in the manifest.
        old: String,
        /// MDTM reported now.
        new: String,
    },
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

    /// Load a manifest. `Ok(None)` when the file does not exist. Any other
    /// problem (unreadable, larger than [`MAX_MANIFEST_BYTES`], empty,
    /// truncated, invalid JSON, wrong `format`, other `version`, a missing or
    /// malformed field, broken invariants) is an error naming the path and
    /// the problem. Unknown fields are ignored. A leftover `<path>.tmp` is
    /// ignored.
    pub fn load(path: &Path) -> Result<Option<Manifest>, ManifestError> {
        let io_err = |source| ManifestError::Io {
            path: path.to_owned(),
            op: IoOp::Read,
            source,
        };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::other("not a regular file")));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
            });
        }
        // Never read more than the limit, even if the file grows meanwhile.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 1);
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                path: path.to_owned(),
                size: bytes.len() as u64,
            });
        }
        Self::parse(path, &bytes).map(Some)
    }

    /// Parse manifest text; `path` is used only in error messages.
    fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ManifestError::Empty {
                path: path.to_owned(),
            });
        }

        // First pass: check the JSON syntax and look only at `format` and
        // `version`, so that a newer manifest with different fields is
        // reported as "other version" rather than "missing field".
        #[derive(Deserialize)]
        struct Header {
            format: Option<serde_json::Value>,
            version: Option<serde_json::Value>,
        }
        let header: Header = match serde_json::from_slice(bytes) {
            Ok(header) => header,
            Err(e) => {
                return Err(match top_level_kind(bytes) {
                    // Valid JSON that is not an object has no `format`.
                    Some(kind) if e.classify() == serde_json::error::Category::Data => {
                        ManifestError::WrongFormat {
                            path: path.to_owned(),
                            found: format!("missing (the file holds {kind})"),
                        }
                    }
                    _ => json_error(path, &e),
                });
            }
        };
        match &header.format {
            Some(serde_json::Value::String(s)) if s == FORMAT => {}
            other => {
                return Err(ManifestError::WrongFormat {
                    path: path.to_owned(),
                    found: json_value_display(other.as_ref()),
                });
            }
        }
        match &header.version {
            Some(serde_json::Value::Number(n))
                if n.as_u64().is_some_and(|v| {
                    (u64::from(OLDEST_VERSION)..=u64::from(VERSION)).contains(&v)
                }) => {}
            other => {
                return Err(ManifestError::UnsupportedVersion {
                    path: path.to_owned(),
                    found: json_value_display(other.as_ref()),
                });
            }
        }

        // Second pass: the full structure.
        let mut manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| json_error(path, &e))?;
        if manifest.version < VERSION {
            // Version 1 had no chunk hashes: the same meaning, with nothing to verify.
            manifest.version = VERSION;
            manifest.chunk_size = 0;
            manifest.chunks.clear();
        }
        manifest
            .problem()
            .map_err(|reason| ManifestError::Corrupt {
                path: path.to_owned(),
                reason: reason.to_string(),
            })?;
        Ok(manifest)
    }

    /// Check every invariant:
    ///
    /// * `format == FORMAT`, `version == VERSION`;
    /// * `url` is not empty and has no password;
    /// * with `size == Some(n)`: `streamed` is `None`; the ranges are
    ///   non-empty (`start < end`), the first starts at 0, each starts where
    ///   the previous one ends (no gap, no overlap), the last ends at `n`
    ///   (no ranges at all when `n == 0`), and `start <= done <= end`;
    /// * with `size == None`: no ranges and `streamed` is `Some`.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.problem().map_err(|problem| match problem {
            Problem::Password => ManifestError::PasswordInUrl,
            Problem::Invalid(reason) => ManifestError::Invalid { reason },
        })
    }

    /// The first broken invariant, if any.
    fn problem(&self) -> Result<(), Problem> {
        let invalid = |reason: String| Err(Problem::Invalid(reason));
        if self.format != FORMAT {
            return invalid(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if self.version != VERSION {
            return invalid(format!("version is {}, expected {VERSION}", self.version));
        }
        if self.url.is_empty() {
            return invalid("the url is empty".to_owned());
        }
        if url_has_password(&self.url) {
            return Err(Problem::Password);
        }
        let Some(size) = self.size else {
            if !self.ranges.is_empty() {
                return invalid(format!(
                    "the size is unknown but there are {} ranges",
                    self.ranges.len()
                ));
            }
            if self.streamed.is_none() {
                return invalid("the size is unknown but streamed is missing".to_owned());
            }
            return Ok(());
        };
        if let Some(streamed) = self.streamed {
            return invalid(format!(
                "the size is known ({size}) but streamed is set ({streamed})"
            ));
        }
        let mut expected_start = 0u64;
        for (i, r) in self.ranges.iter().enumerate() {
            if r.end < r.start {
                return invalid(format!(
                    "range {i} ends before it starts (start {}, end {})",
                    r.start, r.end
                ));
            }
            if r.end == r.start {
                return invalid(format!("range {i} is empty (start = end = {})", r.start));
            }
            if r.start != expected_start {
                return invalid(if i == 0 {
                    format!("the first range starts at {}, not 0", r.start)
                } else if r.start > expected_start {
                    format!(
                        "gap between range {} (ends at {expected_start}) and range {i} (starts at {})",
                        i - 1,
                        r.start
                    )
                } else {
                    format!(
                        "range {i} (starts at {}) overlaps range {} (ends at {expected_start})",
                        r.start,
                        i - 1
                    )
                });
            }
            if r.done < r.start || r.done > r.end {
                return invalid(format!(
                    "range {i} has done {} outside [{}, {}]",
                    r.done, r.start, r.end
                ));
            }
            if r.end > size {
                return invalid(format!("range {i} ends at {}, past the size {size}", r.end));
            }
            expected_start = r.end;
        }
        if expected_start != size {
            return invalid(if self.ranges.is_empty() {
                format!("the size is {size} but there are no ranges")
            } else {
                format!("the ranges end at {expected_start}, not at the size {size}")
            });
        }
        self.chunk_problem(size)
    }

    /// Chunk invariants: a power-of-two chunk size, one entry per chunk, well-formed hashes,
    /// and a hash only for a chunk whose every byte is durable.
    fn chunk_problem(&self, size: u64) -> Result<(), Problem> {
        let invalid = |reason: String| Err(Problem::Invalid(reason));
        if self.chunk_size == 0 {
            if !self.chunks.is_empty() {
                return invalid("chunk hashes are present but chunk_size is 0".to_owned());
            }
            return Ok(());
        }
        if !self.chunk_size.is_power_of_two() || self.chunk_size < 1024 {
            return invalid(format!(
                "chunk_size {} is not a power of two of at least 1024",
                self.chunk_size
            ));
        }
        let expected = size.div_ceil(self.chunk_size);
        if self.chunks.len() as u64 != expected {
            return invalid(format!(
                "there are {} chunk entries, expected {expected}",
                self.chunks.len()
            ));
        }
        for (k, h) in self.chunks.iter().enumerate() {
            let Some(h) = h else { continue };
            if h.len() != CHUNK_HASH_HEX || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(format!("chunk {k} has a malformed hash"));
            }
            let from = k as u64 * self.chunk_size;
            let to = (from + self.chunk_size).min(size);
            if !self.is_durable(from, to) {
                return invalid(format!(
                    "chunk {k} has a hash but its bytes [{from}, {to}) are not all done"
                ));
            }
        }
        Ok(())
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

    /// Atomic, durable save: validate, serialize (pretty JSON), write
    /// `<path>.tmp` in the same folder, fsync it, rename it over `path`,
    /// fsync the folder. Sets `updated_unix` (only when the save succeeds).
    ///
    /// On error before the rename the old manifest is untouched and the
    /// `.tmp` is removed (best effort). If only the final folder fsync fails
    /// the new manifest is in place but may not survive a power loss; that is
    /// still reported as an error.
    pub fn save(&mut self, path: &Path) -> Result<(), ManifestError> {
        let refused = |reason: String| ManifestError::RefusedSave {
            path: path.to_owned(),
            reason,
        };
        self.problem().map_err(|p| refused(p.to_string()))?;

        let mut next = self.clone();
        next.updated_unix = now_unix();
        let mut text = serde_json::to_vec_pretty(&next)
            .map_err(|e| refused(format!("cannot serialize it: {e}")))?;
        text.push(b'\n');
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(refused(format!(
                "it would be {} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit; use fewer ranges",
                text.len()
            )));
        }

        let tmp = Self::tmp_path_for(path);
        let io_err = |op, source| ManifestError::Io {
            path: path.to_owned(),
            op,
            source,
        };
        if let Err(e) = write_synced(&tmp, &text) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(IoOp::Write, e));
        }
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(IoOp::Rename, e));
        }
        // The manifest now holds `next`, whatever the folder sync says.
        self.updated_unix = next.updated_unix;
        sync_folder_of(path).map_err(|e| io_err(IoOp::SyncFolder, e))
    }

    /// Remove the manifest and a leftover `<path>.tmp`, then fsync the folder.
    /// A missing file is fine.
    pub fn remove(path: &Path) -> Result<(), ManifestError> {
        let mut removed = false;
        for p in [path.to_owned(), Self::tmp_path_for(path)] {
            match fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ManifestError::Io {
                        path: path.to_owned(),
                        op: IoOp::Remove,
                        source,
                    });
                }
            }
        }
        if removed {
            sync_folder_of(path).map_err(|source| ManifestError::Io {
                path: path.to_owned(),
                op: IoOp::SyncFolder,
                source,
            })?;
        }
        Ok(())
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

/// A broken invariant found by `Manifest::problem`.
enum Problem {
    Password,
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Password => f.write_str("its url contains a password"),
            Problem::Invalid(reason) => f.write_str(reason),
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

/// Does the URL carry a password (`scheme://user:pass@host/...`)?
///
/// A deliberately simple, conservative parse: the authority is what follows
/// `://` (or the whole string without a scheme) up to the first `/`, `?` or
/// `#`; its userinfo is what precedes the last `@`; a `:` in the userinfo
/// separates a password (a `:` in a user name would be percent-encoded).
fn url_has_password(url: &str) -> bool {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => url.trim_start_matches('/'),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority
        .rfind('@')
        .is_some_and(|at| authority[..at].contains(':'))
}

/// Write `bytes` to a new (or truncated) file and fsync it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Fsync the folder holding `path`, making a rename or deletion in it durable.
/// File systems that cannot sync a folder (`EINVAL`, unsupported) are
/// accepted: there is nothing more to do on them.
fn sync_folder_of(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        match File::open(folder).and_then(|f| f.sync_all()) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        // Folders cannot be opened for syncing here; the rename is durable
        // once the file system commits its metadata.
        let _ = path;
        Ok(())
    }
}

/// Turn a serde_json error into the matching variant.
fn json_error(path: &Path, e: &serde_json::Error) -> ManifestError {
    use serde_json::error::Category;
    let path = path.to_owned();
    let (line, column) = (e.line(), e.column());
    match e.classify() {
        Category::Eof => ManifestError::Truncated { path, line, column },
        Category::Data => ManifestError::Schema {
            path,
            line,
            column,
            message: json_message(e),
        },
        Category::Syntax | Category::Io => ManifestError::Syntax {
            path,
            line,
            column,
            message: json_message(e),
        },
    }
}

/// The serde_json message without its " at line L column C" suffix, on one
/// line.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    one_line(message, 200)
}

/// What the top level of a JSON document is, unless it is an object.
fn top_level_kind(bytes: &[u8]) -> Option<&'static str> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => None,
        Some(b'[') => Some("a JSON array"),
        Some(b'"') => Some("a JSON string"),
        Some(b't' | b'f') => Some("a JSON boolean"),
        Some(b'n') => Some("JSON null"),
        _ => Some("a JSON number"),
    }
}

/// A JSON value from a manifest, shortened for an error message.
fn json_value_display(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(v) => one_line(&v.to_string(), 64),
    }
}

/// `s` with control characters replaced and cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// The partial download that goes with a manifest, for messages:
/// `x.iso.ftpseg` gives `x.iso.part`.
fn part_display(manifest: &Path) -> String {
    let name = manifest.as_os_str().to_string_lossy();
    match name.strip_suffix(SUFFIX) {
        Some(output) if !output.is_empty() => format!("{output}{PART_SUFFIX}"),
        _ => "(<output>.part)".to_owned(),
    }
}

/// The advice after a load failure.
fn restart_advice(manifest: &Path) -> String {
    format!(
        "the partial download {} was kept; run again with --restart to start over",
        part_display(manifest)
    )
}

/// The advice after a file-system failure.
fn io_advice(op: IoOp, manifest: &Path) -> String {
    match op {
        IoOp::Read => format!(
            "check its permissions, or run again with --restart to start over (the partial download {} was kept)",
            part_display(manifest)
        ),
        IoOp::Write | IoOp::Rename => {
            "check the free space and the permissions of its folder; the previous manifest, if any, is unchanged".to_owned()
        }
        IoOp::SyncFolder => {
            "the progress may not survive a power loss; check the file system and run again to resume".to_owned()
        }
        IoOp::Remove => "delete it by hand".to_owned(),
    }
}

/// A size for a message.
fn size_display(size: Option<u64>) -> String {
    size.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tempfile::TempDir;

    const URL: &str = "ftp://user@example.com/pub/a.iso";

    fn ranges(cuts: &[(u64, u64, u64)]) -> Vec<RangeRecord> {
        cuts.iter()
            .map(|&(start, end, done)| RangeRecord { start, end, done })
            .collect()
    }

    fn sample() -> Manifest {
        Manifest::new(
            URL,
            Some(1000),
            Some("20240102030405".to_owned()),
            ranges(&[(0, 400, 100), (400, 800, 800), (800, 1000, 800)]),
        )
        .unwrap()
    }

    fn dir() -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = Manifest::path_for(&dir.path().join("out.iso"));
        (dir, path)
    }

    fn load_text(text: &[u8]) -> Result<Option<Manifest>, ManifestError> {
        let (_dir, path) = dir();
        fs::write(&path, text).unwrap();
        Manifest::load(&path)
    }

    fn sample_json() -> serde_json::Value {
        serde_json::to_value(sample()).unwrap()
    }

    fn load_value(v: &serde_json::Value) -> Result<Option<Manifest>, ManifestError> {
        load_text(serde_json::to_string_pretty(v).unwrap().as_bytes())
    }

    fn invalid_reason(m: &Manifest) -> String {
        match m.validate() {
            Err(ManifestError::Invalid { reason }) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn path_for_appends() {
        assert_eq!(
            Manifest::path_for(Path::new("a.iso")),
            PathBuf::from("a.iso.ftpseg")
        );
        assert_eq!(
            Manifest::path_for(Path::new("/x/y/archive.tar.gz")),
            PathBuf::from("/x/y/archive.tar.gz.ftpseg")
        );
        assert_eq!(
            Manifest::path_for(Path::new("noext")),
            PathBuf::from("noext.ftpseg")
        );
        assert_eq!(
            Manifest::tmp_path_for(Path::new("a.iso.ftpseg")),
            PathBuf::from("a.iso.ftpseg.tmp")
        );
    }

    #[test]
    fn new_sets_fields() {
        let m = sample();
        assert_eq!(m.format, FORMAT);
        assert_eq!(m.version, VERSION);
        assert_eq!(m.streamed, None);
        assert!(m.created_unix > 1_600_000_000);
        assert_eq!(m.created_unix, m.updated_unix);
        assert_eq!(m.bytes_done(), 100 + 400);
        assert!(!m.is_complete());

        let s = Manifest::new(URL, None, None, vec![]).unwrap();
        assert_eq!(s.streamed, Some(0));
        assert_eq!(s.bytes_done(), 0);
        assert!(!s.is_complete());

        let z = Manifest::new(URL, Some(0), None, vec![]).unwrap();
        assert!(z.is_complete());
        assert_eq!(z.bytes_done(), 0);
    }

    #[test]
    fn range_record_helpers() {
        let r = RangeRecord::new(10, 20);
        assert_eq!(r.done, 10);
        assert_eq!(r.remaining(), 10);
        assert!(!r.is_complete());
        let r = RangeRecord {
            start: 10,
            end: 20,
            done: 20,
        };
        assert!(r.is_complete());
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.durable(), 10);
        // Invalid records never panic.
        let r = RangeRecord {
            start: 30,
            end: 20,
            done: 5,
        };
        assert_eq!(r.remaining(), 15);
        assert_eq!(r.durable(), 0);
    }

    #[test]
    fn complete_manifest() {
        let m = Manifest::new(URL, Some(10), None, ranges(&[(0, 5, 5), (5, 10, 10)])).unwrap();
        assert!(m.is_complete());
        assert_eq!(m.bytes_done(), 10);
    }

    #[test]
    fn refuses_password() {
        for url in [
            "ftp://user:secret@example.com/a.iso",
            "ftp://user:@example.com/a.iso",
            "ftp://:secret@example.com/",
            "FTP://user:secret@example.com",
            "ftp://user:p%40ss@host:21/a",
            "ftp://user:secret@host?x",
            "user:secret@example.com/a.iso",
            "//user:secret@example.com/a.iso",
        ] {
            let err = Manifest::new(url, Some(1), None, vec![RangeRecord::new(0, 1)]).unwrap_err();
            assert!(matches!(err, ManifestError::PasswordInUrl), "{url}");
            assert!(!err.to_string().contains("secret"));
            assert!(!format!("{err:?}").contains("secret"));
        }
        for url in [
            "ftp://user@example.com/a.iso",
            "ftp://example.com:2121/a.iso",
            "ftp://user@[::1]:21/a.iso",
            "ftp://example.com/dir/odd:name@x.iso",
            "ftp://example.com/a.iso?x=1:2@3",
            "ftp://example.com/a.iso#a:b@c",
        ] {
            assert!(
                Manifest::new(url, Some(1), None, vec![RangeRecord::new(0, 1)]).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn password_never_saved() {
        let (_dir, path) = dir();
        let mut m = sample();
        m.url = "ftp://u:hunter2@host/a".to_owned();
        assert!(matches!(m.validate(), Err(ManifestError::PasswordInUrl)));
        let err = m.save(&path).unwrap_err();
        assert!(matches!(err, ManifestError::RefusedSave { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        assert!(!path.exists());
        assert!(!Manifest::tmp_path_for(&path).exists());

        // A manifest file with a password is rejected on load too.
        let mut v = sample_json();
        v["url"] = "ftp://u:hunter2@host/a".into();
        let err = load_value(&v).unwrap_err();
        assert!(matches!(err, ManifestError::Corrupt { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn round_trip() {
        let (_dir, path) = dir();
        let mut m = sample();
        m.save(&path).unwrap();
        assert!(m.updated_unix >= m.created_unix);
        let loaded = Manifest::load(&path).unwrap().unwrap();
        assert_eq!(loaded, m);
        assert!(!Manifest::tmp_path_for(&path).exists());

        // Human readable: pretty printed, one field per line, ends in newline.
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n"));
        assert!(text.ends_with("}\n"));
        assert!(text.contains("\"format\": \"ftpseg-manifest\""));
        assert!(text.contains("\"version\": 2"));

        let mut s = Manifest::new(URL, None, None, vec![]).unwrap();
        s.streamed = Some(12345);
        s.save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap().unwrap(), s);
    }

    #[test]
    fn missing_file_is_none() {
        let (_dir, path) = dir();
        assert!(Manifest::load(&path).unwrap().is_none());
    }

    #[test]
    fn save_replaces_atomically() {
        let (_dir, path) = dir();
        let mut m = sample();
        m.save(&path).unwrap();
        m.ranges[0].done = 400;
        m.ranges[2].done = 1000;
        m.save(&path).unwrap();
        let loaded = Manifest::load(&path).unwrap().unwrap();
        assert_eq!(loaded.ranges[0].done, 400);
        assert_eq!(loaded, m);
        assert!(!Manifest::tmp_path_for(&path).exists());

        // Many saves in a row: never a partial file in between.
        for done in 400..=420 {
            m.ranges[1].done = m.ranges[1].end;
            m.ranges[0].done = done.min(m.ranges[0].end);
            m.save(&path).unwrap();
            assert_eq!(Manifest::load(&path).unwrap().unwrap(), m);
        }
    }

    #[test]
    fn failed_save_keeps_old_manifest() {
        let (_dir, path) = dir();
        let mut old = sample();
        old.save(&path).unwrap();
        let before = fs::read(&path).unwrap();

        // The .tmp cannot be created: it is a folder.
        let tmp = Manifest::tmp_path_for(&path);
        fs::create_dir(&tmp).unwrap();
        let mut new = old.clone();
        new.ranges[0].done = 399;
        let updated = new.updated_unix;
        let err = new.save(&path).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::Io {
                    op: IoOp::Write,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("out.iso.ftpseg"), "{err}");
        assert_eq!(new.updated_unix, updated);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(Manifest::load(&path).unwrap().unwrap(), old);

        // An invalid manifest is refused before anything is written.
        fs::remove_dir(&tmp).unwrap();
        let mut bad = old.clone();
        bad.ranges[1].start = 401;
        let err = bad.save(&path).unwrap_err();
        assert!(matches!(err, ManifestError::RefusedSave { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
        assert!(!tmp.exists());
    }

    #[test]
    fn leftover_tmp_is_ignored_and_cleaned() {
        let (_dir, path) = dir();
        let mut m = sample();
        m.save(&path).unwrap();
        // A crash between writing the .tmp and renaming it.
        let tmp = Manifest::tmp_path_for(&path);
        fs::write(&tmp, b"{\"format\": \"ftpseg-man").unwrap();
        assert_eq!(Manifest::load(&path).unwrap().unwrap(), m);
        // The next save overwrites it.
        m.save(&path).unwrap();
        assert!(!tmp.exists());
        assert_eq!(Manifest::load(&path).unwrap().unwrap(), m);
        // Only a .tmp and no manifest: nothing to resume.
        fs::remove_file(&path).unwrap();
        fs::write(&tmp, b"garbage").unwrap();
        assert!(Manifest::load(&path).unwrap().is_none());
        Manifest::remove(&path).unwrap();
        assert!(!tmp.exists());
    }

    #[test]
    fn remove_works_and_tolerates_missing() {
        let (_dir, path) = dir();
        Manifest::remove(&path).unwrap();
        let mut m = sample();
        m.save(&path).unwrap();
        fs::write(Manifest::tmp_path_for(&path), b"x").unwrap();
        Manifest::remove(&path).unwrap();
        assert!(!path.exists());
        assert!(!Manifest::tmp_path_for(&path).exists());
        assert!(Manifest::load(&path).unwrap().is_none());
        Manifest::remove(&path).unwrap();
    }

    #[test]
    fn relative_path_save() {
        // A bare file name syncs the current folder; must not fail on "".
        let (_dir, path) = dir();
        assert!(sync_folder_of(Path::new("x.ftpseg")).is_ok());
        assert!(sync_folder_of(&path).is_ok());
    }

    #[test]
    fn empty_file() {
        let err = load_text(b"").unwrap_err();
        assert!(matches!(err, ManifestError::Empty { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("out.iso.ftpseg"), "{msg}");
        assert!(msg.contains("out.iso.part"), "{msg}");
        assert!(msg.contains("--restart"), "{msg}");
        let err = load_text(b"  \n\t\n").unwrap_err();
        assert!(matches!(err, ManifestError::Empty { .. }), "{err}");
    }

    #[test]
    fn truncated_file() {
        let text = serde_json::to_string_pretty(&sample()).unwrap();
        for cut in [1, 10, text.len() / 2, text.len() - 1] {
            let err = load_text(&text.as_bytes()[..cut]).unwrap_err();
            assert!(
                matches!(err, ManifestError::Truncated { .. }),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().contains("truncated"));
        }
    }

    #[test]
    fn invalid_json() {
        let err = load_text(b"{\n  \"format\": \"ftpseg-manifest\",\n  oops\n}").unwrap_err();
        match &err {
            ManifestError::Syntax { line, column, .. } => {
                assert_eq!(*line, 3);
                assert!(*column > 0);
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("is not valid JSON (line 3, column"), "{msg}");
        assert!(!msg.contains(" at line "), "{msg}");
        assert!(msg.contains("--restart"), "{msg}");
        assert!(!msg.contains('\n'));

        // Trailing garbage, e.g. two manifests glued together.
        let mut text = serde_json::to_vec(&sample()).unwrap();
        text.extend_from_slice(b"}");
        let err = load_text(&text).unwrap_err();
        assert!(matches!(err, ManifestError::Syntax { .. }), "{err}");

        let err = load_text(b"\xff\xfe binary").unwrap_err();
        assert!(matches!(err, ManifestError::Syntax { .. }), "{err}");
    }

    #[test]
    fn not_an_object() {
        for text in [&b"[1, 2]"[..], b"\"x\"", b"42", b"null", b"true"] {
            let err = load_text(text).unwrap_err();
            assert!(matches!(err, ManifestError::WrongFormat { .. }), "{err}");
        }
    }

    #[test]
    fn duplicate_keys_rejected() {
        let text = serde_json::to_string(&sample())
            .unwrap()
            .replacen('{', "{\"size\": 5, ", 1);
        let err = load_text(text.as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::Schema { .. }), "{err}");
        assert!(err.to_string().contains("duplicate field"), "{err}");
        let text =
            serde_json::to_string(&sample())
                .unwrap()
                .replacen('{', "{\"format\": \"x\", ", 1);
        let err = load_text(text.as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::Schema { .. }), "{err}");
    }

    #[test]
    fn wrong_format() {
        let mut v = sample_json();
        v["format"] = "something-else".into();
        let err = load_value(&v).unwrap_err();
        assert!(matches!(err, ManifestError::WrongFormat { .. }), "{err}");
        assert!(err.to_string().contains("\"something-else\""), "{err}");

        v.as_object_mut().unwrap().remove("format");
        let err = load_value(&v).unwrap_err();
        assert!(matches!(err, ManifestError::WrongFormat { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        v["format"] = 7.into();
        let err = load_value(&v).unwrap_err();
        assert!(matches!(err, ManifestError::WrongFormat { .. }), "{err}");
    }

    #[test]
    fn forget_splits_ranges_and_keeps_other_done_bytes() {
        let mut m = Manifest::new(
            "ftp://h/f",
            Some(10_000),
            None,
            vec![
                RangeRecord {
                    start: 0,
                    end: 6000,
                    done: 6000,
                },
                RangeRecord {
                    start: 6000,
                    end: 10_000,
                    done: 9000,
                },
            ],
        )
        .unwrap();
        m.enable_chunks(1024);
        m.chunks[1] = Some("ab".repeat(32));
        m.chunks[2] = Some("cd".repeat(32));
        let before = m.bytes_done();
        m.forget(2048, 3072);
        m.validate().unwrap();
        assert_eq!(m.bytes_done(), before - 1024);
        assert_eq!(m.chunks[2], None, "the forgotten chunk's hash is dropped");
        assert!(m.chunks[1].is_some(), "its neighbour keeps its hash");
        // Forgetting across a range boundary, and past `done`.
        m.forget(5000, 9500);
        m.validate().unwrap();
        assert!(m.is_durable(0, 2048) && m.is_durable(3072, 5000));
        assert!(!m.is_durable(5000, 5001) && !m.is_durable(8999, 9000));
    }

    #[test]
    fn version_1_is_read_and_upgraded() {
        let mut v = sample_json();
        v["version"] = 1.into();
        let m = load_value(&v).unwrap().unwrap();
        assert_eq!(m.version, VERSION);
        assert_eq!(m.chunk_size, 0);
        assert!(m.chunks.is_empty());
    }

    #[test]
    fn chunk_hashes_must_be_well_formed_and_durable() {
        let mut m = Manifest::new(
            "ftp://h/f",
            Some(3000),
            None,
            vec![RangeRecord {
                start: 0,
                end: 3000,
                done: 2048,
            }],
        )
        .unwrap();
        m.enable_chunks(1024);
        assert_eq!(m.chunks.len(), 3);
        let h = "ab".repeat(32);
        m.chunks[1] = Some(h.clone());
        m.validate().unwrap();
        m.chunks[2] = Some(h.clone());
        assert!(m.validate().is_err(), "chunk 2 is not durable");
        m.chunks[2] = None;
        m.chunks[0] = Some("xyz".into());
        assert!(m.validate().is_err(), "malformed hash");
        m.chunks[0] = None;
        m.chunks.pop();
        assert!(m.validate().is_err(), "wrong entry count");
        m.enable_chunks(1000);
        assert!(m.validate().is_err(), "not a power of two");
    }

    #[test]
    fn wrong_version() {
        let mut v = sample_json();
        v["version"] = 3.into();
        // A newer format may have other fields: still "other version".
        v.as_object_mut().unwrap().remove("ranges");
        let err = load_value(&v).unwrap_err();
        match &err {
            ManifestError::UnsupportedVersion { found, .. } => assert_eq!(found, "3"),
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("version 3"), "{msg}");
        assert!(msg.contains("out.iso.part"), "{msg}");

        for bad in [
            serde_json::Value::from(0),
            "1".into(),
            1.5.into(),
            (-1).into(),
        ] {
            let mut v = sample_json();
            v["version"] = bad;
            let err = load_value(&v).unwrap_err();
            assert!(
                matches!(err, ManifestError::UnsupportedVersion { .. }),
                "{err}"
            );
        }
        let mut v = sample_json();
        v.as_object_mut().unwrap().remove("version");
        let err = load_value(&v).unwrap_err();
        assert!(
            matches!(err, ManifestError::UnsupportedVersion { .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_fields() {
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("size", "1000".into()),
            ("size", (-1).into()),
            ("created_unix", serde_json::Value::Null),
            ("ranges", serde_json::json!([{"start": 0, "end": 1000}])),
            ("ranges", serde_json::json!({"start": 0})),
            ("url", 5.into()),
        ];
        for (field, value) in cases {
            let mut v = sample_json();
            v[field] = value;
            let err = load_value(&v).unwrap_err();
            assert!(
                matches!(err, ManifestError::Schema { .. }),
                "{field}: {err}"
            );
        }
        // Numbers above u64::MAX are rejected, not wrapped.
        let text = serde_json::to_string_pretty(&sample())
            .unwrap()
            .replace("\"size\": 1000", "\"size\": 18446744073709551616");
        let err = load_text(text.as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::Schema { .. }), "{err}");
        // A missing field.
        let mut v = sample_json();
        v.as_object_mut().unwrap().remove("updated_unix");
        let err = load_value(&v).unwrap_err();
        assert!(err.to_string().contains("updated_unix"), "{err}");
    }

    #[test]
    fn unknown_fields_ignored_and_optional_fields() {
        let mut v = sample_json();
        v["future_field"] = serde_json::json!({"a": [1, 2, 3]});
        v["ranges"][0]["blake3"] = "abc".into();
        assert_eq!(load_value(&v).unwrap().unwrap().ranges, sample().ranges);

        // `mdtm` and `streamed` may be absent (read as null).
        let mut v = sample_json();
        v.as_object_mut().unwrap().remove("mdtm");
        v.as_object_mut().unwrap().remove("streamed");
        let m = load_value(&v).unwrap().unwrap();
        assert_eq!(m.mdtm, None);
        assert_eq!(m.streamed, None);
    }

    #[test]
    fn too_large_is_rejected() {
        let (_dir, path) = dir();
        let file = File::create(&path).unwrap();
        file.set_len(MAX_MANIFEST_BYTES + 1).unwrap();
        let err = Manifest::load(&path).unwrap_err();
        assert!(matches!(err, ManifestError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("too large"));
    }

    #[test]
    fn folder_instead_of_file() {
        let (_dir, path) = dir();
        fs::create_dir(&path).unwrap();
        let err = Manifest::load(&path).unwrap_err();
        assert!(
            matches!(err, ManifestError::Io { op: IoOp::Read, .. }),
            "{err}"
        );
    }

    #[test]
    fn gaps_and_overlaps() {
        let mut m = sample();
        m.ranges[1].start = 401;
        m.ranges[1].done = 800;
        assert!(invalid_reason(&m).contains("gap"));

        let mut m = sample();
        m.ranges[1].start = 399;
        assert!(invalid_reason(&m).contains("overlaps"));

        let mut m = sample();
        m.ranges[0].start = 1;
        m.ranges[0].done = 100;
        assert!(invalid_reason(&m).contains("not 0"));

        let mut m = sample();
        m.ranges[2].end = 999;
        assert!(invalid_reason(&m).contains("not at the size"));

        let mut m = sample();
        m.ranges[2].end = 1001;
        assert!(invalid_reason(&m).contains("past the size"));

        let mut m = sample();
        m.ranges[2].end = 700;
        assert!(invalid_reason(&m).contains("ends before it starts"));

        let mut m = sample();
        m.ranges.swap(0, 1);
        assert!(m.validate().is_err());

        let mut m = sample();
        m.ranges.pop();
        assert!(invalid_reason(&m).contains("not at the size"));

        // Zero-length ranges are refused.
        let r = Manifest::new(URL, Some(10), None, ranges(&[(0, 0, 0), (0, 10, 0)]));
        assert!(matches!(r, Err(ManifestError::Invalid { .. })));
        // size 0 means no ranges.
        assert!(Manifest::new(URL, Some(0), None, ranges(&[(0, 0, 0)])).is_err());
        assert!(Manifest::new(URL, Some(10), None, vec![]).is_err());

        // The same problems are caught on load.
        let mut v = sample_json();
        v["ranges"][1]["start"] = 401.into();
        let err = load_value(&v).unwrap_err();
        assert!(matches!(err, ManifestError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("gap"), "{err}");
    }

    #[test]
    fn done_out_of_range() {
        let mut m = sample();
        m.ranges[1].done = 399;
        assert!(invalid_reason(&m).contains("outside"));
        let mut m = sample();
        m.ranges[1].done = 801;
        assert!(invalid_reason(&m).contains("outside"));
        let mut m = sample();
        m.ranges[2].done = u64::MAX;
        assert!(invalid_reason(&m).contains("outside"));
    }

    #[test]
    fn size_none_rules() {
        let r = Manifest::new(URL, None, None, vec![RangeRecord::new(0, 10)]);
        assert!(matches!(r, Err(ManifestError::Invalid { .. })));

        let mut m = Manifest::new(URL, None, None, vec![]).unwrap();
        m.streamed = None;
        assert!(invalid_reason(&m).contains("streamed is missing"));

        let mut m = sample();
        m.streamed = Some(5);
        assert!(invalid_reason(&m).contains("streamed is set"));
    }

    #[test]
    fn other_invariants() {
        let mut m = sample();
        m.format = "x".to_owned();
        assert!(invalid_reason(&m).contains("format"));
        let mut m = sample();
        m.version = 1;
        assert!(invalid_reason(&m).contains("version"));
        assert!(matches!(
            Manifest::new("", Some(0), None, vec![]),
            Err(ManifestError::Invalid { .. })
        ));
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        let max = u64::MAX;
        let m = Manifest::new(
            URL,
            Some(max),
            None,
            ranges(&[(0, max / 2, max / 2), (max / 2, max, max)]),
        )
        .unwrap();
        assert!(m.is_complete());
        assert_eq!(m.bytes_done(), max);
        let (_dir, path) = dir();
        let mut m = m;
        m.save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap().unwrap(), m);
    }

    #[test]
    fn check_same_remote_cases() {
        let m = sample();
        let mdtm = Some("20240102030405");
        assert_eq!(m.check_same_remote(URL, Some(1000), mdtm), Ok(()));
        // None on either side: cannot compare, accepted.
        assert_eq!(m.check_same_remote(URL, Some(1000), None), Ok(()));
        let mut no_mdtm = m.clone();
        no_mdtm.mdtm = None;
        assert_eq!(no_mdtm.check_same_remote(URL, Some(1000), mdtm), Ok(()));
        assert_eq!(no_mdtm.check_same_remote(URL, Some(1000), None), Ok(()));

        let err = m.check_same_remote(URL, Some(2000), mdtm).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the remote file changed since the last run (size was 1000, now 2000)"
        );
        let err = m.check_same_remote(URL, None, mdtm).unwrap_err();
        assert_eq!(
            err,
            Mismatch::Size {
                old: Some(1000),
                new: None
            }
        );
        assert!(err.to_string().contains("size was 1000, now unknown"));

        let err = m
            .check_same_remote(URL, Some(1000), Some("20250101000000"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the remote file changed since the last run (modification time was 20240102030405, now 20250101000000)"
        );

        let other = "ftp://user@example.com/pub/b.iso";
        let err = m.check_same_remote(other, Some(1000), mdtm).unwrap_err();
        assert!(matches!(err, Mismatch::Url { .. }));
        assert!(err.to_string().contains("b.iso"));
        // URL is checked first, then size, then mdtm.
        let err = m.check_same_remote(other, Some(1), Some("x")).unwrap_err();
        assert!(matches!(err, Mismatch::Url { .. }));
        let err = m.check_same_remote(URL, Some(1), Some("x")).unwrap_err();
        assert!(matches!(err, Mismatch::Size { .. }));

        let s = Manifest::new(URL, None, None, vec![]).unwrap();
        assert_eq!(s.check_same_remote(URL, None, None), Ok(()));
        let err = s.check_same_remote(URL, Some(5), None).unwrap_err();
        assert!(err.to_string().contains("size was unknown, now 5"));
    }

    #[test]
    fn messages_are_one_line_and_name_the_path() {
        let path = PathBuf::from("/data/out.iso.ftpseg");
        let errors = vec![
            ManifestError::Io {
                path: path.clone(),
                op: IoOp::Read,
                source: io::Error::other("boom"),
            },
            ManifestError::Io {
                path: path.clone(),
                op: IoOp::Rename,
                source: io::Error::other("boom"),
            },
            ManifestError::TooLarge {
                path: path.clone(),
                size: 1 << 30,
            },
            ManifestError::Empty { path: path.clone() },
            ManifestError::Truncated {
                path: path.clone(),
                line: 3,
                column: 7,
            },
            Manifest::parse(&path, b"{\n\n  x").unwrap_err(),
            Manifest::parse(&path, b"{\"format\": \"a\nb\"}").unwrap_err(),
            ManifestError::UnsupportedVersion {
                path: path.clone(),
                found: "2".to_owned(),
            },
            ManifestError::Corrupt {
                path: path.clone(),
                reason: "gap".to_owned(),
            },
            ManifestError::RefusedSave {
                path: path.clone(),
                reason: "gap".to_owned(),
            },
        ];
        for err in errors {
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains("/data/out.iso.ftpseg"), "{msg}");
        }
        let msg = ManifestError::Syntax {
            path: path.clone(),
            line: 3,
            column: 7,
            message: "expected value".to_owned(),
        }
        .to_string();
        assert_eq!(
            msg,
            "manifest /data/out.iso.ftpseg is not valid JSON (line 3, column 7: expected value): the partial download /data/out.iso.part was kept; run again with --restart to start over"
        );
        // A manifest path without the usual suffix still gives a sensible hint.
        assert!(restart_advice(Path::new("weird")).contains("<output>.part"));
    }

    // ---- property tests ----

    /// No regression files are written next to the sources.
    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn arb_len() -> impl Strategy<Value = u64> {
        prop_oneof![1..=16u64, 1..=u64::MAX / 64]
    }

    /// A valid range list, with its size.
    fn arb_ranges() -> impl Strategy<Value = (u64, Vec<RangeRecord>)> {
        prop::collection::vec((arb_len(), any::<u64>()), 0..12).prop_map(|parts| {
            let mut start = 0u64;
            let mut out = Vec::with_capacity(parts.len());
            for (len, pick) in parts {
                let end = start + len;
                let done = start + pick % (len + 1);
                out.push(RangeRecord { start, end, done });
                start = end;
            }
            (start, out)
        })
    }

    fn arb_url() -> impl Strategy<Value = String> {
        "ftp://([a-z]{1,8}@)?[a-z0-9.-]{1,12}(:[0-9]{1,5})?/[ -~]{0,24}"
    }

    fn arb_mdtm() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[0-9]{14}(\\.[0-9]{1,3})?|\\PC{0,12}")
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            arb_url(),
            arb_mdtm(),
            arb_ranges(),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(url, mdtm, (size, ranges), streamed, n, created)| {
                let mut m = if streamed {
                    let mut m = Manifest::new(&url, None, mdtm, vec![]).unwrap();
                    m.streamed = Some(n);
                    m
                } else {
                    Manifest::new(&url, Some(size), mdtm, ranges).unwrap()
                };
                m.created_unix = created;
                m
            })
    }

    #[derive(Clone, Debug)]
    enum Field {
        Start,
        End,
        Done,
    }

    #[derive(Clone, Debug)]
    enum Change {
        Set(u64),
        Add(u64),
        Sub(u64),
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        prop_oneof![
            any::<u64>().prop_map(Change::Set),
            (0..3u64).prop_map(Change::Add),
            (0..3u64).prop_map(Change::Sub),
            Just(Change::Set(0)),
            Just(Change::Set(u64::MAX)),
        ]
    }

    fn apply(v: u64, c: &Change) -> u64 {
        match *c {
            Change::Set(n) => n,
            Change::Add(n) => v.wrapping_add(n),
            Change::Sub(n) => v.wrapping_sub(n),
        }
    }

    proptest! {
        #![proptest_config(config(64))]

        #[test]
        fn prop_save_load_round_trip(m in arb_manifest()) {
            let (_dir, path) = dir();
            let mut m = m;
            m.save(&path).unwrap();
            let loaded = Manifest::load(&path).unwrap().unwrap();
            prop_assert_eq!(&loaded, &m);
            prop_assert!(!Manifest::tmp_path_for(&path).exists());
            // Saving what was loaded gives the same thing again.
            let mut again = loaded.clone();
            again.save(&path).unwrap();
            let reloaded = Manifest::load(&path).unwrap().unwrap();
            prop_assert_eq!(&reloaded, &again);
            prop_assert_eq!(reloaded.ranges, m.ranges);
        }

        #[test]
        fn prop_load_arbitrary_bytes_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..512)
        ) {
            let _ = load_text(&bytes);
        }

        #[test]
        fn prop_load_mangled_json_never_panics(
            m in arb_manifest(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let text = serde_json::to_vec_pretty(&m).unwrap();
            // Truncated anywhere before the closing brace: always an error.
            let cut = cut.index(text.len());
            prop_assert!(load_text(&text[..cut]).is_err());
            // One byte replaced: loads or fails, never panics; if it loads,
            // it is valid.
            let mut mangled = text.clone();
            mangled[flip.index(text.len())] = byte;
            if let Ok(Some(loaded)) = load_text(&mangled) {
                prop_assert!(loaded.validate().is_ok());
            }
        }
    }

    proptest! {
        #![proptest_config(config(512))]

        #[test]
        fn prop_arbitrary_text_parse_never_panics(s in "\\PC{0,200}") {
            let _ = Manifest::parse(Path::new("x.ftpseg"), s.as_bytes());
        }

        #[test]
        fn prop_mutated_ranges_valid_or_rejected(
            (size, ranges) in arb_ranges(),
            index in any::<prop::sample::Index>(),
            field in prop_oneof![Just(Field::Start), Just(Field::End), Just(Field::Done)],
            change in arb_change(),
            mutate_size in any::<bool>(),
        ) {
            let mut m = Manifest::new(URL, Some(size), None, ranges).unwrap();
            if mutate_size || m.ranges.is_empty() {
                m.size = Some(apply(size, &change));
            } else {
                let i = index.index(m.ranges.len());
                let r = &mut m.ranges[i];
                match field {
                    Field::Start => r.start = apply(r.start, &change),
                    Field::End => r.end = apply(r.end, &change),
                    Field::Done => r.done = apply(r.done, &change),
                }
            }
            // Never panics, whatever the outcome.
            let done = m.bytes_done();
            let _ = m.is_complete();
            for r in &m.ranges {
                let _ = (r.remaining(), r.is_complete(), r.durable());
            }
            match m.validate() {
                Ok(()) => {
                    // Still valid: the invariants really hold.
                    let size = m.size.unwrap();
                    prop_assert!(done <= size);
                    let mut at = 0;
                    for r in &m.ranges {
                        prop_assert_eq!(r.start, at);
                        prop_assert!(r.start < r.end);
                        prop_assert!(r.start <= r.done && r.done <= r.end);
                        at = r.end;
                    }
                    prop_assert_eq!(at, size);
                    let remaining: u64 = m.ranges.iter().map(RangeRecord::remaining).sum();
                    prop_assert_eq!(done + remaining, size);
                }
                Err(e) => {
                    prop_assert!(matches!(e, ManifestError::Invalid { .. }), "{}", e);
                    prop_assert!(!e.to_string().contains('\n'));
                }
            }
        }

        #[test]
        fn prop_check_same_remote_reflexive(m in arb_manifest()) {
            prop_assert_eq!(
                m.check_same_remote(&m.url, m.size, m.mdtm.as_deref()),
                Ok(())
            );
        }
    }
}
