//! More servers of the same file (`Job::mirrors`): each is opened and checked before its bytes
//! may mix into the file ([`open_mirrors`]: it answers, logs in, and its `SIZE` is the file's),
//! and the connections are spread over the servers that passed ([`assign`]). From then on a
//! mirror is one more server to the workers: the scheduler hands ranges by measured speed,
//! whatever server a connection reads from, and a mirror that fails for good is dropped while
//! the others take its ranges over (`workers.rs`).

use std::sync::Arc;

use futures::future::join_all;

use crate::download::{Job, Mirror};
use crate::error::Error;
use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, Session, SessionError, TlsClient, Verify};
use crate::retry::network::Network;
use crate::ui::progress::Progress;

/// A mirror that passed its checks: its first session (probed) and what it needs for more.
pub(super) struct MirrorStart {
    pub url: FtpUrl,
    pub creds: Credentials,
    pub net: Arc<Network>,
    pub tls: Option<Arc<TlsClient>>,
    pub first: Session,
}

/// Servers one download uses at most (the first and 31 mirrors: `download/pieces.rs` keeps
/// one bit per server).
pub(super) const MAX_SERVERS: usize = 32;

/// Opens the mirrors at once and keeps those whose file has `size` bytes. A mirror that does
/// not answer, refuses the login, lacks the file or has another size is left out, with a note
/// naming it and why; the download goes on with the others. Only as many mirrors as get a
/// connection each are opened (`-n` less the first server's one, at most [`MAX_SERVERS`]).
///
/// Without piece hashes to check every piece by (`Job::pieces`), each mirror's bytes are
/// compared with the first server's at one spot ([`SPOT`] bytes in the middle of the file,
/// read on `first` before anything else): a mirror with another file of the same size is left
/// out before any of its bytes reach the file. When that reference cannot be read, or `first`
/// already started a transfer (`preopened`: the size came from its 150 reply), no mirror is
/// used: nothing could vouch for their bytes.
pub(super) async fn open_mirrors(
    job: &Job,
    size: u64,
    first: &mut Session,
    preopened: bool,
    progress: &mut Progress,
) -> Vec<MirrorStart> {
    let room = job.connections.saturating_sub(1).min(MAX_SERVERS - 1);
    let mirrors = &job.mirrors[..job.mirrors.len().min(room)];
    if mirrors.len() < job.mirrors.len() {
        progress.note(&format!(
            "{} of the {} mirrors are used: one connection each at least, -n {} in all, at \
             most {} servers",
            mirrors.len(),
            job.mirrors.len(),
            job.connections,
            MAX_SERVERS
        ));
    }
    if preopened {
        progress.note("mirrors left out: the first server does not answer SIZE");
        return Vec::new();
    }
    let spot = spot_of(size).filter(|_| job.pieces.is_none());
    let reference = match spot {
        Some((at, len)) => match sample(first, &job.url.path, at, len).await {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                progress.note(&format!(
                    "mirrors left out: the first server's bytes to compare theirs with could \
                     not be read ({e})"
                ));
                return Vec::new();
            }
        },
        None => None,
    };
    let check = spot.zip(reference.as_deref());
    let opened = join_all(mirrors.iter().map(|m| open_one(job, m, size, check))).await;
    let mut kept = Vec::new();
    for (m, r) in mirrors.iter().zip(opened) {
        match r {
            Ok(start) => kept.push(start),
            Err(why) => progress.note(&format!("mirror {} left out: {why}", m.url.redacted())),
        }
    }
    kept
}

/// Bytes compared between the servers by the spot check.
pub(super) const SPOT: u64 = 64 << 10;

/// Where the spot check reads: [`SPOT`] bytes in the middle of a file of `size` bytes (the
/// whole of a smaller one); none for an empty file.
fn spot_of(size: u64) -> Option<(u64, u64)> {
    let len = SPOT.min(size);
    (len > 0).then(|| ((size - len) / 2, len))
}

/// `len` bytes at `at` of `path` on session `s`, which stays usable.
async fn sample(s: &mut Session, path: &str, at: u64, len: u64) -> Result<Vec<u8>, SessionError> {
    let t = s.retr_range(path, at, Some(at + len)).await?;
    let mut stream = t.stream;
    let mut buf = vec![0u8; len as usize];
    s.read_exact_data(&mut stream, &mut buf).await?;
    s.end_transfer(stream, t.ends_at == Some(at + len)).await?;
    Ok(buf)
}

