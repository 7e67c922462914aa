//! Metalink 4 files (RFC 5854, `.meta4`): the names, sizes, file hashes, piece hashes and FTP
//! mirror URLs of the files to download, read into plain values for the mirror download.
//!
//! Parsing is pure: text in, a [`Metalink`] or a [`MetalinkError`] out, no I/O. The XML is
//! read by `roxmltree` (a read-only tree; a DTD, and so entity expansion, is refused).
//! Everything a download relies on is checked here, so the caller can trust the values:
//! - names become local paths, so an absolute name, a `..` or `.` part, an empty part, a
//!   backslash or a control character is refused, and so are two files of one name;
//! - hashes are lower-cased and length-checked; hash types ftpseg does not know are skipped;
//! - piece hashes cover the file exactly: `ceil(size / length)` of them when the size is
//!   known, never more than [`MAX_PIECES`];
//! - only `ftp://`, `ftpes://` and `ftps://` URLs are kept (each must parse as an
//!   [`FtpUrl`]), ordered by priority (RFC 5854: lower first, none last, ties in document
//!   order); other URLs are counted by scheme so the caller can say what it leaves out, and a
//!   file without an FTP URL is an error.
//!
//! Elements this module does not use (`<published>`, `<description>`, `<signature>`, ...) and
//! elements of other namespaces are ignored, as RFC 5854 asks of extensions. Metalink 3
//! (`http://www.metalinker.org/`) is recognised and refused with a hint.

use std::collections::{BTreeMap, HashSet};

use roxmltree::{Document, Node, ParsingOptions};

use super::checksum::{Algo, Expected};
use crate::ftp::url::FtpUrl;

mod error;
#[cfg(test)]
mod tests;

pub use error::MetalinkError;

/// The Metalink 4 XML namespace (RFC 5854, section 2).
pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:metalink";

/// The Metalink 3 namespace, recognised only to refuse it clearly.
const METALINK3_NAMESPACE: &str = "http://www.metalinker.org/";

/// The most piece hashes one file may have (a 4 GiB file in 256 KiB pieces has 16,384).
pub const MAX_PIECES: usize = 10_000_000;

/// XML nodes the parser may build: each piece hash is up to three (the element, its text, the
/// white space before it), with room for the rest.
pub(super) const MAX_NODES: u32 = 4 * MAX_PIECES as u32;

/// The longest part of a local path most file systems accept, in bytes (`NAME_MAX`).
const MAX_NAME_PART_BYTES: usize = 255;

/// URL schemes ftpseg downloads from.
const FTP_SCHEMES: [&str; 3] = ["ftp", "ftpes", "ftps"];

/// A parsed Metalink document: the files it describes, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metalink {
    /// At least one; names are unique.
    pub files: Vec<MetaFile>,
}

/// One `<file>` of a Metalink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaFile {
    /// The relative local path (`name` attribute), checked to stay inside the download folder;
    /// it may hold `/` between parts (`debian/x.iso`).
    pub name: String,
    /// `<size>` in bytes, if given.
    pub size: Option<u64>,
    /// File-level `<hash>`es of known types, at most one per algorithm, in document order.
    pub hashes: Vec<Expected>,
    /// Piece hashes, if the Metalink has `<pieces>` of a known type (the strongest kind when
    /// it has several).
    pub pieces: Option<Pieces>,
    /// The FTP URLs, sorted by priority; never empty.
    pub urls: Vec<MetaUrl>,
    /// URLs ftpseg does not fetch, counted by scheme (`https` -> 2); a `<metaurl>` counts
    /// under its media type (`torrent`).
    pub skipped: BTreeMap<String, usize>,
}

/// `<pieces length="..." type="...">`: one hash per `length` bytes, the last piece shorter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pieces {
    /// Bytes per piece, above 0.
    pub length: u64,
    /// The algorithm of every piece hash.
    pub algo: Algo,
    /// Lower-case hex digests, piece 0 first.
    pub hashes: Vec<String>,
}

/// One `<url>` of a file.
///
/// `url` is the text as written (trimmed) and may hold a password: print it through
/// [`FtpUrl::parse`] and [`FtpUrl::redacted`], never as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaUrl {
    /// An `ftp://`, `ftpes://` or `ftps://` URL that [`FtpUrl::parse`] accepts.
    pub url: String,
    /// The `priority` attribute: 1 is the most preferred.
    pub priority: Option<u32>,
    /// The `location` attribute (an ISO 3166-1 country code such as `de`), as written.
    pub location: Option<String>,
}

