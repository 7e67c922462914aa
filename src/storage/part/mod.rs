//! The output file: `<out>.part`, truly preallocated, written at offsets, flushed in order.
//!
//! * Space is checked first ("need X, have Y"), then reserved with `fallocate(2)`, so no write
//!   runs out of space halfway. Only where the filesystem does not support `fallocate`
//!   (EOPNOTSUPP) does the file fall back to a sparse file, after the same space check, with a
//!   warning.
//! * [`PartFile::with_store`] settles how bytes get in ([`Store`], from `--io`): received
//!   straight into a memory map of the file ([`map`]), spliced from a pipe the data connection
//!   filled, or written with `pwrite` from a buffer. Each connection writes its ranges through
//!   its own [`Receiver`] ([`writer`]); the engine sees only where to receive and how much
//!   came, never which store it has, and guarantees that no two writers write the same bytes.
//! * [`PartFile::flush`] makes every written byte durable (`fdatasync`: the file's written data,
//!   mapped pages included, and the extent conversions that make it readable after a crash);
//!   the engine calls it before the manifest claims those bytes.
//! * [`PartFile::commit`] flushes everything, renames `<out>.part` to `<out>` and syncs the folder.
//! * [`Storage::Discard`] ([`PartFile::discard`], `ftpseg bench --discard`): the same interface
//!   over no file at all. Writes are dropped (spliced bytes go to `/dev/null`, which consumes a
//!   pipe's pages without copying them), nothing is flushed, hashed or committed, so a run
//!   measures the server and the network alone.

mod map;
mod writer;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StorageError;
use super::io::{Case, Io, NoMap, Store};
use crate::ui::human_bytes;
use map::Map;
pub use writer::{Landing, PartWriter, Receiver, ShowWritten};

/// `<out>.part`: where the bytes go until the download is complete.
pub fn part_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Where a download's bytes go: a choice made once, when the download starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// `<out>.part` with its manifest, renamed to `<out>` when complete.
    #[default]
    File,
    /// Nowhere: every byte is received and counted, then dropped. No `.part`, no manifest,
    /// no hashing, no commit (`ftpseg bench --discard`).
    Discard,
}

/// What the writers write into.
#[derive(Clone)]
enum Target {
    /// The `.part` file.
    File(Arc<File>),
    /// `/dev/null` (opened for writing): the sink of [`Storage::Discard`].
    Discard(Arc<File>),
}

/// How the file's blocks were reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// `fallocate` reserved every block: no write can run out of space.
    Reserved,
    /// The filesystem cannot preallocate; the file is sparse (space was checked, not reserved).
    Sparse,
}

/// The preallocated `.part` file of one download (or, for
/// [`Storage::Discard`], the sink that stands in for it).
pub struct PartFile {
    path: PathBuf,
    target: Target,
    len: u64,
    allocation: Allocation,
    store: Store,
    /// The shared map of the file, for [`Store::Mmap`].
    map: Option<Arc<Map>>,
}

