//! The local file of an upload: its size and modification time, the BLAKE3 hashes of its
//! chunks, and the check that bytes already uploaded are still what the manifest recorded.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

use super::plan::chunks_overlapping;
use crate::error::Error;
use crate::integrity::verify;

/// The local file as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LocalState {
    pub(super) size: u64,
    /// Modification time, ns since the epoch (0 when unknown).
    pub(super) mtime_ns: u64,
}

/// The local file as it is now; an error when it is not a regular file.
pub(super) fn local_state(local: &Path) -> Result<LocalState, Error> {
    let meta = std::fs::metadata(local).map_err(|e| Error::io("cannot read", local, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            "cannot upload",
            local,
            std::io::Error::other("not a regular file"),
        ));
    }
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok(LocalState {
        size: meta.len(),
        mtime_ns,
    })
}

/// BLAKE3 chaining values (hex) of the chunks `which` of `file` (blocking).
pub(super) fn hash_chunks(
    file: &File,
    size: u64,
    chunk_size: u64,
    which: std::ops::Range<u64>,
) -> std::io::Result<Vec<String>> {
    let mut buf = vec![0u8; 1 << 20];
    which
        .map(|k| {
            let (from, to) = verify::chunk_range(k, chunk_size, size);
            verify::hash_chunk(from, to, &mut buf, |b, at| file.read_exact_at(b, at))
                .map(|cv| verify::to_hex(&cv))
        })
        .collect()
}

/// The offset of the first chunk overlapping one of `regions` whose hash is no longer the
/// `recorded` one; `None` when all still match (blocking).
pub(super) fn first_changed_chunk(
    file: &File,
    size: u64,
    chunk_size: u64,
    recorded: &[String],
    regions: &[(u64, u64)],
) -> std::io::Result<Option<u64>> {
    for &(from, to) in regions {
        for k in chunks_overlapping(from, to, chunk_size) {
            let now = hash_chunks(file, size, chunk_size, k..k + 1)?;
            if now[0] != recorded[k as usize] {
                return Ok(Some(k * chunk_size));
            }
        }
    }
    Ok(None)
}

/// Runs blocking file work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("background task failed: {e}")))
}
