//! The test server's storage back-end: libunftp's local-filesystem back-end
//! ([`unftp_sbe_fs::Filesystem`]) with fault injection on downloads.
//!
//! [`FaultyFs`] delegates every operation to the filesystem back-end. Its `get()` (one call per
//! `RETR` data stream) wraps the file reader in a [`FaultyReader`] that counts the bytes it hands
//! out and applies the faults current when the transfer started: a throttle (time-based token
//! bucket, no initial burst), a stall (the reader stays pending forever after K bytes) or an
//! I/O error after K bytes (libunftp then closes the data connection and answers 451). Refusing
//! `REST` is done by not advertising `FEATURE_RESTART`, which makes libunftp answer 502.
//!
//! Uploads (`put()`, one call per `STOR`/`APPE`) go through the same reader (throttle:
//! [`super::Faults::upload_rate`]; counted as received bytes) and are written in place at the
//! `REST` offset, unlike the filesystem back-end, which truncates there first (kept as the
//! fault [`super::Faults::truncating_rest_store`]).
//!
//! Stalls are not truly endless: a stalled reader fails once its control connection has ended
//! or the server is shutting down, so no data task outlives its server.

use super::{ConnState, Shared};
use async_trait::async_trait;
use std::{
    fmt::{self, Debug},
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, ReadBuf},
    time::{Instant, Sleep},
};
use unftp_core::{
    auth::UserDetail,
    storage::{Error, ErrorKind, FEATURE_RESTART, Fileinfo, Result, StorageBackend},
};
use unftp_sbe_fs::{Filesystem, Meta};

/// Buffer used to copy a `RETR` stream to the data connection (libunftp's default copy uses 8 KiB
/// reads, each one a round trip through tokio's blocking pool for a file).
const RETR_COPY_BUFFER: usize = 256 * 1024;

/// Longest time a waiting reader sleeps before re-checking whether its connection or server is
/// gone.
const RECHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Upper bound of wait/re-evaluate rounds in one `poll_read` call (each round either returns or
/// follows a timer that has already fired, so a couple of rounds are enough).
const MAX_POLL_ROUNDS: usize = 8;

/// The faults applied to one `RETR` stream, fixed when the stream is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TransferFaults {
    /// Bytes per second, if throttled.
    pub(super) rate: Option<u64>,
    /// Stall after this many bytes.
    pub(super) stall_after: Option<u64>,
    /// Fail after this many bytes.
    pub(super) error_after: Option<u64>,
}

/// A [`StorageBackend`] that serves a local folder through [`Filesystem`], with fault injection
/// on `get()`. One instance is made per control connection.
pub(super) struct FaultyFs {
    /// `None` when the root folder could not be opened: every operation then fails.
    inner: Option<Filesystem>,
    root: PathBuf,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
    /// Sampled when the control connection starts (libunftp reads the features once, then).
    refuse_rest: bool,
}

impl FaultyFs {
    pub(super) fn new(root: &Path, shared: Arc<Shared>, conn: Arc<ConnState>) -> Self {
        let refuse_rest = shared.fault_state().faults.refuse_rest;
        FaultyFs {
            inner: Filesystem::new(root).ok(),
            root: root.to_path_buf(),
            shared,
            conn,
            refuse_rest,
        }
    }

    fn inner(&self) -> Result<&Filesystem> {
        self.inner.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::LocalError,
                io::Error::other(format!(
                    "test server root {} could not be opened",
                    self.root.display()
                )),
            )
        })
    }
}

impl FaultyFs {
    /// Writes an upload at `start_pos` without truncating the file (from byte 0: replaces it).
    async fn put_in_place(&self, input: FaultyReader, path: &Path, start_pos: u64) -> Result<u64> {
        use std::path::Component;
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let mut full = self.root.clone();
        for c in path.components() {
            match c {
                Component::Normal(part) => full.push(part),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(Error::from(ErrorKind::PermanentFileNotAvailable));
                }
            }
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(start_pos == 0)
            .open(&full)
            .await?;
        file.seek(io::SeekFrom::Start(start_pos)).await?;
        let mut reader = tokio::io::BufReader::with_capacity(RETR_COPY_BUFFER, input);
        let n = tokio::io::copy_buf(&mut reader, &mut file).await?;
        file.flush().await?;
        Ok(n)
    }
}

