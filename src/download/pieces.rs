//! A Metalink's piece hashes (`Job::pieces`): which servers wrote into each piece
//! ([`Provenance`], recorded as bytes land), and, once every range is in, every piece checked
//! against its hash ([`check_and_repair`]). A piece that fails is fetched again from a server
//! that wrote none of it, and the mirrors that did are dropped by name: bytes from several
//! servers mix into one file only where they prove to be the same file's.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::download::state::{Server, Shared};
use crate::download::transfer::log_in;
use crate::error::Error;
use crate::integrity::checksum::Hasher;
use crate::integrity::metalink::Pieces;
use crate::storage::PartFile;

/// Which servers (bit k: server k) wrote bytes into each piece, in this run.
pub(super) struct Provenance {
    length: u64,
    masks: Vec<AtomicU32>,
}

impl Provenance {
    pub fn new(pieces: &Pieces) -> Provenance {
        Provenance {
            length: pieces.length.max(1),
            masks: (0..pieces.hashes.len())
                .map(|_| AtomicU32::new(0))
                .collect(),
        }
    }

    /// Server `mirror` wrote `n` bytes at `at`.
    pub fn wrote(&self, mirror: usize, at: u64, n: u64) {
        if n == 0 {
            return;
        }
        // At most 32 servers (`mirrors::MAX_SERVERS`).
        let bit = 1u32 << mirror.min(31);
        let (first, last) = (at / self.length, (at + n - 1) / self.length);
        for p in first..=last {
            if let Some(m) = self.masks.get(p as usize) {
                m.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    fn writers(&self, piece: usize) -> u32 {
        self.masks[piece].load(Ordering::Relaxed)
    }
}

/// Every piece of the `.part` against its hash; a failing piece is fetched again from a
/// server that did not write into it (the first such live server), checked again, and the
/// mirrors that wrote it dropped with a note. `Ok(true)` when a piece was repaired (the
/// file's hash must then be read again, not merged from the chunks hashed as written). A piece
/// that no server can serve right fails the download (`Error::ChecksumMismatch`, the `.part`
/// kept).
pub(super) async fn check_and_repair(
    shared: &Shared,
    part: &PartFile,
    pieces: &Pieces,
) -> Result<bool, Error> {
    let Some(prov) = &shared.output.provenance else {
        return Ok(false);
    };
    let size = shared.target.size;
    if pieces.hashes.len() as u64 != size.div_ceil(pieces.length.max(1)) {
        return Err(mismatch(
            shared,
            0,
            &format!("its pieces do not cover the server's {size} bytes"),
        ));
    }
    let bad = tokio::task::block_in_place(|| failing_pieces(part, pieces, size))?;
    for &p in &bad {
        repair(shared, part, pieces, p, prov.writers(p)).await?;
    }
    Ok(!bad.is_empty())
}

/// Piece `p` failed its hash: fetched again from each server in turn, those that wrote none
/// of it first, dropped ones last, until its bytes match. The server that wrote the bad bytes
/// is dropped by name (when one alone wrote the piece; several are named), and so is a server
/// whose new bytes fail too.
async fn repair(
    shared: &Shared,
    part: &PartFile,
    pieces: &Pieces,
    p: usize,
    writers: u32,
) -> Result<(), Error> {
    let size = shared.target.size;
    let (at, len) = span(pieces, p, size);
    let wrote = |k: usize| writers & (1u32 << k) != 0;
    let mut order: Vec<usize> = (0..shared.servers.len()).collect();
    order.sort_by_key(|&k| (shared.servers[k].dropped.load(Ordering::SeqCst), wrote(k)));
    let mut last = String::from("no server to fetch it from");
    for k in order {
        let from = &shared.servers[k];
        match refetch(shared, from, at, len).await {
            Err(e) => last = format!("fetching it again from {} failed: {e}", from.label),
            Ok(()) if tokio::task::block_in_place(|| piece_ok(part, pieces, p, size))? => {
                let guilty: Vec<&Server> = (0..shared.servers.len())
                    .filter(|&j| j != k && wrote(j))
                    .map(|j| &shared.servers[j])
                    .collect();
                match guilty.as_slice() {
                    [one] => say_dropped(one, at),
                    // Several wrote into it (a range cut inside the piece): one of them erred.
                    many => eprintln!(
                        "ftpseg: the piece at offset {at} failed its Metalink hash; one of {} \
                         served it wrong; fetched again from {}",
                        many.iter()
                            .map(|s| s.label.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        from.label
                    ),
                }
                return Ok(());
            }
            Ok(()) => {
                say_dropped(from, at);
                last = format!("{} serves it wrong too", from.label);
            }
        }
    }
    Err(mismatch(shared, at, &last))
}

/// A server whose bytes at `at` failed the piece hash: dropped, once, by name.
fn say_dropped(s: &Server, at: u64) {
    if !s.dropped.swap(true, Ordering::SeqCst) {
        eprintln!(
            "ftpseg: mirror {} served bytes that do not match the Metalink piece hash at \
             offset {at}: dropped; the piece is fetched again",
            s.label
        );
    }
}

/// The offset and length of piece `p` of a file of `size` bytes.
fn span(pieces: &Pieces, p: usize, size: u64) -> (u64, u64) {
    let at = p as u64 * pieces.length;
    (at, pieces.length.min(size.saturating_sub(at)))
}

/// The pieces whose bytes do not match their hash.
fn failing_pieces(part: &PartFile, pieces: &Pieces, size: u64) -> Result<Vec<usize>, Error> {
    let mut bad = Vec::new();
    for p in 0..pieces.hashes.len() {
        if !piece_ok(part, pieces, p, size)? {
            bad.push(p);
        }
    }
    Ok(bad)
}

/// Whether piece `p` of the `.part` matches its hash.
fn piece_ok(part: &PartFile, pieces: &Pieces, p: usize, size: u64) -> Result<bool, Error> {
    let (at, len) = span(pieces, p, size);
    let mut h = Hasher::new(pieces.algo);
    let mut buf = vec![0u8; (1 << 20).min(len.max(1)) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        part.read_exact_at(&mut buf[..n], at + done)?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(h.finish_hex() == pieces.hashes[p])
}

/// `len` bytes at `at` from `server`, written into the `.part` over what was there.
async fn refetch(shared: &Shared, server: &Server, at: u64, len: u64) -> Result<(), String> {
    let mut s = log_in(server).await.map_err(|e| e.to_string())?;
    let t = s
        .retr_range(&server.url.path, at, Some(at + len))
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = t.stream;
    let mut buf = vec![0u8; (1 << 20).min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        s.read_exact_data(&mut stream, &mut buf[..n])
            .await
            .map_err(|e| e.to_string())?;
        shared
            .output
            .writer
            .write_at(&buf[..n], at + done)
            .map_err(|e| e.to_string())?;
        done += n as u64;
    }
    let _ = s.end_transfer(stream, t.ends_at == Some(at + len)).await;
    s.quit_later();
    Ok(())
}

fn mismatch(shared: &Shared, at: u64, why: &str) -> Error {
    Error::ChecksumMismatch {
        path: shared.output.part_path.clone(),
        detail: format!("the piece at offset {at} does not match the Metalink's hash ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::checksum::Algo;

    #[test]
    fn writers_are_recorded_for_every_piece_a_write_touches() {
        let pieces = Pieces {
            length: 10,
            algo: Algo::Sha256,
            hashes: vec![String::new(); 4],
        };
        let p = Provenance::new(&pieces);
        p.wrote(0, 0, 10);
        p.wrote(1, 15, 10);
        p.wrote(2, 39, 1);
        p.wrote(3, 40, 5);
        assert_eq!(
            (0..4).map(|k| p.writers(k)).collect::<Vec<_>>(),
            [0b1, 0b10, 0b10, 0b100]
        );
        assert_eq!(span(&pieces, 3, 35), (30, 5));
    }
}
