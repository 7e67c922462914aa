//! Deterministic pseudo-random test data.
//!
//! The byte at absolute position `p` of a pattern keyed by `seed` depends only on `(seed, p)`:
//! the stream is made of 64-bit little-endian words, word `i` being the SplitMix64 output for
//! counter `i` under a key derived from `seed`. Any range of the pattern can therefore be
//! regenerated on its own ([`fill_pattern`]), which lets tests check a segment of a download
//! without reading the whole reference file, and any offset mistake (a segment written at the
//! wrong place, a resumed transfer starting at the wrong byte) shows up as different bytes.

use std::io::Write;
use std::path::Path;

/// SplitMix64 increment (the golden ratio in 64-bit fixed point).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Size of the buffer used by [`write_pattern_file`].
const WRITE_CHUNK: usize = 1024 * 1024;

/// The SplitMix64 finaliser: a bijective, well-mixing function on 64-bit words.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The per-seed key, so that neighbouring seeds give unrelated streams.
#[inline]
fn key(seed: u64) -> u64 {
    mix(seed ^ 0x6A09_E667_F3BC_C908)
}

/// Word `index` of the stream with the given key.
#[inline]
fn word(key: u64, index: u64) -> u64 {
    mix(key.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Fills `buf` with the pattern bytes at positions `offset .. offset + buf.len()` of the
/// pattern keyed by `seed`, exactly as [`write_pattern_file`] writes them.
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    let key = key(seed);
    let mut index = offset / 8;
    let mut rest: &mut [u8] = buf;

    // Leading partial word when `offset` is not 8-aligned.
    let skip = (offset % 8) as usize;
    if skip != 0 && !rest.is_empty() {
        let bytes = word(key, index).to_le_bytes();
        let n = (8 - skip).min(rest.len());
        rest[..n].copy_from_slice(&bytes[skip..skip + n]);
        rest = &mut rest[n..];
        index += 1;
    }

    let mut chunks = rest.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(key, index).to_le_bytes());
        index += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let bytes = word(key, index).to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&bytes[..n]);
    }
}

/// Returns the `len` pattern bytes starting at `offset` of the pattern keyed by `seed`.
///
/// # Panics
///
/// Panics if `len` does not fit in memory (`usize`).
pub fn pattern_bytes(seed: u64, offset: u64, len: u64) -> Vec<u8> {
    let len = usize::try_from(len).expect("pattern length does not fit in usize");
    let mut buf = vec![0u8; len];
    fill_pattern(seed, offset, &mut buf);
    buf
}

/// Writes a deterministic pseudo-random file (a SplitMix64 stream keyed by `seed`, so that any
/// offset error shows up as different bytes), `len` bytes, with 1 MiB buffered writes.
///
/// The file is created or truncated. Its content equals `pattern_bytes(seed, 0, len)`.
pub fn write_pattern_file(path: &Path, len: u64, seed: u64) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let mut buf = vec![0u8; WRITE_CHUNK];
    let mut offset = 0u64;
    while offset < len {
        // Bounded: `offset` grows by at least one byte per iteration up to `len`.
        let n = (len - offset).min(WRITE_CHUNK as u64) as usize;
        fill_pattern(seed, offset, &mut buf[..n]);
        file.write_all(&buf[..n])?;
        offset += n as u64;
    }
    file.flush()
}
