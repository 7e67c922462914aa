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

/// How long a download or upload took, for its summary line: "0.79 s", "4 min 05 s",
/// "2 h 07 min".
pub fn human_elapsed(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{:.2} s", d.as_secs_f64()),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// "1 connection", "8 connections".
pub fn connections(n: usize) -> String {
    if n == 1 {
        "1 connection".to_owned()
    } else {
        format!("{n} connections")
    }
}

/// "2 h 13 min", "45 s", "1.5 s": a duration for a message (how long the machine slept, how
/// long the network was gone).
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=9 => format!("{:.1} s", d.as_secs_f64()),
        10..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