impl Debug for FaultyFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyFs")
            .field("root", &self.root)
            .field("opened", &self.inner.is_some())
            .field("refuse_rest", &self.refuse_rest)
            .finish()
    }
}

#[async_trait]
impl<U: UserDetail> StorageBackend<U> for FaultyFs {
    type Metadata = Meta;

    fn enter(&mut self, user_detail: &U) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(inner) => StorageBackend::<U>::enter(inner, user_detail),
            None => Err(io::Error::other(format!(
                "test server root {} could not be opened",
                self.root.display()
            ))),
        }
    }

    fn name(&self) -> &str {
        "ftpseg-testserver-fs"
    }

    fn supported_features(&self) -> u32 {
        let features = match &self.inner {
            Some(inner) => StorageBackend::<U>::supported_features(inner),
            None => 0,
        };
        if self.refuse_rest {
            features & !FEATURE_RESTART
        } else {
            features
        }
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &U,
        path: P,
    ) -> Result<Self::Metadata> {
        self.inner()?.metadata(user, path).await
    }

    async fn md5<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> Result<String>
    where
        P: AsRef<Path> + Send + Debug,
    {
        // Delegated so that SITE MD5 neither counts as a RETR nor suffers download faults.
        self.inner()?.md5(user, path).await
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &U,
        path: P,
    ) -> Result<Vec<Fileinfo<PathBuf, Self::Metadata>>>
    where
        <Self as StorageBackend<U>>::Metadata: unftp_core::storage::Metadata,
    {
        self.inner()?.list(user, path).await
    }

    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &U,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> Result<u64>
    where
        W: tokio::io::AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        // Same as the default implementation, with a larger copy buffer for throughput. The
        // bytes counted are those the `FaultyReader` hands out.
        let reader = StorageBackend::<U>::get(self, user, path, start_pos).await?;
        let mut reader = tokio::io::BufReader::with_capacity(RETR_COPY_BUFFER, reader);
        Ok(tokio::io::copy_buf(&mut reader, output).await?)
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &U,
        path: P,
        start_pos: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        let reader = self.inner()?.get(user, path, start_pos).await?;
        let state = self.shared.fault_state();
        let index = state.retrs_started.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.retrs.fetch_add(1, Ordering::Relaxed);
        let faults = &state.faults;
        let faulty = faults.faulty_transfers.is_none_or(|m| index < m);
        let from_zero = start_pos == 0;
        let rate =
            session_rate(&faults.session_rates, self.conn.index).or(faults.rate_per_transfer);
        let plan = TransferFaults {
            rate: if from_zero {
                faults.slow_rate_at_zero.or(rate)
            } else {
                rate
            },
            stall_after: if faulty { faults.stall_after } else { None },
            error_after: if faulty { faults.error_after } else { None },
        };
        Ok(Box::new(FaultyReader::new(
            reader,
            plan,
            from_zero,
            self.shared.clone(),
            self.conn.clone(),
        )))
    }

    async fn put<P: AsRef<Path> + Send + Debug, R: AsyncRead + Send + Sync + Unpin + 'static>(
        &self,
        user: &U,
        input: R,
        path: P,
        start_pos: u64,
    ) -> Result<u64> {
        let state = self.shared.fault_state();
        let faults = &state.faults;
        self.shared.counters.stores.fetch_add(1, Ordering::Relaxed);
        let plan = TransferFaults {
            rate: faults.upload_rate,
            ..TransferFaults::default()
        };
        let input = FaultyReader::new(
            Box::new(input),
            plan,
            false,
            self.shared.clone(),
            self.conn.clone(),
        )
        .counting_uploads();
        if faults.truncating_rest_store {
            return self.inner()?.put(user, input, path, start_pos).await;
        }
        self.put_in_place(input, path.as_ref(), start_pos).await
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> Result<()> {
        self.inner()?.del(user, path).await
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> Result<()> {
        self.inner()?.mkd(user, path).await
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(&self, user: &U, from: P, to: P) -> Result<()> {
        self.inner()?.rename(user, from, to).await
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> Result<()> {
        self.inner()?.rmd(user, path).await
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> Result<()> {
        self.inner()?.cwd(user, path).await
    }
}

/// What the throttle allows right now.
#[derive(Debug, PartialEq, Eq)]
enum Permit {
    /// This many bytes may be handed out now (always at least 1).
    Bytes(u64),
    /// Nothing may be handed out before this instant.
    WaitUntil(Instant),
}

/// The rate of the `index`-th control connection under `session_rates` (cycling; None if empty).
fn session_rate(rates: &[u64], index: u64) -> Option<u64> {
    let len = u64::try_from(rates.len()).ok().filter(|&l| l > 0)?;
    rates.get(usize::try_from(index % len).ok()?).copied()
}

/// A time-based token bucket: `rate` bytes per second, starting empty (no initial burst), with
/// the unused credit capped at about 100 ms worth so that a reader that fell behind (slow
/// receiver) does not burst afterwards.
///
/// The allowance is computed from the elapsed time, so the long-run rate is exact whatever the
/// timer granularity, and the reader only sleeps once per `chunk` bytes (about 50 wake-ups per
/// second at most), not once per read.
#[derive(Debug)]
struct Throttle {
    rate: u64,
    /// Bytes released per wake-up when waiting.
    chunk: u64,
    /// Maximum unused credit, in bytes.
    burst: u64,
    /// The allowance is `anchor_bytes + (now - anchor_time) * rate`; set on the first read.
    anchor: Option<(Instant, u64)>,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl Throttle {
    fn new(rate: u64) -> Self {
        let chunk = (rate / 50).clamp(1, 64 * 1024);
        let burst = (rate / 10).max(2 * chunk);
        Throttle {
            rate,
            chunk,
            burst,
            anchor: None,
        }
    }

    /// How much of `want` (> 0) bytes may be handed out at `now`, `sent` having been handed out.
    fn permit(&mut self, now: Instant, sent: u64, want: u64) -> Permit {
        if self.rate == 0 {
            return Permit::WaitUntil(now + RECHECK_INTERVAL);
        }
        let rate = u128::from(self.rate);
        let (anchor_time, anchor_bytes) = *self.anchor.get_or_insert((now, sent));
        let elapsed = now.saturating_duration_since(anchor_time).as_nanos();
        let allowed = u128::from(anchor_bytes) + elapsed * rate / NANOS_PER_SEC;
        let credit = allowed.saturating_sub(u128::from(sent));
        if credit > u128::from(self.burst) {
            // Forget the excess credit: re-anchor so that exactly `burst` bytes are available.
            let back = Duration::from_nanos((u128::from(self.burst) * NANOS_PER_SEC / rate) as u64);
            self.anchor = Some((now.checked_sub(back).unwrap_or(now), sent));
            return Permit::Bytes(want.min(self.burst));
        }
        if credit > 0 {
            return Permit::Bytes(want.min(credit as u64));
        }
        // Wait until `need` more bytes are allowed.
        let need = u128::from(want.min(self.chunk));
        let target_bytes = u128::from(sent) + need - u128::from(anchor_bytes);
        let nanos = (target_bytes * NANOS_PER_SEC).div_ceil(rate);
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        Permit::WaitUntil(anchor_time + Duration::from_nanos(nanos))
    }
}

/// The reader handed to libunftp for one `RETR`: counts what it hands out, applies the faults.
pub(super) struct FaultyReader {
    inner: Box<dyn AsyncRead + Send + Sync + Unpin>,
    plan: TransferFaults,
    throttle: Option<Throttle>,
    from_zero: bool,
    /// Bytes handed out so far.
    sent: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
    /// Reads an upload: counts into `bytes_received`, not `bytes_sent`.
    upload: bool,
}

/// What a read round decided before touching the inner reader.
enum Step {
    Read(u64),
    Wait(Instant),
    Fail(io::Error),
}

impl FaultyReader {
    pub(super) fn new(
        inner: Box<dyn AsyncRead + Send + Sync + Unpin>,
        plan: TransferFaults,
        from_zero: bool,
        shared: Arc<Shared>,
        conn: Arc<ConnState>,
    ) -> Self {
        FaultyReader {
            inner,
            plan,
            throttle: plan.rate.map(Throttle::new),
            from_zero,
            sent: 0,
            sleep: None,
            shared,
            conn,
            upload: false,
        }
    }

    /// The same reader for an upload's data stream (counted as received bytes).
    pub(super) fn counting_uploads(mut self) -> Self {
        self.upload = true;
        self
    }

    fn server_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    /// Decides what to do for a read of at most `room` (> 0) bytes.
    fn step(&mut self, room: u64) -> Step {
        if self.server_stopping() {
            return Step::Fail(io::Error::other("ftpseg test server is shutting down"));
        }
        let mut want = room;
        if let Some(limit) = self.plan.error_after {
            if self.sent >= limit {
                return Step::Fail(io::Error::other(format!(
                    "injected fault: read error after {limit} bytes"
                )));
            }
            want = want.min(limit - self.sent);
        }
        if let Some(limit) = self.plan.stall_after {
            if self.sent >= limit {
                if self.conn.closed.load(Ordering::Relaxed) {
                    return Step::Fail(io::Error::other(
                        "stalled transfer ended: control connection closed",
                    ));
                }
                return Step::Wait(Instant::now() + RECHECK_INTERVAL);
            }
            want = want.min(limit - self.sent);
        }
        if let Some(throttle) = self.throttle.as_mut() {
            let now = Instant::now();
            match throttle.permit(now, self.sent, want) {
                Permit::Bytes(n) => want = want.min(n),
                Permit::WaitUntil(at) => return Step::Wait(at.min(now + RECHECK_INTERVAL)),
            }
        }
        Step::Read(want)
    }

    /// Arms the timer for `deadline` and polls it.
    fn poll_wait(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }

    fn record(&mut self, n: usize) {
        let n = n as u64;
        self.sent += n;
        let counters = &self.shared.counters;
        if self.upload {
            counters.bytes_received.fetch_add(n, Ordering::Relaxed);
            return;
        }
        counters.bytes_sent.fetch_add(n, Ordering::Relaxed);
        self.conn.bytes_sent.fetch_add(n, Ordering::Relaxed);
        if self.from_zero {
            counters
                .bytes_sent_from_zero
                .fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for FaultyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..MAX_POLL_ROUNDS {
            match this.step(buf.remaining() as u64) {
                Step::Fail(err) => return Poll::Ready(Err(err)),
                Step::Wait(deadline) => {
                    if this.poll_wait(cx, deadline).is_pending() {
                        return Poll::Pending;
                    }
                    // The timer has fired already: decide again.
                }
                Step::Read(want) => {
                    // `want` <= buf.remaining(), so it fits in usize.
                    let want = usize::try_from(want)
                        .unwrap_or(usize::MAX)
                        .min(buf.remaining());
                    let mut sub = ReadBuf::new(buf.initialize_unfilled_to(want));
                    match Pin::new(&mut this.inner).poll_read(cx, &mut sub) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                        Poll::Ready(Ok(())) => {
                            let got = sub.filled().len();
                            buf.advance(got);
                            this.record(got);
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
            }
        }
        // Still undecided after several fired timers (clock jumps): try again on the next turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