/// One mirror: connect, log in, `SIZE`, probe (`FEAT`, `REST`), and the spot check against
/// `check` (where and what the first server has there), within the connect and reply
/// timeouts (MDTM differs between mirrors: not compared). `Err` says why it cannot serve this file.
async fn open_one(
    job: &Job,
    m: &Mirror,
    size: u64,
    check: Option<((u64, u64), &[u8])>,
) -> Result<MirrorStart, String> {
    let tls = match m.url.tls.is_tls() {
        true => Some(Arc::new(
            TlsClient::new(&m.url, &m.verify).map_err(|e| e.to_string())?,
        )),
        false => None,
    };
    if m.verify == Verify::Insecure {
        eprintln!(
            "ftpseg: warning: certificate verification is off for mirror {} (--insecure)",
            m.url.redacted()
        );
    }
    let addrs = crate::retry::resolve(&m.url, job.timeouts.connect)
        .await
        .map_err(|e: Error| e.to_string())?;
    let said = |e: SessionError| e.to_string();
    let mut first = Session::connect_with(&addrs, &m.creds, job.timeouts, tls.as_ref())
        .await
        .map_err(said)?;
    first.set_use_pasv_address(job.use_pasv_address);
    first.set_active(job.active);
    match first.size(&m.url.path).await.map_err(said)? {
        Some(n) if n == size => {}
        Some(n) => return Err(format!("its file has {n} bytes, not {size}")),
        None => return Err("it does not tell the file's size (SIZE)".into()),
    }
    first.probe().await.map_err(said)?;
    if !first.rest_support().0 {
        return Err("it cannot resume a transfer at an offset (REST)".into());
    }
    if let Some(((at, len), want)) = check {
        let got = sample(&mut first, &m.url.path, at, len)
            .await
            .map_err(said)?;
        if got != want {
            return Err(format!(
                "its bytes at offset {at} differ from {}'s: another file of the same size",
                job.url.redacted()
            ));
        }
    }
    Ok(MirrorStart {
        url: m.url.clone(),
        creds: m.creds.clone(),
        net: Arc::new(Network::new(job.network_wait, addrs)),
        tls,
        first,
    })
}

/// Which server each of `workers` connections reads from, over `servers` servers of which
/// each takes at most `cap` connections: in turn, so that every server gets its share
/// (worker k of each server's first is that server's probed session). Fewer connections when
/// the caps allow fewer.
pub(super) fn assign(workers: usize, servers: usize, cap: Option<usize>) -> Vec<usize> {
    let cap = cap.unwrap_or(usize::MAX).max(1);
    let total = workers.min(cap.saturating_mul(servers)).max(1);
    (0..total).map(|k| k % servers.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_round_the_servers_within_their_caps() {
        assert_eq!(assign(5, 1, None), [0, 0, 0, 0, 0]);
        assert_eq!(assign(5, 3, None), [0, 1, 2, 0, 1]);
        assert_eq!(assign(9, 3, Some(3)), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
        // Three mirrors of two connections each: six in all, whatever -n says.
        assert_eq!(assign(9, 3, Some(2)), [0, 1, 2, 0, 1, 2]);
        assert_eq!(assign(1, 3, None), [0]);
    }

    proptest::proptest! {
        /// No server gets more than its cap, every server gets one before any gets two, and
        /// the first connections are the servers' first sessions.
        #[test]
        fn caps_hold_and_shares_are_even(workers in 1usize..64, servers in 1usize..6, cap in proptest::option::of(1usize..8)) {
            let a = assign(workers, servers, cap);
            let mut count = vec![0usize; servers];
            for &s in &a {
                count[s] += 1;
            }
            let max = count.iter().copied().max().unwrap();
            let min = count.iter().copied().min().unwrap();
            proptest::prop_assert!(max <= cap.unwrap_or(usize::MAX));
            proptest::prop_assert!(a.len() >= servers.min(workers) && max - min <= 1 || a.len() < servers);
            for (k, &s) in a.iter().enumerate().take(servers) {
                proptest::prop_assert_eq!(s, k);
            }
        }
    }
}
