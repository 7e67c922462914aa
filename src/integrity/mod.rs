//! Trust in the bytes: BLAKE3 per chunk ([`verify`]), digests of the written prefix taken during
//! a download ([`digest`]), and checksums and checksum files ([`checksum`]).

pub mod checksum;
pub mod digest;
pub mod verify;
