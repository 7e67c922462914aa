//! A kernel pipe that carries a plain data connection's bytes into the `.part` file without
//! copying them through user space (`splice(2)`: socket -> pipe, then pipe -> file).
//!
//! `recv` into a buffer and `pwrite` from it copy every byte twice (kernel to user, user to
//! page cache); with a pipe in between, the socket's pages are moved into the pipe and copied
//! once into the page cache. The session fills the pipe ([`super::Session::splice_data`]),
//! the storage layer empties it into the file (`storage::PartWriter::write_from_pipe`); each
//! connection owns one pipe and keeps it empty between those two calls. TLS data cannot take
//! this path (the bytes must be decrypted in user space): it is read into a buffer instead.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The pipe's capacity we ask for: bigger batches per `splice` call. Linux grants up to
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default); a refusal keeps the 64 KiB default.
pub const WANTED_CAPACITY: usize = 1 << 20;

/// One connection's pipe (see the module documentation).
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A new empty pipe, both ends non-blocking and closed on exec.
    pub fn new() -> io::Result<Pipe> {
        use rustix::pipe::{PipeFlags, fcntl_setpipe_size, pipe_with};
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = fcntl_setpipe_size(&write, WANTED_CAPACITY)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))
            .unwrap_or(64 << 10);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// How many bytes the pipe holds at most: the largest batch one `splice` can move.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The end the session writes into.
    pub fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// The end the store reads from.
    pub fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empties the pipe of bytes nobody will write (an attempt dropped between the two
    /// splices); returns how many there were. They belong to no offset any more: written by
    /// the next attempt, they would land at its offset.
    pub fn drain(&self) -> io::Result<usize> {
        let mut scratch = [0u8; 64 << 10];
        let mut drained = 0;
        loop {
            match rustix::io::read(&self.read, &mut scratch) {
                Ok(0) => return Ok(drained),
                Ok(n) => drained += n,
                Err(rustix::io::Errno::AGAIN) => return Ok(drained),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_empties_what_was_left() {
        let p = Pipe::new().unwrap();
        assert_eq!(p.drain().unwrap(), 0);
        rustix::io::write(p.write_end(), &[7u8; 70_000]).unwrap();
        assert_eq!(p.drain().unwrap(), 70_000);
        assert_eq!(p.drain().unwrap(), 0);
    }

    #[test]
    fn a_pipe_carries_bytes_into_a_file_at_an_offset() {
        use rustix::pipe::{SpliceFlags, splice};
        use std::os::unix::fs::FileExt;
        let pipe = Pipe::new().unwrap();
        assert!(pipe.capacity() >= 64 << 10);
        let written = rustix::io::write(pipe.write_end(), b"hello pipe").unwrap();
        assert_eq!(written, 10);
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create_new(dir.path().join("f")).unwrap();
        let mut at = 5u64;
        let n = splice(
            pipe.read_end(),
            None,
            &file,
            Some(&mut at),
            10,
            SpliceFlags::MOVE,
        )
        .unwrap();
        assert_eq!((n, at), (10, 15));
        let mut back = [0u8; 15];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"\0\0\0\0\0hello pipe");
    }
}