impl MetaFile {
    /// How many URLs ftpseg leaves out for this file.
    pub fn skipped_count(&self) -> usize {
        self.skipped.values().sum()
    }

    /// `NAME: the Metalink has 3 URLs ftpseg does not fetch (2 https, 1 http)`, or `None`
    /// when every URL is an FTP one.
    pub fn skipped_note(&self) -> Option<String> {
        let n = self.skipped_count();
        (n > 0).then(|| {
            let plural = if n == 1 { "" } else { "s" };
            let kinds = error::scheme_counts(&self.skipped);
            format!(
                "{}: the Metalink has {n} URL{plural} ftpseg does not fetch ({kinds})",
                self.name
            )
        })
    }
}

/// Parses a Metalink 4 document (the whole text of a `.meta4` file; a leading byte-order mark
/// is allowed).
pub fn parse(text: &str) -> Result<Metalink, MetalinkError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let options = ParsingOptions {
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(xml_error)?;
    let root = doc.root_element();
    check_root(root)?;
    let mut files = Vec::new();
    let mut names = HashSet::new();
    for (i, node) in ml_children(root, "file").enumerate() {
        let file = parse_file(node, i + 1)?;
        if !names.insert(file.name.clone()) {
            return Err(MetalinkError::DuplicateName { name: file.name });
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err(MetalinkError::NoFiles);
    }
    Ok(Metalink { files })
}

/// The IANA name of a hash type (`sha-256`), as Metalink writes it.
pub fn hash_type(algo: Algo) -> &'static str {
    match algo {
        Algo::Sha256 => "sha-256",
        Algo::Sha512 => "sha-512",
        Algo::Sha1 => "sha-1",
        Algo::Md5 => "md5",
        Algo::Blake3 => "blake3",
    }
}

/// The algorithm of a Metalink hash type: the IANA names `sha-256`, `sha-512`, `sha-1` and
/// `md5` (any case), and the same without the dash as Metalink 3 and some generators write.
/// `None` for types ftpseg does not check (`sha-384`, `md2`, ...).
pub fn algo_of_type(name: &str) -> Option<Algo> {
    match name.trim().to_ascii_lowercase().as_str() {
        "sha-256" | "sha256" => Some(Algo::Sha256),
        "sha-512" | "sha512" => Some(Algo::Sha512),
        "sha-1" | "sha1" => Some(Algo::Sha1),
        "md5" => Some(Algo::Md5),
        _ => None,
    }
}

fn xml_error(e: roxmltree::Error) -> MetalinkError {
    match e {
        roxmltree::Error::DtdDetected => MetalinkError::Dtd,
        roxmltree::Error::NodesLimitReached => MetalinkError::TooLarge,
        other => {
            let pos = other.pos();
            MetalinkError::Xml {
                line: pos.row,
                column: pos.col,
                message: other.to_string(),
            }
        }
    }
}

fn check_root(root: Node) -> Result<(), MetalinkError> {
    let tag = root.tag_name();
    match (tag.namespace(), tag.name()) {
        (Some(NAMESPACE), "metalink") => Ok(()),
        (Some(METALINK3_NAMESPACE), _) => Err(MetalinkError::Metalink3),
        (None, "metalink")
            if root
                .attribute("version")
                .is_some_and(|v| v.starts_with('3')) =>
        {
            Err(MetalinkError::Metalink3)
        }
        (Some(ns), name) => Err(MetalinkError::NotMetalink {
            found: format!("<{name}> in namespace {ns:?}"),
        }),
        (None, name) => Err(MetalinkError::NotMetalink {
            found: format!("<{name}> without a namespace"),
        }),
    }
}

/// The element children of `node` named `local` in the Metalink 4 namespace.
fn ml_children<'a, 'i>(
    node: Node<'a, 'i>,
    local: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is_ml(*c, local))
}

fn is_ml(node: Node, local: &str) -> bool {
    node.is_element()
        && node.tag_name().namespace() == Some(NAMESPACE)
        && node.tag_name().name() == local
}

