//! What lives on the local disk: the preallocated `<out>.part` and its writers ([`part`]), how
//! bytes get into it (`--io`: [`io`]), the download's progress record `<out>.ftpseg`
//! ([`manifest`]), and what can fail there ([`StorageError`]).

pub mod error;
pub mod io;
pub mod manifest;
pub mod part;

pub use error::StorageError;
pub use io::Io;
pub use part::*;

/// Removes `path`; one that is not there is fine.
pub fn remove_if_exists(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
