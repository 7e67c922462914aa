//! The upload manifest `<local>.ftpseg-put`: a versioned JSON record of an unfinished upload
//! (what was being written where, the local file's chunk hashes, the parallel pieces and their
//! acknowledgements), with its checks, load and atomic save. The format is in docs/upload.md.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::Piece;
use crate::error::Error;
use crate::integrity::verify;

/// `format` of an upload manifest.
pub const MANIFEST_FORMAT: &str = "ftpseg-upload";
/// Version of the upload manifest format written by this ftpseg.
pub const MANIFEST_VERSION: u32 = 1;
/// Appended to the local file's name for its upload manifest.
pub const MANIFEST_SUFFIX: &str = ".ftpseg-put";

/// The upload manifest's path for a local file: `<local>.ftpseg-put`, beside it.
pub fn manifest_path(local: &Path) -> PathBuf {
    let mut s = local.as_os_str().to_owned();
    s.push(MANIFEST_SUFFIX);
    PathBuf::from(s)
}

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
