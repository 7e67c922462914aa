//! The reasons a Metalink is refused ([`MetalinkError`]), each a one-line message that names
//! what is wrong and what to do.

use std::collections::BTreeMap;

use super::{MAX_NODES, hash_type};
use crate::ftp::url::UrlError;
use crate::integrity::checksum::Algo;

/// Why a Metalink was refused. Each message is one line, written to follow
/// `ftpseg: error: FILE.meta4: `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetalinkError {
    /// The text is not well-formed XML; `message` holds the parser's `line:column`.
    #[error("not valid XML: {message}")]
    Xml {
        /// 1-based line of the fault (1 when the parser gives none).
        line: u32,
        /// 1-based column of the fault.
        column: u32,
        /// The parser's description.
        message: String,
    },
    /// The XML declares a DTD, which a Metalink never has.
    #[error("the XML declares a DTD, which Metalink files do not have; refused")]
    Dtd,
    /// The XML has more nodes than a Metalink of [`MAX_PIECES`](super::MAX_PIECES) pieces would.
    #[error("the XML has more than {MAX_NODES} nodes; refused as too large for a Metalink")]
    TooLarge,
    /// A Metalink 3 document.
    #[error(
        "Metalink 3 is not supported: use the Metalink 4 file (.meta4, RFC 5854) that mirrors publish beside it"
    )]
    Metalink3,
    /// The root element is not Metalink 4's.
    #[error(
        "not a Metalink 4 file: the root element is {found}, not <metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">"
    )]
    NotMetalink {
        /// The root element and its namespace, described.
        found: String,
    },
    /// The document has no `<file>`.
    #[error("the Metalink lists no <file>: there is nothing to download")]
    NoFiles,
    /// A `<file>` without a `name` attribute.
    #[error("<file> number {index} has no name attribute; every file needs name=\"...\"")]
    NoName {
        /// 1-based position among the files.
        index: usize,
    },
    /// A name that would leave the download folder or cannot be a local path.
    #[error("unsafe file name {name:?}: {why}; Metalink names become local paths")]
    UnsafeName {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two `<file>`s with one name.
    #[error("the file {name} is listed twice; each <file> needs its own name")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// An element that may appear once appears again.
    #[error("{name}: <{element}> is given twice; give it once")]
    Repeated {
        /// The file's name.
        name: String,
        /// The element, or `pieces type="..."`.
        element: String,
    },
    /// `<size>` is not a number of bytes.
    #[error("{name}: the size {text:?} is not a number of bytes")]
    BadSize {
        /// The file's name.
        name: String,
        /// The text of `<size>`.
        text: String,
    },
    /// A digest of the wrong length or with non-hex characters.
    #[error("{name}: the {kind} {what} is not {len} hex digits ({found})", kind = hash_type(*.algo), len = .algo.hex_len())]
    BadHash {
        /// The file's name.
        name: String,
        /// The digest's algorithm.
        algo: Algo,
        /// `file hash` or `hash of piece N`.
        what: String,
        /// What was found instead (`63 characters`, `a non-hex character`).
        found: String,
    },
    /// Two different file hashes of one algorithm.
    #[error("{name}: two different {kind} file hashes; fix the Metalink", kind = hash_type(*.algo))]
    ConflictingHash {
        /// The file's name.
        name: String,
        /// The algorithm.
        algo: Algo,
    },
    /// `<pieces length>` missing, not a number, or 0.
    #[error("{name}: the piece length {text:?} is not a number of bytes above 0")]
    BadPieceLength {
        /// The file's name.
        name: String,
        /// The attribute as written (empty when missing).
        text: String,
    },
    /// The piece hashes do not cover the file.
    #[error(
        "{name}: {count} piece hashes, but {size} bytes in pieces of {length} need {expected}; fix the Metalink or drop its <pieces>"
    )]
    PieceCount {
        /// The file's name.
        name: String,
        /// Hashes found.
        count: usize,
        /// `ceil(size / length)`.
        expected: u64,
        /// The file's size.
        size: u64,
        /// The piece length.
        length: u64,
    },
    /// `<pieces>` without any `<hash>` (and no size saying the file is empty).
    #[error("{name}: <pieces> has no <hash>")]
    NoPieceHashes {
        /// The file's name.
        name: String,
    },
    /// More piece hashes than [`MAX_PIECES`](super::MAX_PIECES).
    #[error("{name}: more than {limit} piece hashes; refused (a larger piece length needs fewer)")]
    TooManyPieces {
        /// The file's name.
        name: String,
        /// The limit that was passed.
        limit: usize,
    },
    /// A `priority` attribute that is not a whole number.
    #[error("{name}: the URL priority {text:?} is not a whole number (1 is the most preferred)")]
    BadPriority {
        /// The file's name.
        name: String,
        /// The attribute as written.
        text: String,
    },
    /// An FTP URL that [`FtpUrl::parse`](crate::ftp::url::FtpUrl::parse) refuses.
    #[error("{name}: URL number {index} is not a usable FTP URL: {error}")]
    BadUrl {
        /// The file's name.
        name: String,
        /// 1-based position among the file's `<url>`s.
        index: usize,
        /// Why (never holds the password).
        error: UrlError,
    },
    /// A file with no FTP URL at all.
    #[error("no ftp:// URL for {name}: ftpseg fetches FTP only{others}", others = others_note(.skipped))]
    NoFtpUrl {
        /// The file's name.
        name: String,
        /// The URLs it has, by scheme.
        skipped: BTreeMap<String, usize>,
    },
}

/// `2 https, 1 http`.
pub(super) fn scheme_counts(skipped: &BTreeMap<String, usize>) -> String {
    let mut counts: Vec<(&String, &usize)> = skipped.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .map(|(scheme, n)| format!("{n} {scheme}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` (the Metalink has 2 https, 1 http)`, or nothing when there are no URLs at all.
fn others_note(skipped: &BTreeMap<String, usize>) -> String {
    if skipped.is_empty() {
        " (the Metalink has no <url> for it)".to_owned()
    } else {
        format!(" (the Metalink has {})", scheme_counts(skipped))
    }
}
