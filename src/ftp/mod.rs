//! The FTP side: one control session ([`session`]), the pure parsers for replies ([`reply`]),
//! URLs ([`url`]), credentials files ([`netrc`]) and listings ([`listing`]), a server's shared
//! connection budget ([`pool`]), the data connections' pace ([`ratelimit`]) and pipe ([`pipe`]).
//!
//! The control channel is `suppaftp` (tokio); this module is the only place that talks to it,
//! so a change of FTP library touches nothing else. Everything the engine needs is in
//! [`session::Session`]: connect and log in, probe capabilities, `SIZE`, `MDTM`, and ranged
//! `REST`+`RETR` transfers that can be stopped early and the session reused. [`tls`] adds FTPS
//! (explicit and implicit) with rustls. [`upload`] adds the commands of `ftpseg put` (`STOR` at
//! an offset, `APPE`, `RNFR`/`RNTO`, `DELE`, server-side hashes).

pub mod dir;
pub mod listing;
pub mod netrc;
pub mod pipe;
pub mod pool;
pub mod ratelimit;
pub mod reply;
pub mod session;
pub mod tls;
pub mod upload;
pub mod url;

pub use session::{Credentials, DataStream, Session, SessionError, Timeouts, Transfer};
pub use tls::{TlsClient, TlsError, Verify};
