//! What the user sees: progress bars and lines ([`progress`]), `--json` events ([`events`]) and
//! the `FTPSEG_TRACE` diagnostic lines ([`trace`]).

pub mod events;
pub mod progress;
pub mod trace;
