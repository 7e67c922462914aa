//! Trust in what was written: per-chunk BLAKE3 hashes, and the file's BLAKE3 built from them.
//!
//! The file is cut into aligned chunks of [`CHUNK_SIZE`] bytes (a power of two). Each chunk is
//! hashed once: by the connection that wrote it, as it wrote it ([`ChunkStream`]), or else read
//! back by the checkpointer once its bytes are all written. When its bytes are all durable, the
//! manifest records its BLAKE3 *chaining value*: the hash of that chunk as a subtree of the
//! file's BLAKE3 tree (`blake3::hazmat`). Two things follow:
//! * On resume, every recorded chunk is hashed again from the `.part` and compared, so a
//!   partial download damaged or edited between runs is caught, and only the bad chunks are
//!   fetched again.
//! * Because the chunks are aligned power-of-two subtrees, their chaining values merge into
//!   the exact BLAKE3 of the whole file ([`root_hash`]): no second pass over the file at the
//!   end. (Checked against `blake3::hash` in the tests, for many sizes.)

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// Bytes per hashed chunk for files up to `CHUNK_SIZE * MAX_CHUNKS` (256 GiB). A power of two,
/// and a multiple of BLAKE3's 1 KiB chunk.
pub const CHUNK_SIZE: u64 = 4 << 20;
/// Most chunks one manifest records (about 4.6 MB of manifest); larger files get larger chunks.
pub const MAX_CHUNKS: u64 = 1 << 16;

/// The chunk size for a file of `size` bytes: [`CHUNK_SIZE`], doubled until the file has at
/// most [`MAX_CHUNKS`] chunks.
pub fn chunk_size_for(size: u64) -> u64 {
    let mut cs = CHUNK_SIZE;
    while size.div_ceil(cs) > MAX_CHUNKS {
        cs *= 2;
    }
    cs
}

/// Hashes chunk `[from, to)` of a file, reading it in pieces through `buf` with `read_at`.
pub fn hash_chunk<E>(
    from: u64,
    to: u64,
    buf: &mut [u8],
    mut read_at: impl FnMut(&mut [u8], u64) -> Result<(), E>,
) -> Result<ChainingValue, E> {
    let mut hasher = chunk_hasher(from);
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        read_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize_non_root())
}

/// The byte range of chunk `k` of a file of `size` bytes.
pub fn chunk_range(k: u64, chunk_size: u64, size: u64) -> (u64, u64) {
    let from = k * chunk_size;
    (from, (from + chunk_size).min(size))
}

/// The chaining value of the chunk that starts at byte `offset` and holds `data`.
pub fn chunk_cv(offset: u64, data: &[u8]) -> ChainingValue {
    let mut hasher = chunk_hasher(offset);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// A hasher for the subtree of the file's BLAKE3 tree that starts at byte `offset`.
fn chunk_hasher(offset: u64) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher
}

/// The chunks one writer hashes as it writes them, while the bytes are still in the CPU's
/// cache, so the checkpointer need not read them back cold (the cost: docs/benchmarks.md).
///
/// A writer feeds every run of bytes it has just written, in the order it wrote them
/// ([`ChunkStream::feed`]). A chunk gets a chaining value only if this one stream fed all of its
/// bytes, from its first to its last, without a gap: a range that starts or ends inside a chunk
/// (a steal's cut, a resume) leaves that chunk to be read back, as before. Pure: bytes in,
/// chaining values out.
pub struct ChunkStream {
    chunk_size: u64,
    size: u64,
    /// The offset the next fed bytes must start at to continue the current chunk.
    next: u64,
    /// The current chunk's hasher; `None` while skipping to the next chunk boundary.
    hasher: Option<blake3::Hasher>,
}

impl ChunkStream {
    /// A stream over a file of `size` bytes cut into chunks of `chunk_size` (a power of two,
    /// at least 1 KiB; 0: no chunks, nothing is hashed).
    pub fn new(chunk_size: u64, size: u64) -> ChunkStream {
        ChunkStream {
            chunk_size,
            size,
            next: u64::MAX,
            hasher: None,
        }
    }

    /// Bytes `data` were written at offset `at`. Calls `done(k, cv)` for every chunk `k` this
    /// completes that the stream saw whole.
    pub fn feed(&mut self, at: u64, mut data: &[u8], mut done: impl FnMut(u64, ChainingValue)) {
        if self.chunk_size == 0 {
            return;
        }
        if at != self.next {
            self.hasher = None;
        }
        let mut pos = at;
        while !data.is_empty() && pos < self.size {
            let k = pos / self.chunk_size;
            let (from, to) = chunk_range(k, self.chunk_size, self.size);
            if pos == from {
                self.hasher = Some(chunk_hasher(from));
            }
            let n = data.len().min((to - pos) as usize);
            if let Some(h) = self.hasher.as_mut() {
                h.update(&data[..n]);
            }
            pos += n as u64;
            data = &data[n..];
            if pos == to
                && let Some(h) = self.hasher.take()
            {
                done(k, h.finalize_non_root());
            }
        }
        self.next = pos;
    }
}

