//! Trust in the bytes: BLAKE3 per chunk ([`verify`]), digests of the written prefix taken during
//! a download ([`digest`]), checksums and checksum files ([`checksum`]), and Metalink 4 files
//! with their mirrors and piece hashes ([`metalink`]).

pub mod checksum;
pub mod digest;
pub mod metalink;
pub mod verify;