impl PartFile {
    /// Creates `path` (truncating an untrusted leftover) with `len` bytes reserved.
    pub fn create(path: &Path, len: u64) -> Result<PartFile, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| StorageError::io("cannot create", path, e))?;
        Self::prepare(path, file, len)
    }

    /// Opens an existing `path` that must already be `len` bytes long (a resumed download), makes
    /// sure its blocks are reserved.
    pub fn open_existing(path: &Path, len: u64) -> Result<PartFile, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io("cannot open", path, e))?;
        let actual = file
            .metadata()
            .map_err(|e| StorageError::io("cannot inspect", path, e))?
            .len();
        if actual != len {
            return Err(StorageError::io(
                "cannot resume into",
                path,
                io::Error::other(format!(
                    "it is {actual} bytes long but the manifest says {len}; \
                     run with --restart to start over"
                )),
            ));
        }
        Self::prepare(path, file, len)
    }

    /// The sink of [`Storage::Discard`] for a download of `len` bytes: no file is created;
    /// written bytes are dropped, flushes and the commit do nothing, and there is no hash.
    pub fn discard(len: u64) -> Result<PartFile, StorageError> {
        let path = PathBuf::from("/dev/null");
        let null = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("cannot open", &path, e))?;
        Ok(PartFile {
            path,
            target: Target::Discard(Arc::new(null)),
            len,
            allocation: Allocation::Reserved,
            store: Store::Splice,
            map: None,
        })
    }

    fn prepare(path: &Path, file: File, len: u64) -> Result<PartFile, StorageError> {
        let allocation = reserve(path, &file, len)?;
        Ok(PartFile {
            path: path.to_owned(),
            target: Target::File(Arc::new(file)),
            len,
            allocation,
            store: Store::Splice,
            map: None,
        })
    }

    /// Settles how bytes get into the file: `io` for this file. An explicit `--io mmap` the file cannot have (sparse, or a kernel that
    /// cannot populate a map) is an error ([`StorageError::MapRefused`], exit 8); `auto` never
    /// maps. A discarded download keeps its sink.
    pub fn with_store(mut self, io: Io) -> Result<PartFile, StorageError> {
        let Target::File(file) = &self.target else {
            return Ok(self);
        };
        let case = Case {
            allocation: self.allocation,
            len: self.len,
        };
        let refused = |why: String| StorageError::MapRefused {
            path: self.path.clone(),
            why,
        };
        let store = match io.store_for(case) {
            Ok(store) => store,
            Err(NoMap::Sparse) => {
                return Err(refused(
                    "this file system cannot preallocate it, and writing a sparse file through \
                     a map turns a full disk into a crash"
                        .into(),
                ));
            }
        };
        if store == Store::Mmap {
            let map = Map::new(file, self.len).map_err(|e| refused(e.to_string()))?;
            self.map = Some(Arc::new(map));
        }
        self.store = store;
        Ok(self)
    }

    /// How bytes get into the file ([`PartFile::with_store`]).
    pub fn store(&self) -> Store {
        self.store
    }

    /// Length of the file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// How the blocks were reserved.
    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    /// Where the bytes go (`/dev/null` for [`Storage::Discard`]), for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle the connections write through. Cheap to clone.
    pub fn writer(&self) -> PartWriter {
        PartWriter::new(self.target.clone(), self.store, self.map.clone())
    }

    /// Makes every byte written so far durable: `fdatasync` writes the dirty pages (most are
    /// already under way, see [`PartWriter::write_back`]), waits for them, and commits the
    /// journal entries that turn the preallocated extents into written ones. Nothing for a
    /// discarded download.
    pub fn flush(&self) -> Result<(), StorageError> {
        match &self.target {
            Target::File(file) => file
                .sync_data()
                .map_err(|e| StorageError::io("cannot flush", &self.path, e)),
            Target::Discard(_) => Ok(()),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset` with `pread`. A
    /// discarded download has nothing to read back: an error.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        use std::os::unix::fs::FileExt;
        match &self.target {
            Target::File(file) => file.read_exact_at(buf, offset),
            Target::Discard(_) => Err(io::Error::other("the bytes were discarded")),
        }
        .map_err(|e| StorageError::io("cannot read back", &self.path, e))
    }

    /// BLAKE3 of the whole file in one pass (see [`crate::integrity::verify::hash_file`]), for files
    /// without chunk hashes. `None` for a discarded download: there is nothing to hash.
    pub fn blake3(&self) -> Result<Option<blake3::Hash>, StorageError> {
        match &self.target {
            Target::File(_) => crate::integrity::verify::hash_file(&self.path)
                .map(Some)
                .map_err(|e| StorageError::io("cannot read back", &self.path, e)),
            Target::Discard(_) => Ok(None),
        }
    }

    /// Flushes every byte and the file's metadata, renames the file to `output`, then syncs
    /// the folder so the rename itself is durable. Without `force`, a file that appeared at
    /// `output` during the download is not replaced (`RENAME_NOREPLACE`). A discarded
    /// download has nothing to commit.
    pub fn commit(self, output: &Path, force: bool) -> Result<(), StorageError> {
        let Target::File(file) = &self.target else {
            return Ok(());
        };
        file.sync_all()
            .map_err(|e| StorageError::io("cannot sync", &self.path, e))?;
        rename(&self.path, output, force)?;
        sync_parent(output).map_err(|e| StorageError::io("cannot sync the folder of", output, e))
    }
}

/// Checks free space, then reserves `len` bytes for `file` with `fallocate`.
fn reserve(path: &Path, file: &File, len: u64) -> Result<Allocation, StorageError> {
    if len == 0 {
        return Ok(Allocation::Reserved);
    }
    let meta = file
        .metadata()
        .map_err(|e| StorageError::io("cannot inspect", path, e))?;
    let already = meta.blocks().saturating_mul(512).min(len);
    let need = len - already;
    let vfs = rustix::fs::fstatvfs(file)
        .map_err(|e| StorageError::io("cannot read free space for", path, e.into()))?;
    let have = vfs.f_bavail.saturating_mul(vfs.f_frsize);
    if need > have {
        return Err(StorageError::NoSpace {
            path: path.to_owned(),
            need: human_bytes(need),
            have: human_bytes(have),
        });
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(Allocation::Reserved),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            file.set_len(len)
                .map_err(|e| StorageError::io("cannot size", path, e))?;
            Ok(Allocation::Sparse)
        }
        Err(e) if e == rustix::io::Errno::NOSPC => Err(StorageError::NoSpace {
            path: path.to_owned(),
            need: human_bytes(need),
            have: human_bytes(have),
        }),
        Err(e) => Err(StorageError::io("cannot preallocate", path, e.into())),
    }
}

/// Renames `from` to `to`; without `force`, refuses to replace an existing `to`.
pub fn rename(from: &Path, to: &Path, force: bool) -> Result<(), StorageError> {
    let result = if force {
        std::fs::rename(from, to)
    } else {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            from,
            rustix::fs::CWD,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .or_else(|e| {
            if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS {
                // The filesystem cannot rename without replacing: check, then rename.
                if to.exists() {
                    Err(rustix::io::Errno::EXIST)
                } else {
                    rustix::fs::rename(from, to)
                }
            } else {
                Err(e)
            }
        })
        .map_err(std::io::Error::from)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(StorageError::Exists(to.to_owned()))
        }
        Err(e) => Err(StorageError::io(
            "cannot rename the finished download to",
            to,
            e,
        )),
    }
}

/// Fsyncs the folder holding `path`, so a rename or removal in it survives a crash.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests;
