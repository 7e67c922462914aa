//! The manifest on disk: [`Manifest::load`] (bounded, parsed, upgraded, validated),
//! [`Manifest::save`] (write a temporary file, fsync, rename, fsync the folder) and
//! [`Manifest::remove`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::Deserialize;

use super::error::{json_error, json_value_display, top_level_kind};
use super::{
    FORMAT, IoOp, MAX_MANIFEST_BYTES, Manifest, ManifestError, OLDEST_VERSION, VERSION, now_unix,
};

impl Manifest {
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
    pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest, ManifestError> {
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
pub(super) fn sync_folder_of(path: &Path) -> io::Result<()> {
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