/// The BLAKE3 of a whole file, read sequentially with plain reads (not a memory map, so the
/// file does not end up in this process's RSS). Used where no chunk hashes exist: files of one
/// chunk or less, streamed downloads, and checks of a served or downloaded file.
pub fn hash_file(path: &std::path::Path) -> std::io::Result<blake3::Hash> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    // Large reads let BLAKE3 hash many 1 KiB chunks in parallel (SIMD): 0.41-0.50 s per GiB
    // with 1 MiB reads, 0.48-0.53 s with `update_reader`'s smaller ones (benches/hash.rs).
    let mut buf = vec![0u8; 1 << 20];
    let mut hasher = blake3::Hasher::new();
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize()),
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Lower-case hex of a chaining value (as the manifest stores it).
pub fn to_hex(cv: &ChainingValue) -> String {
    let mut s = String::with_capacity(64);
    for b in cv {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A chaining value from the manifest's hex; `None` if malformed.
pub fn from_hex(s: &str) -> Option<ChainingValue> {
    if s.len() != 64 {
        return None;
    }
    let mut cv = [0u8; 32];
    for (i, out) in cv.iter_mut().enumerate() {
        *out = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(cv)
}

/// The BLAKE3 of a file of `size` bytes (more than one chunk) from the chaining values of all
/// its chunks, merged the way BLAKE3's tree is shaped: the left subtree of any node holds the
/// largest power-of-two number of bytes that leaves something on the right.
///
/// A file of at most one chunk has no interior nodes: hash it directly instead.
pub fn root_hash(cvs: &[ChainingValue], chunk_size: u64, size: u64) -> blake3::Hash {
    assert!(size > chunk_size && chunk_size.is_power_of_two());
    assert_eq!(cvs.len() as u64, size.div_ceil(chunk_size));
    let (left, right) = split(0, cvs.len(), chunk_size, size);
    merge_subtrees_root(
        &subtree(cvs, 0, left, chunk_size, size),
        &subtree(cvs, left, right, chunk_size, size),
        Mode::Hash,
    )
}

/// Splits the chunks `[lo, hi)` into the left and right subtrees of their parent node:
/// returns `(mid, hi)`.
fn split(lo: usize, hi: usize, chunk_size: u64, size: u64) -> (usize, usize) {
    let from = lo as u64 * chunk_size;
    let to = (hi as u64 * chunk_size).min(size);
    let left_len = blake3::hazmat::left_subtree_len(to - from);
    (lo + (left_len / chunk_size) as usize, hi)
}

fn subtree(
    cvs: &[ChainingValue],
    lo: usize,
    hi: usize,
    chunk_size: u64,
    size: u64,
) -> ChainingValue {
    if hi - lo == 1 {
        return cvs[lo];
    }
    let (mid, hi) = split(lo, hi, chunk_size, size);
    merge_subtrees_non_root(
        &subtree(cvs, lo, mid, chunk_size, size),
        &subtree(cvs, mid, hi, chunk_size, size),
        Mode::Hash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Feeds `bytes` to a stream in the pieces `cuts` makes, from `start`, each piece from
    /// where the last ended, and returns what it completed.
    fn stream_cvs(
        bytes: &[u8],
        chunk_size: u64,
        start: u64,
        cuts: &[usize],
    ) -> Vec<(u64, ChainingValue)> {
        let mut s = ChunkStream::new(chunk_size, bytes.len() as u64);
        let mut out = Vec::new();
        let mut at = start as usize;
        for &len in cuts {
            let end = (at + len).min(bytes.len());
            s.feed(at as u64, &bytes[at..end], |k, cv| out.push((k, cv)));
            at = end;
        }
        out
    }

    #[test]
    fn a_stream_yields_exactly_the_chunks_it_saw_whole() {
        let cs = 4096;
        let bytes = data(5 * 4096 + 100);
        let want = |k: u64| {
            let (a, b) = chunk_range(k, cs, bytes.len() as u64);
            (k, chunk_cv(a, &bytes[a as usize..b as usize]))
        };
        // From byte 0 in uneven pieces: every chunk, the short last one too.
        let all = stream_cvs(&bytes, cs, 0, &[1000, 5000, 3, 9000, 100_000]);
        assert_eq!(all, (0..6).map(want).collect::<Vec<_>>());
        // Starting inside chunk 1 (a steal's cut): chunk 1 is not claimed.
        let cut = stream_cvs(&bytes, cs, 5000, &[7000, 100_000]);
        assert_eq!(cut, (2..6).map(want).collect::<Vec<_>>());
        // A gap (bytes fed elsewhere) drops the chunk under way only.
        let mut s = ChunkStream::new(cs, bytes.len() as u64);
        let mut got = Vec::new();
        s.feed(0, &bytes[..6000], |k, cv| got.push((k, cv)));
        s.feed(7000, &bytes[7000..12288], |k, cv| got.push((k, cv)));
        assert_eq!(got, vec![want(0), want(2)]);
        // Fed again from an earlier offset (bytes written again): hashing restarts there, and
        // the half-fed chunk 2 of the first run is not claimed.
        let mut s = ChunkStream::new(cs, bytes.len() as u64);
        let mut got = Vec::new();
        s.feed(0, &bytes[..10_000], |k, cv| got.push((k, cv)));
        s.feed(0, &bytes[..9000], |k, cv| got.push((k, cv)));
        s.feed(9000, &bytes[9000..12288], |k, cv| got.push((k, cv)));
        assert_eq!(got, vec![want(0), want(1), want(0), want(1), want(2)]);
        // No chunks: nothing.
        assert!(stream_cvs(&bytes, 0, 0, &[100_000]).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn streamed_chunks_match_chunks_read_whole(
            len in 0usize..40_000,
            start in 0usize..40_000,
            cuts in proptest::collection::vec(1usize..9000, 1..20),
        ) {
            let cs = 2048;
            let bytes = data(len);
            let start = start.min(len);
            let got = stream_cvs(&bytes, cs, start as u64, &cuts);
            let fed_to = (start + cuts.iter().sum::<usize>()).min(len) as u64;
            let want: Vec<_> = (0..(len as u64).div_ceil(cs))
                .filter_map(|k| {
                    let (a, b) = chunk_range(k, cs, len as u64);
                    (a >= start as u64 && b <= fed_to)
                        .then(|| (k, chunk_cv(a, &bytes[a as usize..b as usize])))
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    fn via_chunks(bytes: &[u8], chunk_size: u64) -> blake3::Hash {
        let size = bytes.len() as u64;
        let cvs: Vec<ChainingValue> = (0..size.div_ceil(chunk_size))
            .map(|k| {
                let (a, b) = chunk_range(k, chunk_size, size);
                chunk_cv(a, &bytes[a as usize..b as usize])
            })
            .collect();
        root_hash(&cvs, chunk_size, size)
    }

    #[test]
    fn merged_chunks_give_the_file_hash() {
        for &(chunk, len) in &[
            (1024u64, 2049usize),
            (1024, 4096),
            (2048, 10_000),
            (4096, 3 * 4096 + 1),
            (4096, 7 * 4096),
            (1 << 16, (1 << 20) + 12_345),
        ] {
            let bytes = data(len);
            assert_eq!(
                via_chunks(&bytes, chunk),
                blake3::hash(&bytes),
                "{chunk} {len}"
            );
        }
    }

    #[test]
    fn chunk_size_scales_with_the_file() {
        assert_eq!(chunk_size_for(0), CHUNK_SIZE);
        assert_eq!(chunk_size_for(256 << 30), CHUNK_SIZE);
        assert_eq!(chunk_size_for((256 << 30) + 1), 2 * CHUNK_SIZE);
        assert!((1u64 << 46).div_ceil(chunk_size_for(1 << 46)) <= MAX_CHUNKS);
    }

    #[test]
    fn hashing_in_pieces_equals_hashing_at_once() {
        // An aligned chunk [8192, 16384), read 999 bytes at a time.
        let bytes = data(16_384);
        let mut buf = [0u8; 999];
        let cv = hash_chunk::<()>(8192, 16_384, &mut buf, |b, at| {
            b.copy_from_slice(&bytes[at as usize..at as usize + b.len()]);
            Ok(())
        })
        .unwrap();
        assert_eq!(cv, chunk_cv(8192, &bytes[8192..]));
    }

    #[test]
    fn hex_round_trip() {
        let cv = chunk_cv(0, b"abc");
        assert_eq!(from_hex(&to_hex(&cv)), Some(cv));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }

    proptest! {
        #[test]
        fn any_size_any_chunking(len in 1025usize..40_000, shift in 10u32..14) {
            let chunk = 1u64 << shift;
            prop_assume!(len as u64 > chunk);
            let bytes = data(len);
            prop_assert_eq!(via_chunks(&bytes, chunk), blake3::hash(&bytes));
        }
    }
}