/// All text inside `node` (comments and child elements left out), trimmed.
fn text_of(node: Node) -> String {
    let text: String = node
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    text.trim().to_owned()
}

fn parse_file(node: Node, index: usize) -> Result<MetaFile, MetalinkError> {
    let name = node
        .attribute("name")
        .ok_or(MetalinkError::NoName { index })?
        .to_owned();
    if let Some(why) = unsafe_name(&name) {
        return Err(MetalinkError::UnsafeName { name, why });
    }
    let size = parse_size(&name, node)?;
    let hashes = parse_hashes(&name, node)?;
    let pieces = parse_pieces(&name, node, size)?;
    let (urls, skipped) = parse_urls(&name, node)?;
    if urls.is_empty() {
        return Err(MetalinkError::NoFtpUrl { name, skipped });
    }
    Ok(MetaFile {
        name,
        size,
        hashes,
        pieces,
        urls,
        skipped,
    })
}

/// Why `name` cannot be a relative local path inside the download folder, if it cannot.
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.starts_with('/') {
        return Some("it is an absolute path");
    }
    if name.contains('\\') {
        return Some("it contains a backslash");
    }
    if name.chars().any(char::is_control) {
        return Some("it contains a control character");
    }
    for part in name.split('/') {
        match part {
            "" => return Some("it has an empty part ('//' or a '/' at the end)"),
            "." | ".." => return Some("it has a '.' or '..' part"),
            p if p.len() > MAX_NAME_PART_BYTES => {
                return Some("a part of it is longer than 255 bytes");
            }
            _ => {}
        }
    }
    None
}

/// The one element `local` of a file, if there is one.
fn single<'a, 'i>(
    name: &str,
    node: Node<'a, 'i>,
    local: &'static str,
) -> Result<Option<Node<'a, 'i>>, MetalinkError> {
    let mut found = ml_children(node, local);
    let first = found.next();
    if found.next().is_some() {
        return Err(MetalinkError::Repeated {
            name: name.to_owned(),
            element: local.to_owned(),
        });
    }
    Ok(first)
}

fn parse_size(name: &str, node: Node) -> Result<Option<u64>, MetalinkError> {
    let Some(size) = single(name, node, "size")? else {
        return Ok(None);
    };
    let text = text_of(size);
    parse_u64(&text)
        .map(Some)
        .ok_or_else(|| MetalinkError::BadSize {
            name: name.to_owned(),
            text,
        })
}

/// Decimal digits only (no sign, no spaces) that fit a `u64`.
fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The file-level hashes of known types; one value per algorithm.
fn parse_hashes(name: &str, node: Node) -> Result<Vec<Expected>, MetalinkError> {
    let mut hashes: Vec<Expected> = Vec::new();
    for h in ml_children(node, "hash") {
        let Some(algo) = h.attribute("type").and_then(algo_of_type) else {
            continue;
        };
        let hex = check_hex(name, algo, &text_of(h), || "file hash".to_owned())?;
        match hashes.iter().find(|e| e.algo == algo) {
            Some(e) if e.hex == hex => {}
            Some(_) => {
                return Err(MetalinkError::ConflictingHash {
                    name: name.to_owned(),
                    algo,
                });
            }
            None => hashes.push(Expected { algo, hex }),
        }
    }
    Ok(hashes)
}

/// Lower-cases `text` and checks it is a digest of `algo`.
fn check_hex(
    name: &str,
    algo: Algo,
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<String, MetalinkError> {
    let found = if text.len() != algo.hex_len() {
        format!("{} characters", text.chars().count())
    } else if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        "a non-hex character".to_owned()
    } else {
        return Ok(text.to_ascii_lowercase());
    };
    Err(MetalinkError::BadHash {
        name: name.to_owned(),
        algo,
        what: what(),
        found,
    })
}

/// The `<pieces>` of the strongest known type (SHA-256 first, MD5 last), checked.
fn parse_pieces(
    name: &str,
    node: Node,
    size: Option<u64>,
) -> Result<Option<Pieces>, MetalinkError> {
    let mut best: Option<(Algo, Node)> = None;
    for p in ml_children(node, "pieces") {
        let Some(algo) = p.attribute("type").and_then(algo_of_type) else {
            continue;
        };
        match best {
            Some((a, _)) if a == algo => {
                return Err(MetalinkError::Repeated {
                    name: name.to_owned(),
                    element: format!("pieces type=\"{}\"", hash_type(algo)),
                });
            }
            Some((a, _)) if rank(a) < rank(algo) => {}
            _ => best = Some((algo, p)),
        }
    }
    best.map(|(algo, p)| read_pieces(name, p, algo, size, MAX_PIECES))
        .transpose()
}

