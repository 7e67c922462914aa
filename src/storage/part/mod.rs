//! The output file: `<out>.part`, truly preallocated, written at offsets, flushed in order.
//!
//! * Space is checked first ("need X, have Y"), then reserved with `fallocate(2)`, so no write
//!   runs out of space halfway. Only where the filesystem does not support `fallocate`
//!   (EOPNOTSUPP) does the file fall back to a sparse file, after the same space check, with a
//!   warning.
//! * Connections write their ranges through a [`PartWriter`], with `splice` from a pipe the
//!   data connection filled or with `pwrite` from a buffer, and start their write-back early;
//!   the engine guarantees that no two writers ever write overlapping bytes.
//! * [`PartFile::flush`] makes every written byte durable (`fdatasync`: the file's written data and
//!   the extent conversions that make it readable after a crash); the engine calls it before
//!   the manifest claims those bytes. The file is never mapped into memory (why:
//!   docs/architecture.md, "No memory map").
//! * [`PartFile::commit`] flushes everything, renames `<out>.part` to `<out>` and syncs the folder.
//! * [`Storage::Discard`] ([`PartFile::discard`], `ftpseg bench --discard`): the same interface
//!   over no file at all. Writes are dropped (spliced bytes go to `/dev/null`, which consumes a
//!   pipe's pages without copying them), nothing is flushed, hashed or committed, so a run
//!   measures the server and the network alone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::StorageError;
use crate::ui::human_bytes;

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
        })
    }

    fn prepare(path: &Path, file: File, len: u64) -> Result<PartFile, StorageError> {
        let allocation = reserve(path, &file, len)?;
        Ok(PartFile {
            path: path.to_owned(),
            target: Target::File(Arc::new(file)),
            len,
            allocation,
        })
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
        PartWriter {
            target: self.target.clone(),
            no_splice: Arc::new(AtomicBool::new(false)),
            one_at_a_time: Arc::new(std::sync::Mutex::new(())),
        }
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

/// The most one `splice` moves from a connection's pipe into the file: each call is one buffered
/// write, and ext4 sizes a write's page-cache folios by its length, so the writes stay small
/// while the pipe itself stays large (fewer wake-ups per byte). Why this size:
/// docs/architecture.md, "Writes into the page cache of at most 128 KiB".
pub const MAX_SPLICE_WRITE: usize = 128 << 10;

/// Who is shown each piece of the file just written, `(offset, bytes)`, if anyone (see
/// [`PartWriter::write_from_pipe`]).
pub type ShowWritten<'a> = Option<&'a mut dyn FnMut(u64, &[u8])>;

/// The writers' handle on the `.part` file: each connection writes its own byte ranges at
/// their offsets and starts their write-back. Shared by all connections (cheap to clone).
/// Over [`Storage::Discard`] it drops what it is given.
#[derive(Clone)]
pub struct PartWriter {
    target: Target,
    /// Set when the file system refused `splice` into the file: readers use a buffer then.
    no_splice: Arc<AtomicBool>,
    /// Held around each write into the file. ext4 (like most file systems) serialises buffered
    /// writes to one file on the inode's lock, and a writer that finds it taken spins while the
    /// holder copies; waiting here sleeps instead (docs/architecture.md, "Decisions").
    one_at_a_time: Arc<std::sync::Mutex<()>>,
}

impl PartWriter {
    /// The file's write turn (see `one_at_a_time`); a poisoned lock guards nothing.
    fn turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `buf` at offset `at` of the file (`pwrite`) into the page cache: no page fault per
    /// page, and an error instead of SIGBUS if the disk fails. Only the owner of
    /// `[at, at + buf.len())` calls it.
    pub fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match &self.target {
            Target::File(file) => {
                let _turn = self.turn();
                file.write_all_at(buf, at)
            }
            Target::Discard(_) => Ok(()),
        }
    }

    /// Whether readers may fill a pipe for [`PartWriter::write_from_pipe`]: until the file
    /// system refuses `splice` into this file once.
    pub fn splices(&self) -> bool {
        !self.no_splice.load(Ordering::Relaxed)
    }

    /// Moves exactly `len` bytes that [`crate::ftp::Session::splice_data`] put into `pipe` to
    /// offset `at` of the file (`splice`: one copy, into the page cache). Only the owner of
    /// `[at, at + len)` calls it. A file system that cannot splice into files (some FUSE
    /// ones) gets the bytes through `buf` instead, and no more splicing ([`Self::splices`]).
    /// After an error the pipe may still hold bytes: drop it. Over [`Storage::Discard`] the
    /// bytes are spliced into `/dev/null`, which releases the pipe's pages without a copy.
    ///
    /// `written`, if given, is shown every piece just written, read back from the page cache
    /// right away (at most [`MAX_SPLICE_WRITE`] bytes, still in the CPU's cache): the engine
    /// hashes them there instead of reading them back cold later. A piece that cannot be read
    /// back is not shown (the next one then does not follow on, which the hashing notices).
    pub fn write_from_pipe(
        &self,
        pipe: &crate::ftp::pipe::Pipe,
        len: usize,
        at: u64,
        buf: &mut [u8],
        mut written: ShowWritten<'_>,
    ) -> io::Result<()> {
        use rustix::io::Errno;
        use rustix::pipe::{SpliceFlags, splice};
        // Only a file's page cache cares about the write size; /dev/null takes the pipe whole.
        let (file, mut off, most) = match &self.target {
            // Pieces to show must fit `buf`.
            Target::File(file) if written.is_some() => {
                (file, Some(at), MAX_SPLICE_WRITE.min(buf.len()))
            }
            Target::File(file) => (file, Some(at), MAX_SPLICE_WRITE),
            Target::Discard(null) => (null, None, usize::MAX),
        };
        let mut left = len;
        while left > 0 {
            let moved = {
                // The turn is held for the write only, not while the piece is hashed.
                let _turn = off.is_some().then(|| self.turn());
                splice(
                    pipe.read_end(),
                    None,
                    &**file,
                    off.as_mut(),
                    left.min(most),
                    SpliceFlags::MOVE,
                )
            };
            match moved {
                Ok(0) => return Err(pipe_ran_dry()),
                Ok(n) => {
                    left -= n;
                    if let (Some(show), Some(end)) = (written.as_mut(), off) {
                        use std::os::unix::fs::FileExt;
                        let from = end - n as u64;
                        if file.read_exact_at(&mut buf[..n], from).is_ok() {
                            show(from, &buf[..n]);
                        }
                    }
                }
                Err(Errno::INTR) => {}
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    self.no_splice.store(true, Ordering::Relaxed);
                    return self.write_rest_of_pipe(pipe, left, off.unwrap_or(at), buf, written);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The rest of [`PartWriter::write_from_pipe`] when splicing into the file is refused:
    /// `left` bytes from the pipe through `buf`, written at `at`.
    fn write_rest_of_pipe(
        &self,
        pipe: &crate::ftp::pipe::Pipe,
        mut left: usize,
        mut at: u64,
        buf: &mut [u8],
        mut written: ShowWritten<'_>,
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        while left > 0 {
            let want = left.min(buf.len());
            let n = match rustix::io::read(pipe.read_end(), &mut buf[..want]) {
                Ok(0) => return Err(pipe_ran_dry()),
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Target::File(file) = &self.target {
                file.write_all_at(&buf[..n], at)?;
                if let Some(show) = written.as_mut() {
                    show(at, &buf[..n]);
                }
            }
            left -= n;
            at += n as u64;
        }
        Ok(())
    }

    /// Starts writing `[start, end)` back to disk without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the next checkpoint's flush, and the last
    /// one before the file is renamed, find little left to write. A failure only means the
    /// kernel writes these pages back later, as it would anyway.
    pub fn write_back(&self, start: u64, end: u64) {
        let Target::File(file) = &self.target else {
            return;
        };
        if end <= start {
            return;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on an open descriptor, no memory passed.
        let _ = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                start as libc::off64_t,
                (end - start) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }
}

fn pipe_ran_dry() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the pipe from the data connection ran dry",
    )
}

#[cfg(test)]
mod tests;
