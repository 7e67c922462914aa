//! How bytes get from a data connection into the `.part`: the shared [`PartWriter`] (the file,
//! its map, the write turn) and each connection's [`Receiver`], which says where to receive
//! the next bytes ([`Landing`]) and then puts them in the file and shows them to the hash. The
//! three stores differ only here:
//!
//! | store | receive into | then |
//! |---|---|---|
//! | `mmap` | the map, at the byte's offset | nothing to copy; hashed in place |
//! | `splice` | the connection's pipe (plain data) | `splice` into the page cache |
//! | `pwrite` (and `splice` over TLS) | the connection's buffer | `pwrite` |

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::map::{Map, POPULATE_WINDOW};
use super::{Store, Target};
use crate::ftp::pipe::Pipe;

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
/// Over [`super::Storage::Discard`] it drops what it is given.
#[derive(Clone)]
pub struct PartWriter {
    target: Target,
    store: Store,
    /// The file's shared map, for [`Store::Mmap`].
    map: Option<Arc<Map>>,
    /// Set when the file system refused `splice` into the file: readers use a buffer then.
    no_splice: Arc<AtomicBool>,
    /// Held around each write into the file. ext4 (like most file systems) serialises buffered
    /// writes to one file on the inode's lock, and a writer that finds it taken spins while the
    /// holder copies; waiting here sleeps instead (docs/architecture.md, "Decisions").
    one_at_a_time: Arc<std::sync::Mutex<()>>,
}

impl PartWriter {
    pub(super) fn new(target: Target, store: Store, map: Option<Arc<Map>>) -> PartWriter {
        PartWriter {
            target,
            store,
            map,
            no_splice: Arc::new(AtomicBool::new(false)),
            one_at_a_time: Arc::new(std::sync::Mutex::new(())),
        }
    }

