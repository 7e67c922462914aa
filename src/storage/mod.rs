//! What lives on the local disk: the preallocated `<out>.part` and its writers ([`part`]), and
//! the download's progress record `<out>.ftpseg` ([`manifest`]).

pub mod manifest;
pub mod part;

pub use part::*;
