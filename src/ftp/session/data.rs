//! Data connections and their bytes: opening a passive one (EPSV/PASV), tuning an accepted
//! active one (PORT/EPRT), and reading into a buffer or splicing into a pipe.

use std::net::SocketAddr;
use std::time::Duration;

use suppaftp::tokio::AsyncDataStream;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::connect::{connect_tcp, set_int_option, tune_socket};
use super::{DataStream, Session, SessionError, Timeouts};
use crate::ftp::pipe::Pipe;

impl Session {
    /// Keepalive, no Nagle and (plain sessions only) the receive low-water mark on a data
    /// connection accepted in active mode, as [`connect_data`] sets them on a passive one.
    pub(super) fn tune_accepted(&self, stream: &mut DataStream) -> Result<(), SessionError> {
        let io_err = |source| SessionError::Io {
            command: "active-mode data connection".into(),
            source,
        };
        let tcp: &TcpStream = stream.get_mut().get_ref();
        tune_socket(tcp, self.timeouts).map_err(io_err)?;
        if self.tls.is_none() {
            set_rcvlowat(tcp, DATA_LOWAT).map_err(io_err)?;
        }
        Ok(())
    }

    /// Reads from a data stream: `Ok(0)` is the end of the data.
    ///
    /// Plain data sockets have a receive low-water mark (`DATA_LOWAT`), so the thread wakes
    /// when a useful batch has arrived instead of for every small segment a throttled or distant
    /// server sends (docs/architecture.md, "Wake-ups follow bytes, not packets"). If less than
    /// a batch arrives within
    /// `BATCH_WINDOW`, whatever is queued is read directly, so a slow server is never
    /// mistaken for a stalled one. Only `data_idle` without a single byte is a stall.
    ///
    /// TLS data sockets have no low-water mark and are never read around rustls (that would
    /// put ciphertext into the file): they are read through TLS, with the same stall limit. A
    /// TLS stream closed without `close_notify` reads as the end of the data: the byte count
    /// and the server's reply on the (TLS) control connection decide whether it was complete.
    pub async fn read_data(
        &self,
        stream: &mut DataStream,
        buf: &mut [u8],
    ) -> Result<usize, SessionError> {
        let io_err = |source| SessionError::Io {
            command: "data transfer".into(),
            source,
        };
        let stalled = || {
            SessionError::Timeout(format!(
                "data connection (no byte for {} s)",
                self.timeouts.data_idle.as_secs_f64()
            ))
        };
        if matches!(stream.get_mut(), AsyncDataStream::Ssl(_)) {
            return match timeout(self.timeouts.data_idle, stream.read(buf)).await {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                Ok(Err(source)) => Err(io_err(source)),
                Err(_) => Err(stalled()),
            };
        }
        let mut idle = Duration::ZERO;
        loop {
            match timeout(BATCH_WINDOW, stream.read(buf)).await {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(source)) => return Err(io_err(source)),
                Err(_) => {
                    let AsyncDataStream::Tcp(tcp) = stream.get_mut() else {
                        unreachable!("TLS streams return above");
                    };
                    if let Some(n) = recv_queued(tcp, buf).map_err(io_err)? {
                        return Ok(n);
                    }
                    idle += BATCH_WINDOW;
                    if idle >= self.timeouts.data_idle {
                        return Err(stalled());
                    }
                }
            }
        }
    }

    /// Reads until `buf` is full: an error if the data ends first (short by how much).
    pub async fn read_exact_data(
        &self,
        stream: &mut DataStream,
        buf: &mut [u8],
    ) -> Result<(), SessionError> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_data(stream, &mut buf[done..]).await? {
                0 => {
                    return Err(SessionError::Protocol(format!(
                        "the data ended {} bytes short",
                        buf.len() - done
                    )));
                }
                n => done += n,
            }
        }
        Ok(())
    }

    /// Whether `stream` can be read with [`Session::splice_data`]: plain TCP, not TLS.
    pub fn can_splice(stream: &mut DataStream) -> bool {
        matches!(stream.get_mut(), AsyncDataStream::Tcp(_))
    }

    /// Like [`Session::read_data`] on a plain data connection, but the bytes (up to `max`, at
    /// most the pipe's capacity) go into `pipe` instead of a buffer (`ftp::pipe`): the
    /// caller then moves exactly the returned count on into the file. `Ok(0)` is the end of
    /// the data. Same waiting rules as `read_data`: readable at the low-water mark, whatever
    /// is queued after `BATCH_WINDOW`, a stall after `data_idle` without a byte.
    pub async fn splice_data(
        &self,
        stream: &mut DataStream,
        pipe: &Pipe,
        max: usize,
    ) -> Result<usize, SessionError> {
        let io_err = |source| SessionError::Io {
            command: "data transfer".into(),
            source,
        };
        let AsyncDataStream::Tcp(tcp) = stream.get_mut() else {
            return Err(SessionError::Protocol(
                "internal: splice on a TLS data connection".into(),
            ));
        };
        let max = max.clamp(1, pipe.capacity());
        let move_queued = || -> std::io::Result<usize> {
            use rustix::pipe::{SpliceFlags, splice};
            Ok(splice(
                &*tcp,
                None,
                pipe.write_end(),
                None,
                max,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )?)
        };
        let mut idle = Duration::ZERO;
        loop {
            match timeout(BATCH_WINDOW, tcp.readable()).await {
                Ok(Ok(())) => match tcp.try_io(tokio::io::Interest::READABLE, move_queued) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => return Err(io_err(source)),
                },
                Ok(Err(source)) => return Err(io_err(source)),
                Err(_) => match move_queued() {
                    Ok(n) => return Ok(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        idle += BATCH_WINDOW;
                        if idle >= self.timeouts.data_idle {
                            return Err(SessionError::Timeout(format!(
                                "data connection (no byte for {} s)",
                                self.timeouts.data_idle.as_secs_f64()
                            )));
                        }
                    }
                    Err(source) => return Err(io_err(source)),
                },
            }
        }
    }
}

/// Receive low-water mark of data sockets: readable once this many bytes are queued (or at EOF).
pub const DATA_LOWAT: usize = 128 << 10;

/// Longest wait for a low-water batch before reading whatever has arrived.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Non-blocking read of whatever the socket has queued, bypassing tokio's readiness (which only
/// reports readable at the low-water mark). `None` when nothing is queued.
fn recv_queued(tcp: &TcpStream, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the fd is an open TCP socket owned
    // by `tcp` for the duration of the call.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// Sets the receive low-water mark of a data socket (see [`Session::read_data`]).
fn set_rcvlowat(tcp: &TcpStream, bytes: usize) -> std::io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(tcp, libc::SOL_SOCKET, libc::SO_RCVLOWAT, v)
}

/// A data connection: [`connect_tcp`], plus the receive low-water mark when `lowat` (plain
/// sessions only, see [`Session::read_data`]).
pub(super) async fn connect_data(
    addr: SocketAddr,
    timeouts: Timeouts,
    lowat: bool,
) -> std::io::Result<TcpStream> {
    let stream = connect_tcp(addr, timeouts).await?;
    if lowat {
        set_rcvlowat(&stream, DATA_LOWAT)?;
    }
    Ok(stream)
}
