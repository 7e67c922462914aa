//! The commands, one file each: `get` (`ftpseg URL...`), `put`, `bench`, `demo`, `serve`. Each
//! takes a plan built by the command line's second stage (`cli::jobs`) and the one [`Stop`],
//! never clap's arguments; nothing here imports `cli`.

pub mod bench;
pub mod demo;
pub mod get;
pub mod inhibit;
pub mod put;
pub mod serve;
pub mod stop;

pub use stop::Stop;
