//! What lives on the local disk: the preallocated `<out>.part` and its writers ([`part`]), the
//! download's progress record `<out>.ftpseg` ([`manifest`]), and what can fail there
//! ([`StorageError`]).

pub mod error;
pub mod manifest;
pub mod part;

pub use error::StorageError;
pub use part::*;
