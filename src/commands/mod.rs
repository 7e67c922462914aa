//! The commands besides a plain download: `bench` and `demo`/`serve`.

pub mod bench;
pub mod demo;