/// Preference among piece hash types: `Algo::ALL` lists SHA-256, SHA-512, SHA-1, MD5.
fn rank(algo: Algo) -> usize {
    Algo::ALL
        .iter()
        .position(|a| *a == algo)
        .unwrap_or(usize::MAX)
}

/// Reads one `<pieces>` element: its length, then at most `limit` hashes, which must cover
/// `size` when it is known.
fn read_pieces(
    name: &str,
    p: Node,
    algo: Algo,
    size: Option<u64>,
    limit: usize,
) -> Result<Pieces, MetalinkError> {
    let text = p.attribute("length").unwrap_or("").trim();
    let length =
        parse_u64(text)
            .filter(|&l| l > 0)
            .ok_or_else(|| MetalinkError::BadPieceLength {
                name: name.to_owned(),
                text: text.to_owned(),
            })?;
    let too_many = || MetalinkError::TooManyPieces {
        name: name.to_owned(),
        limit,
    };
    let expected = size.map(|s| s.div_ceil(length));
    if expected.is_some_and(|e| e > limit as u64) {
        return Err(too_many());
    }
    let mut hashes = Vec::new();
    for h in ml_children(p, "hash") {
        if hashes.len() == limit {
            return Err(too_many());
        }
        let n = hashes.len();
        hashes.push(check_hex(name, algo, &text_of(h), || {
            format!("hash of piece {n}")
        })?);
    }
    match (size, expected) {
        (Some(size), Some(expected)) if hashes.len() as u64 != expected => {
            Err(MetalinkError::PieceCount {
                name: name.to_owned(),
                count: hashes.len(),
                expected,
                size,
                length,
            })
        }
        (None, _) if hashes.is_empty() => Err(MetalinkError::NoPieceHashes {
            name: name.to_owned(),
        }),
        _ => Ok(Pieces {
            length,
            algo,
            hashes,
        }),
    }
}

/// The file's FTP URLs sorted by priority, and the other URLs counted by scheme.
fn parse_urls(
    name: &str,
    node: Node,
) -> Result<(Vec<MetaUrl>, BTreeMap<String, usize>), MetalinkError> {
    let mut urls = Vec::new();
    let mut skipped = BTreeMap::new();
    for (i, u) in ml_children(node, "url").enumerate() {
        let text = text_of(u);
        let scheme = scheme_of(&text);
        if !FTP_SCHEMES.contains(&scheme.as_str()) {
            *skipped.entry(scheme).or_insert(0) += 1;
            continue;
        }
        FtpUrl::parse(&text).map_err(|error| MetalinkError::BadUrl {
            name: name.to_owned(),
            index: i + 1,
            error,
        })?;
        urls.push(MetaUrl {
            url: text,
            priority: parse_priority(name, u)?,
            location: u
                .attribute("location")
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        });
    }
    for m in ml_children(node, "metaurl") {
        let kind = m.attribute("mediatype").unwrap_or("metaurl").trim();
        *skipped.entry(kind.to_ascii_lowercase()).or_insert(0) += 1;
    }
    urls.sort_by_key(|u| (u.priority.is_none(), u.priority));
    Ok((urls, skipped))
}

fn parse_priority(name: &str, u: Node) -> Result<Option<u32>, MetalinkError> {
    let Some(text) = u.attribute("priority") else {
        return Ok(None);
    };
    parse_u64(text.trim())
        .and_then(|p| u32::try_from(p).ok())
        .map(Some)
        .ok_or_else(|| MetalinkError::BadPriority {
            name: name.to_owned(),
            text: text.to_owned(),
        })
}

/// The lower-cased scheme of a URL (`https`), or `other` when the text has none.
fn scheme_of(url: &str) -> String {
    match url.split_once(':') {
        Some((s, _))
            if !s.is_empty()
                && s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            s.to_ascii_lowercase()
        }
        _ => "other".to_owned(),
    }
}