    /// A connection's own way in: its pipe or buffer (`buf_len`: the most one read brings),
    /// or its window of the map.
    pub fn receiver(&self, buf_len: usize) -> Receiver {
        let pipe = match self.store {
            Store::Splice => Pipe::new()
                .inspect_err(|e| crate::trace!("no pipe ({e}); reading into a buffer"))
                .ok(),
            Store::Mmap | Store::Pwrite => None,
        };
        // The map needs no buffer; a pipe needs one to show what it wrote, and to fall back on.
        let buf = match (&self.map, self.store) {
            (Some(_), Store::Mmap) => Vec::new(),
            _ => vec![0u8; buf_len],
        };
        Receiver {
            writer: self.clone(),
            buf,
            pipe,
            populated: 0..0,
            released_to: 0,
            last: Last::Buffer,
        }
    }

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
    /// After an error the pipe may still hold bytes: drop it. Over [`super::Storage::Discard`] the
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
        if let Some(map) = &self.map {
            // Unmapped first, the pages need no write-protecting (and no TLB flush) to be
            // written back. Whole pages only: the ones at either end may still be written.
            let page = rustix::param::page_size() as u64;
            let (from, to) = (start.div_ceil(page) * page, end / page * page);
            if to > from {
                map.release(from, to - from);
            }
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

/// Where a connection receives its next bytes ([`Receiver::landing`]).
pub enum Landing<'a> {
    /// Splice from the data socket into this pipe (`Session::splice_data`).
    Pipe(&'a Pipe),
    /// Read into this memory: the connection's buffer, or the map at the bytes' offset.
    Memory(&'a mut [u8]),
}

/// What the last [`Landing`] was, so [`Receiver::land`] knows where the bytes are.
#[derive(Clone, Copy)]
enum Last {
    Pipe,
    Buffer,
    Map,
}

/// One connection's way into the file: asked where to receive ([`Receiver::landing`]), then
/// told how much came ([`Receiver::land`]). Only the owner of the bytes' range uses it there.
pub struct Receiver {
    writer: PartWriter,
    /// Received bytes for `pwrite` (also what a pipe's pieces are read back into for the hash).
    buf: Vec<u8>,
    /// Plain data connections of the splice store: socket -> pipe -> page cache.
    pipe: Option<Pipe>,
    /// The map's bytes this receiver populated ahead of itself.
    populated: std::ops::Range<u64>,
    /// Up to where this receiver released the map's pages behind itself.
    released_to: u64,
    last: Last,
}

impl Receiver {
    /// Forgets bytes a dropped attempt left in the pipe (see [`Pipe::drain`]); called when an
    /// attempt starts. Returns how many there were.
    pub fn drop_leftovers(&mut self) -> io::Result<usize> {
        match &self.pipe {
            Some(pipe) => pipe.drain(),
            None => Ok(0),
        }
    }

    /// Where to receive the next bytes, at most `want` of them for offset `at`
    /// (`splice_ok`: the data connection can be spliced from, i.e. it is plain TCP). For the
    /// map, the pages are populated first: a failure there (no space, an I/O error) is an error
    /// here, never a SIGBUS later.
    pub fn landing(&mut self, at: u64, want: usize, splice_ok: bool) -> io::Result<Landing<'_>> {
        if let Some(map) = &self.writer.map {
            let end = at + want as u64;
            if at < self.populated.start || at > self.populated.end {
                // A new range (or one resumed elsewhere): nothing populated here yet.
                self.populated = at..at;
            }
            if end > self.populated.end {
                // Only what is not populated yet, and a window more.
                let from = self.populated.end;
                let to = end + POPULATE_WINDOW;
                map.populate(from, to - from)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot map it in: {e}")))?;
                self.populated.end = to;
            }
            self.last = Last::Map;
            // SAFETY: this connection owns [at, at + want) (the scheduler's ranges are
            // disjoint) and its pages were populated just now or ahead.
            return Ok(Landing::Memory(unsafe { map.slice_mut(at, want) }));
        }
        match &self.pipe {
            Some(pipe) if splice_ok && self.writer.splices() => {
                self.last = Last::Pipe;
                Ok(Landing::Pipe(pipe))
            }
            _ => {
                self.last = Last::Buffer;
                Ok(Landing::Memory(&mut self.buf[..want]))
            }
        }
    }

    /// Puts the `n` bytes just received into the last [`Landing`] (for offset `at`) into the
    /// file, and shows them to `written` (see [`PartWriter::write_from_pipe`]).
    pub fn land(&mut self, at: u64, n: usize, mut written: ShowWritten<'_>) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        match self.last {
            Last::Pipe => {
                let pipe = self.pipe.as_ref().expect("a pipe was handed out");
                self.writer
                    .write_from_pipe(pipe, n, at, &mut self.buf, written)
            }
            Last::Buffer => {
                self.writer.write_at(&self.buf[..n], at)?;
                if let Some(show) = written.as_mut() {
                    show(at, &self.buf[..n]);
                }
                Ok(())
            }
            Last::Map => {
                let map = self.writer.map.as_ref().expect("the map was handed out");
                if let Some(show) = written.as_mut() {
                    // SAFETY: this connection owns the bytes it just received, and nobody
                    // writes them while they are hashed.
                    show(at, unsafe { map.slice(at, n) });
                }
                self.released_to = release_behind(map, self.released_to, at, at + n as u64);
                Ok(())
            }
        }
    }
}

/// Releases the map's pages a receiver has written past, a window at a time, up to the last
/// whole page (the page the next bytes go to stays), so the resident set stays about two
/// windows per connection. `released_to`: where the last release ended; returns the new one.
fn release_behind(map: &Map, released_to: u64, at: u64, end: u64) -> u64 {
    // A new range (or one resumed elsewhere): release from here on.
    let from = if at < released_to || at > released_to + 2 * POPULATE_WINDOW {
        at
    } else {
        released_to
    };
    let page = rustix::param::page_size() as u64;
    let to = end / page * page;
    if to >= from + POPULATE_WINDOW {
        map.release(from, to - from);
        return to;
    }
    from
}
