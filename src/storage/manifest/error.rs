//! What can go wrong with a manifest ([`ManifestError`], [`Mismatch`]), each as one line that
//! names the file and says what to do, and the helpers that word those lines.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::{FORMAT, MAX_MANIFEST_BYTES, PART_SUFFIX, SUFFIX, VERSION};

/// What went wrong with a file-system operation on a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Opening or reading the manifest.
    Read,
    /// Creating, writing or syncing `<manifest>.tmp`.
    Write,
    /// Renaming `<manifest>.tmp` over the manifest.
    Rename,
    /// Syncing the folder that holds the manifest.
    SyncFolder,
    /// Deleting the manifest or its `.tmp`.
    Remove,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Rename => "replace",
            IoOp::SyncFolder => "sync the folder of",
            IoOp::Remove => "remove",
        })
    }
}

/// Every failure of this module. Each message is a single line that names the
/// manifest (when there is one) and tells the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file-system operation failed.
    #[error("cannot {op} manifest {}: {source}: {}", .path.display(), io_advice(*.op, .path))]
    Io {
        /// The manifest path.
        path: PathBuf,
        /// What was being done.
        op: IoOp,
        /// The underlying error.
        source: io::Error,
    },
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error(
        "manifest {} is too large ({size} bytes, the limit is {MAX_MANIFEST_BYTES}), so it is not an ftpseg manifest or it is damaged: {}",
        .path.display(), restart_advice(.path)
    )]
    TooLarge {
        /// The manifest path.
        path: PathBuf,
        /// Its size in bytes (at least the limit + 1).
        size: u64,
    },
    /// The manifest file is empty (or only whitespace).
    #[error(
        "manifest {} is empty (probably cut short by a crash or a full disk): {}",
        .path.display(), restart_advice(.path)
    )]
    Empty {
        /// The manifest path.
        path: PathBuf,
    },
    /// The JSON ends early.
    #[error(
        "manifest {} is truncated (the JSON stops at line {line}, column {column}; probably cut short by a crash or a full disk): {}",
        .path.display(), restart_advice(.path)
    )]
    Truncated {
        /// The manifest path.
        path: PathBuf,
        /// Line where the text ends (1-based).
        line: usize,
        /// Column where the text ends (1-based).
        column: usize,
    },
    /// The file is not JSON at all.
    #[error(
        "manifest {} is not valid JSON (line {line}, column {column}: {message}): {}",
        .path.display(), restart_advice(.path)
    )]
    Syntax {
        /// The manifest path.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// Valid JSON, but a field is missing or has the wrong type.
    #[error(
        "manifest {} has a missing or malformed field (line {line}, column {column}: {message}): {}",
        .path.display(), restart_advice(.path)
    )]
    Schema {
        /// The manifest path.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The `format` field is missing or is not [`FORMAT`].
    #[error(
        "{} is not an ftpseg manifest (format is {found}, expected \"{FORMAT}\"): move it away if it is someone else's file, or run again with --restart to start over",
        .path.display()
    )]
    WrongFormat {
        /// The manifest path.
        path: PathBuf,
        /// What was found instead, as JSON (or `missing`).
        found: String,
    },
    /// The `version` field is missing or is not [`VERSION`].
    #[error(
        "manifest {} has format version {found}, but this ftpseg reads only version {VERSION}: use the ftpseg that started this download, or run again with --restart to start over (the partial download {} was kept)",
        .path.display(), part_display(.path)
    )]
    UnsupportedVersion {
        /// The manifest path.
        path: PathBuf,
        /// The version found, as JSON (or `missing`).
        found: String,
    },
    /// A loaded manifest breaks an invariant (see
    /// [`Manifest::validate`](super::Manifest::validate)).
    #[error(
        "manifest {} is inconsistent ({reason}): {}",
        .path.display(), restart_advice(.path)
    )]
    Corrupt {
        /// The manifest path.
        path: PathBuf,
        /// Which invariant is broken.
        reason: String,
    },
    /// [`Manifest::save`](super::Manifest::save) was asked to write a manifest that breaks an
    /// invariant; nothing was written.
    #[error(
        "refusing to save manifest {} ({reason}); the previous manifest is unchanged: this is a bug in ftpseg, please report it",
        .path.display()
    )]
    RefusedSave {
        /// The manifest path.
        path: PathBuf,
        /// Which invariant is broken.
        reason: String,
    },
    /// [`Manifest::new`](super::Manifest::new) or
    /// [`Manifest::validate`](super::Manifest::validate) found a broken invariant.
    #[error("invalid download manifest ({reason}): this is a bug in ftpseg, please report it")]
    Invalid {
        /// Which invariant is broken.
        reason: String,
    },
    /// The URL given to [`Manifest::new`](super::Manifest::new) (or found in a manifest being
    /// validated) carries a password. The URL itself is not kept, so the
    /// password cannot leak through this error either.
    #[error(
        "refusing to record a URL that contains a password in the download manifest: pass the URL with its password removed (this is a bug in ftpseg, please report it)"
    )]
    PasswordInUrl,
}

