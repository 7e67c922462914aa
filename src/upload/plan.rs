//! The pure plan of an upload: the temporary remote name, remote paths, the pieces of a
//! parallel upload, and where a single stream resumes. No I/O here.

use serde::{Deserialize, Serialize};

/// Appended to the remote name while uploading (`--temp-suffix` changes it).
pub const DEFAULT_TEMP_SUFFIX: &str = ".ftpseg-part";
/// Smallest and largest parallel piece (one `STOR` each).
pub const MIN_PIECE: u64 = 1 << 20;
pub const MAX_PIECE: u64 = 64 << 20;

/// The remote name written while uploading: the final name plus `suffix`, or the final name
/// itself (`--no-temp`, `suffix` None).
pub fn temp_name(final_path: &str, suffix: Option<&str>) -> String {
    match suffix {
        Some(s) => format!("{final_path}{s}"),
        None => final_path.to_owned(),
    }
}

/// `dir/name` for a remote folder path (empty: the login folder).
pub fn remote_join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// One `STOR` of a parallel upload: the bytes `[start, end)`, and whether the server confirmed
/// them with `226`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
    pub acked: bool,
}

/// The size of the pieces of a parallel upload: about four per connection, at least
/// [`MIN_PIECE`], at most [`MAX_PIECE`] (a lost piece is sent again whole).
pub fn piece_size(size: u64, connections: usize) -> u64 {
    (size / (connections.max(1) as u64 * 4)).clamp(MIN_PIECE, MAX_PIECE)
}

/// Cuts `[0, size)` into consecutive pieces of `piece` bytes (the last one shorter).
pub fn plan_pieces(size: u64, piece: u64) -> Vec<Piece> {
    let piece = piece.max(1);
    (0..size.div_ceil(piece))
        .map(|k| Piece {
            start: k * piece,
            end: ((k + 1) * piece).min(size),
            acked: false,
        })
        .collect()
}

/// Whether a parallel upload is worth probing for: more than one connection asked for and at
/// least two pieces.
pub fn wants_parallel(size: u64, connections: usize) -> bool {
    connections > 1 && size >= 2 * MIN_PIECE
}

/// Where a single-stream upload goes on, from the remote size of the file being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SingleResume {
    /// Nothing there: from byte 0.
    Fresh,
    /// Go on from this offset (the remote size).
    From(u64),
    /// The remote file is larger than the local one: it is not (only) ours.
    TooLarge(u64),
}

/// The resume decision of a single stream: the remote size is the truth of what arrived
/// (the server wrote a prefix of what we sent), as long as it is not larger than the file.
pub fn single_resume(remote_size: Option<u64>, local_size: u64) -> SingleResume {
    match remote_size {
        None | Some(0) => SingleResume::Fresh,
        Some(n) if n > local_size => SingleResume::TooLarge(n),
        Some(n) => SingleResume::From(n),
    }
}

/// The chunks (indexes) whose bytes overlap `[from, to)`.
pub fn chunks_overlapping(from: u64, to: u64, chunk_size: u64) -> std::ops::Range<u64> {
    if to <= from {
        return 0..0;
    }
    from / chunk_size..to.div_ceil(chunk_size)
}
