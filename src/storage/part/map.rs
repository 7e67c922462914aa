//! The `.part` as a shared read-write memory map (`--io mmap`): connections receive straight
//! into it at their offsets, and each piece is hashed where it lies.
//!
//! A page of a map that the kernel cannot provide (no space, an I/O error) is a SIGBUS when
//! user space touches it. So the map is made only of a file whose blocks `fallocate` reserved,
//! and every page is populated before it is handed out: `MADV_POPULATE_WRITE` (Linux 5.14)
//! faults a window in ahead of the reader and reports a failure as an error. Bytes written
//! through the map are dirty pages of the file like any others: `fdatasync` of the file makes
//! them durable, `sync_file_range` starts their write-back. Windows behind a reader are
//! unmapped from the process (`MADV_DONTNEED`: the pages stay in the page cache, dirty or not),
//! so the resident set stays a few windows per connection whatever the file's size.

use std::fs::File;
use std::io;

use memmap2::{Advice, MmapRaw, UncheckedAdvice};

/// Bytes populated ahead of a reader at a time.
pub const POPULATE_WINDOW: u64 = 512 << 10;

/// The `.part` mapped shared and writable, `len` bytes from offset 0.
pub struct Map {
    raw: MmapRaw,
    len: u64,
}

impl Map {
    /// Maps `file` (`len` bytes, preallocated) and populates its first page, which proves the
    /// kernel can populate (`MADV_POPULATE_WRITE` is refused with EINVAL before Linux 5.14).
    pub fn new(file: &File, len: u64) -> io::Result<Map> {
        if len == 0 || usize::try_from(len).is_err() {
            return Err(io::Error::other(
                "the file is empty or larger than the address space",
            ));
        }
        let raw = memmap2::MmapOptions::new()
            .len(len as usize)
            .map_raw(file)?;
        // No read-ahead around faults: each populated page is a fresh page-cache page (zeroed,
        // then overwritten), and read-ahead would grow those to large folios, which on the
        // test VM cost several times as much to zero (docs/architecture.md, "Stores").
        raw.advise(Advice::Random)?;
        let map = Map { raw, len };
        map.populate(0, 1).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => io::Error::other(
                "this kernel cannot populate a memory map ahead of use (MADV_POPULATE_WRITE, \
                 Linux 5.14)",
            ),
            _ => e,
        })?;
        Ok(map)
    }

    /// Faults in (for writing) the pages of `[at, at + len)`, clamped to the file: afterwards
    /// writing there cannot fault. An error names what the kernel refused (no space, I/O).
    pub fn populate(&self, at: u64, len: u64) -> io::Result<()> {
        let (from, n) = self.clamp(at, len);
        if n == 0 {
            return Ok(());
        }
        // A signal may interrupt the populate part way; what is done stays done.
        for _ in 0..100 {
            match self.raw.advise_range(Advice::PopulateWrite, from, n) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
        Err(io::Error::from(io::ErrorKind::Interrupted))
    }

    /// Unmaps the pages of `[at, at + len)` from the process (their contents stay in the page
    /// cache, dirty pages too), so they no longer count in its resident set.
    pub fn release(&self, at: u64, len: u64) {
        let (from, n) = self.clamp(at, len);
        if n > 0 {
            // SAFETY: MADV_DONTNEED on a shared file mapping drops page-table entries only: the
            // next access faults the same page-cache page back in, with the same bytes, so no
            // slice into the map sees its contents change. A failure only leaves the pages mapped.
            let _ = unsafe {
                self.raw
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, from, n)
            };
        }
    }

    /// The bytes at `[at, at + len)`, to receive into.
    ///
    /// # Safety
    /// The caller owns that range: nobody reads or writes it while the slice lives (the
    /// scheduler's ranges are disjoint), and its pages were populated.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, at: u64, len: usize) -> &mut [u8] {
        assert!(
            at + len as u64 <= self.len,
            "a slice past the end of the map"
        );
        // SAFETY: in bounds (checked above), the mapping lives as long as `self`, and the
        // caller guarantees exclusive use of the range.
        unsafe { std::slice::from_raw_parts_mut(self.raw.as_mut_ptr().add(at as usize), len) }
    }

    /// The bytes at `[at, at + len)`, just written by the caller, to hash.
    ///
    /// # Safety
    /// As [`Map::slice_mut`]: nobody writes that range while the slice lives.
    pub unsafe fn slice(&self, at: u64, len: usize) -> &[u8] {
        assert!(
            at + len as u64 <= self.len,
            "a slice past the end of the map"
        );
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(at as usize), len) }
    }

    /// `[at, at + len)` within the file, as (offset, length) for madvise.
    fn clamp(&self, at: u64, len: u64) -> (usize, usize) {
        let from = at.min(self.len);
        let to = at.saturating_add(len).min(self.len);
        (from as usize, (to - from) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn bytes_written_through_the_map_are_the_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.part");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let len = 3 * POPULATE_WINDOW + 12_345;
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len).unwrap();
        let map = Map::new(&file, len).unwrap();
        // The last window, clamped at the end of the file.
        let at = len - 10_000;
        map.populate(at, POPULATE_WINDOW).unwrap();
        // SAFETY: this test is the only user of the map.
        let s = unsafe { map.slice_mut(at, 10_000) };
        s.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i % 253) as u8);
        map.release(at, 10_000);
        // SAFETY: as above.
        let again = unsafe { map.slice(at, 10_000) };
        assert!(again.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8));
        file.sync_data().unwrap();
        let mut back = vec![0u8; 10_000];
        file.read_exact_at(&mut back, at).unwrap();
        assert_eq!(back, again);
        let mut head = vec![1u8; 100];
        file.read_exact_at(&mut head, 0).unwrap();
        assert!(
            head.iter().all(|b| *b == 0),
            "untouched bytes read as zeros"
        );
    }

    #[test]
    fn a_page_the_kernel_cannot_provide_is_an_error_not_a_sigbus() {
        let file = tempfile::tempfile().unwrap();
        let len = 4 * POPULATE_WINDOW;
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len).unwrap();
        let map = Map::new(&file, len).unwrap();
        // Another process shrinks the file under the map: its pages past the end are gone.
        file.set_len(4096).unwrap();
        let e = map.populate(POPULATE_WINDOW, POPULATE_WINDOW).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT), "{e}");
    }

    #[test]
    fn an_empty_file_is_not_mapped() {
        let file = tempfile::tempfile().unwrap();
        let e = Map::new(&file, 0).err().expect("refused");
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