/// The remote file is not the one the manifest was made for.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Different URL.
    #[error("the manifest belongs to another URL (was {old}, now {new})")]
    Url {
        /// URL in the manifest.
        old: String,
        /// URL of this run.
        new: String,
    },
    /// Different size, or the size became known/unknown.
    #[error(
        "the remote file changed since the last run (size was {}, now {})",
        size_display(*.old), size_display(*.new)
    )]
    Size {
        /// Size in the manifest.
        old: Option<u64>,
        /// Size reported now.
        new: Option<u64>,
    },
    /// Different modification time.
    #[error("the remote file changed since the last run (modification time was {old}, now {new})")]
    Mdtm {
        /// MDTM in the manifest.
        old: String,
        /// MDTM reported now.
        new: String,
    },
}

/// Turn a serde_json error into the matching variant.
pub(super) fn json_error(path: &Path, e: &serde_json::Error) -> ManifestError {
    use serde_json::error::Category;
    let path = path.to_owned();
    let (line, column) = (e.line(), e.column());
    match e.classify() {
        Category::Eof => ManifestError::Truncated { path, line, column },
        Category::Data => ManifestError::Schema {
            path,
            line,
            column,
            message: json_message(e),
        },
        Category::Syntax | Category::Io => ManifestError::Syntax {
            path,
            line,
            column,
            message: json_message(e),
        },
    }
}

/// The serde_json message without its " at line L column C" suffix, on one
/// line.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    one_line(message, 200)
}

/// What the top level of a JSON document is, unless it is an object.
pub(super) fn top_level_kind(bytes: &[u8]) -> Option<&'static str> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => None,
        Some(b'[') => Some("a JSON array"),
        Some(b'"') => Some("a JSON string"),
        Some(b't' | b'f') => Some("a JSON boolean"),
        Some(b'n') => Some("JSON null"),
        _ => Some("a JSON number"),
    }
}

/// A JSON value from a manifest, shortened for an error message.
pub(super) fn json_value_display(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(v) => one_line(&v.to_string(), 64),
    }
}

/// `s` with control characters replaced and cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// The partial download that goes with a manifest, for messages:
/// `x.iso.ftpseg` gives `x.iso.part`.
fn part_display(manifest: &Path) -> String {
    let name = manifest.as_os_str().to_string_lossy();
    match name.strip_suffix(SUFFIX) {
        Some(output) if !output.is_empty() => format!("{output}{PART_SUFFIX}"),
        _ => "(<output>.part)".to_owned(),
    }
}

/// The advice after a load failure.
pub(super) fn restart_advice(manifest: &Path) -> String {
    format!(
        "the partial download {} was kept; run again with --restart to start over",
        part_display(manifest)
    )
}

/// The advice after a file-system failure.
fn io_advice(op: IoOp, manifest: &Path) -> String {
    match op {
        IoOp::Read => format!(
            "check its permissions, or run again with --restart to start over (the partial download {} was kept)",
            part_display(manifest)
        ),
        IoOp::Write | IoOp::Rename => {
            "check the free space and the permissions of its folder; the previous manifest, if any, is unchanged".to_owned()
        }
        IoOp::SyncFolder => {
            "the progress may not survive a power loss; check the file system and run again to resume".to_owned()
        }
        IoOp::Remove => "delete it by hand".to_owned(),
    }
}

/// A size for a message.
fn size_display(size: Option<u64>) -> String {
    size.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
}
