//! The output file: `<out>.part`, truly preallocated, memory-mapped, flushed in order.
//!
//! * Space is checked first ("need X, have Y"), then reserved with `fallocate(2)`, so a write
//!   through the map can never fault with SIGBUS on a full disk. Only where the filesystem does
//!   not support `fallocate` (EOPNOTSUPP) does the file fall back to a sparse file, after the same
//!   space check, with a warning.
//! * Connections write their ranges straight from the socket into the map ([`SharedMap`]); the
//!   engine guarantees that no two writers ever hold overlapping slices.
//! * [`PartFile::flush_range`] makes a range durable (`msync`); the engine calls it before the
//!   manifest claims those bytes.
//! * [`PartFile::commit`] flushes everything, renames `<out>.part` to `<out>` and syncs the folder.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, human_bytes};

/// `<out>.part`: where the bytes go until the download is complete.
pub fn part_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// How the file's blocks were reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// `fallocate` reserved every block: no write can run out of space.
    Reserved,
    /// The filesystem cannot preallocate; the file is sparse (space was checked, not reserved).
    Sparse,
}

/// The preallocated, memory-mapped `.part` file of one download.
pub struct PartFile {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    map: Option<Arc<MmapRaw>>,
    allocation: Allocation,
}

impl PartFile {
    /// Creates `path` (truncating an untrusted leftover) with `len` bytes reserved, and maps it.
    pub fn create(path: &Path, len: u64) -> Result<PartFile, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io("cannot create", path, e))?;
        Self::prepare(path, file, len)
    }

    /// Opens an existing `path` that must already be `len` bytes long (a resumed download), makes
    /// sure its blocks are reserved, and maps it.
    pub fn open_existing(path: &Path, len: u64) -> Result<PartFile, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("cannot open", path, e))?;
        let actual = file
            .metadata()
            .map_err(|e| Error::io("cannot inspect", path, e))?
            .len();
        if actual != len {
            return Err(Error::io(
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

    fn prepare(path: &Path, file: File, len: u64) -> Result<PartFile, Error> {
        let allocation = reserve(path, &file, len)?;
        let map = if len == 0 {
            None
        } else {
            let map = MmapOptions::new()
                .len(usize::try_from(len).map_err(|_| {
                    Error::io("cannot map", path, io::Error::other("file too large"))
                })?)
                .map_raw(&file)
                .map_err(|e| Error::io("cannot memory-map", path, e))?;
            Some(Arc::new(map))
        };
        Ok(PartFile {
            path: path.to_owned(),
            file: Arc::new(file),
            len,
            map,
            allocation,
        })
    }

    /// Length of the file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (a 0-byte download).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How the blocks were reserved.
    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    /// A handle writers use to reach the map. Cheap to clone.
    pub fn shared(&self) -> SharedMap {
        SharedMap {
            map: self.map.clone(),
            file: self.file.clone(),
        }
    }

    /// Makes `[start, end)` durable: dirty pages in it are written and waited for.
    pub fn flush_range(&self, start: u64, end: u64) -> Result<(), Error> {
        let Some(map) = &self.map else { return Ok(()) };
        if end <= start {
            return Ok(());
        }
        map.flush_range(start as usize, (end - start) as usize)
            .map_err(|e| Error::io("cannot flush", &self.path, e))
    }

    /// Reads exactly `buf.len()` bytes at `offset` with `pread` (not through the map).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        use std::os::unix::fs::FileExt;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("cannot read back", &self.path, e))
    }

    /// BLAKE3 of the whole file in one pass (see [`crate::verify::hash_file`]), for files
    /// without chunk hashes.
    pub fn blake3(&self) -> Result<blake3::Hash, Error> {
        crate::verify::hash_file(&self.path)
            .map_err(|e| Error::io("cannot read back", &self.path, e))
    }

    /// Flushes every byte and the file's metadata, renames the file to `output`, then syncs
    /// the folder so the rename itself is durable. Without `force`, a file that appeared at
    /// `output` during the download is not replaced (`RENAME_NOREPLACE`).
    pub fn commit(self, output: &Path, force: bool) -> Result<(), Error> {
        if let Some(map) = &self.map {
            map.flush()
                .map_err(|e| Error::io("cannot flush", &self.path, e))?;
        }
        self.file
            .sync_all()
            .map_err(|e| Error::io("cannot sync", &self.path, e))?;
        drop(self.map);
        rename(&self.path, output, force)?;
        sync_parent(output).map_err(|e| Error::io("cannot sync the folder of", output, e))
    }
}

/// Checks free space, then reserves `len` bytes for `file` with `fallocate`.
fn reserve(path: &Path, file: &File, len: u64) -> Result<Allocation, Error> {
    if len == 0 {
        return Ok(Allocation::Reserved);
    }
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot inspect", path, e))?;
    let already = meta.blocks().saturating_mul(512).min(len);
    let need = len - already;
    let vfs = rustix::fs::fstatvfs(file)
        .map_err(|e| Error::io("cannot read free space for", path, e.into()))?;
    let have = vfs.f_bavail.saturating_mul(vfs.f_frsize);
    if need > have {
        return Err(Error::NoSpace {
            path: path.to_owned(),
            need: human_bytes(need),
            have: human_bytes(have),
        });
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(Allocation::Reserved),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            file.set_len(len)
                .map_err(|e| Error::io("cannot size", path, e))?;
            Ok(Allocation::Sparse)
        }
        Err(e) if e == rustix::io::Errno::NOSPC => Err(Error::NoSpace {
            path: path.to_owned(),
            need: human_bytes(need),
            have: human_bytes(have),
        }),
        Err(e) => Err(Error::io("cannot preallocate", path, e.into())),
    }
}

