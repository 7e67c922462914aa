//! What the user sees: progress bars and lines ([`progress`]), `--json` events ([`events`]) and
//! the `FTPSEG_TRACE` diagnostic lines ([`trace`]).

pub mod events;
pub mod progress;
pub mod trace;

/// Bytes as a short human string with binary units: "1.50 GiB", "512 B".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}
