//! What can go wrong on the local disk: the error type of [`super::part`], with its one-line
//! messages; the crate's error type carries it as it is (exit code 9 for an output that exists,
//! 8 otherwise).

use std::path::PathBuf;

/// A failure of the `.part` file or of committing it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The filesystem has fewer free bytes than the file still needs (sizes as human strings).
    #[error(
        "not enough space for {path}: need {need}, have {have}; free some space or choose another folder with -o"
    )]
    NoSpace {
        path: PathBuf,
        need: String,
        have: String,
    },
    /// A system call on `path` failed; `action` says what we were doing ("cannot create").
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--io mmap` was asked for and this file cannot be mapped safely (`why`).
    #[error(
        "cannot write {} through a memory map (--io mmap): {why}; use --io splice or --io pwrite",
        path.display()
    )]
    MapRefused { path: PathBuf, why: String },
    /// The finished download would replace a file that is there already (no `--force`).
    #[error("{} exists already; use --force to overwrite it", .0.display())]
    Exists(PathBuf),
}

impl StorageError {
    /// An I/O failure while doing `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