/// Renames `from` to `to`; without `force`, refuses to replace an existing `to`.
pub fn rename(from: &Path, to: &Path, force: bool) -> Result<(), Error> {
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
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::Exists(to.to_owned())),
        Err(e) => Err(Error::io("cannot rename the finished download to", to, e)),
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

/// Writers' view of the map: hands out mutable slices of disjoint byte ranges.
#[derive(Clone)]
pub struct SharedMap {
    map: Option<Arc<MmapRaw>>,
    file: Arc<File>,
}

// SAFETY: the map is plain shared memory; writers only ever receive disjoint slices (see
// `slice_mut`), and `MmapRaw` itself is Send + Sync.
unsafe impl Send for SharedMap {}
unsafe impl Sync for SharedMap {}

/// Size of a memory page, for [`SharedMap::release`].
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

impl SharedMap {
    /// Drops the whole pages inside `[start, end)` from this process's memory (RSS). The bytes
    /// stay in the page cache, dirty ones included: this is `MADV_DONTNEED` on a shared file
    /// mapping, where a later access reads the file's current contents. Their write-back to
    /// disk starts now (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so the
    /// next checkpoint's flush, and the last one before the file is renamed, find little left
    /// to write. Only the writer of `[start, end)` calls it, after writing.
    pub fn release(&self, start: u64, end: u64) {
        let Some(map) = &self.map else { return };
        let page = page_size();
        let from = start.div_ceil(page) * page;
        let to = (end.min(map.len() as u64) / page) * page;
        if to > from {
            // SAFETY: shared file mapping: DONTNEED only unmaps the pages; their contents remain
            // in the page cache (see above). No slice into these pages is alive in the caller.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    from as usize,
                    (to - from) as usize,
                )
            };
        }
        if end > start {
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on an open descriptor; a failure only means the kernel
            // writes these pages back later, as it would anyway.
            let _ = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    start as libc::off64_t,
                    (end - start) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
    }

    /// Writes `buf` at offset `at` of the file (`pwrite`), into the page cache like a write
    /// through the map, but without a page fault per page, without zeroing each new page of a
    /// preallocated extent before it is overwritten, and with an error instead of SIGBUS if the
    /// disk fails. Only the owner of `[at, at + buf.len())` calls it.
    pub fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, at)
    }

    /// The bytes `[start, end)` of the file, to write into.
    ///
    /// # Safety
    /// No other slice overlapping `[start, end)` may be alive at the same time. The engine's
    /// range protocol guarantees this: a range's bytes are written only by the connection that
    /// owns it, and a steal never hands out bytes the owner may still be writing.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, start: u64, end: u64) -> &mut [u8] {
        let map = self.map.as_ref().expect("slice of an empty file");
        assert!(
            start <= end && end <= map.len() as u64,
            "slice out of bounds"
        );
        // SAFETY: in bounds (checked above), disjoint by the caller's contract, and the Arc keeps
        // the mapping alive for the slice's lifetime (tied to &self).
        unsafe {
            std::slice::from_raw_parts_mut(
                map.as_mut_ptr().add(start as usize),
                (end - start) as usize,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_reserves_maps_and_commits() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        let out = dir.path().join("f");
        let pf = PartFile::create(&part, 3 << 20).unwrap();
        assert_eq!(pf.allocation(), Allocation::Reserved);
        let meta = std::fs::metadata(&part).unwrap();
        assert_eq!(meta.len(), 3 << 20);
        assert!(meta.blocks() * 512 >= 3 << 20, "blocks really allocated");
        let shared = pf.shared();
        unsafe { shared.slice_mut(0, 3) }.copy_from_slice(b"abc");
        let last = unsafe { shared.slice_mut((3 << 20) - 1, 3 << 20) };
        last[0] = b'z';
        shared.release(0, 3 << 20);
        pf.flush_range(0, 3 << 20).unwrap();
        let hash = pf.blake3().unwrap();
        pf.commit(&out, false).unwrap();
        let data = std::fs::read(&out).unwrap();
        assert_eq!(&data[..3], b"abc");
        assert_eq!(data[(3 << 20) - 1], b'z');
        assert_eq!(blake3::hash(&data), hash);
        assert!(!part.exists());
    }

    #[test]
    fn zero_length_file() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("e.part");
        let pf = PartFile::create(&part, 0).unwrap();
        assert_eq!(pf.blake3().unwrap(), blake3::hash(b""));
        pf.commit(&dir.path().join("e"), false).unwrap();
        assert_eq!(std::fs::read(dir.path().join("e")).unwrap(), b"");
    }

    #[test]
    fn resume_requires_same_length() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("r.part");
        std::fs::write(&part, b"12345").unwrap();
        let err = PartFile::open_existing(&part, 6).err().unwrap();
        assert!(err.to_string().contains("5 bytes long"), "{err}");
        let pf = PartFile::open_existing(&part, 5).unwrap();
        assert_eq!(pf.len(), 5);
    }

    #[test]
    fn no_space_is_reported_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("huge.part");
        let err = PartFile::create(&part, 1 << 60).err().unwrap();
        assert!(matches!(err, Error::NoSpace { .. }), "{err}");
        assert!(err.to_string().contains("need 1024.00 PiB"), "{err}");
    }

    #[test]
    fn commit_does_not_replace_a_file_that_appeared_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o");
        std::fs::write(&out, b"someone else's").unwrap();
        let pf = PartFile::create(&dir.path().join("o.part"), 4).unwrap();
        let err = pf.commit(&out, false).err().unwrap();
        assert!(matches!(err, Error::Exists(_)), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"someone else's");
        assert!(dir.path().join("o.part").exists(), "the download is kept");
        let pf = PartFile::open_existing(&dir.path().join("o.part"), 4).unwrap();
        pf.commit(&out, true).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), vec![0u8; 4]);
    }

    #[test]
    fn part_path_appends() {
        assert_eq!(
            part_path(Path::new("a/b.iso")),
            PathBuf::from("a/b.iso.part")
        );
    }
}
