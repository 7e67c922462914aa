//! Value parsers for the flags: sizes (`64K`, `1.5G`), rates, connection counts, seconds,
//! durations (`30m`). Pure functions from the typed text to a value, or the message clap shows.

use std::time::Duration;

use crate::download::Connections;
use crate::download::plan;

/// "64K", "1M", "1.5G", "1000" -> bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mult: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown unit in '{s}': use K, M, G or T")),
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 512K, 4M or 1G"))?;
    if !v.is_finite() || v < 0.0 || v * mult as f64 > (1u64 << 62) as f64 {
        return Err(format!("'{s}' is out of range"));
    }
    Ok((v * mult as f64) as u64)
}

pub(crate) fn parse_connections_or_auto(s: &str) -> Result<Connections, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Connections::Auto);
    }
    parse_connections(s)
        .map(Connections::Fixed)
        .map_err(|e| format!("{e}, or auto"))
}

/// A rate in bytes per second: a size (K, M, G suffixes) of at least 1 KiB.
pub(crate) fn parse_rate(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    if v < 1024 {
        return Err(format!(
            "'{s}' is below the smallest rate, 1K (bytes per second)"
        ));
    }
    Ok(v)
}

pub(crate) fn parse_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=plan::MAX_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a connection count from 1 to {}",
            plan::MAX_CONNECTIONS
        )),
    }
}

/// A duration with a unit (`500ms`, `90s`, `30m`, `2h`) or plain seconds; `0` is none.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit: use ms, s, m or h (e.g. 30m)"
            ));
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 90s, 30m, 2h, 0)"))?;
    let secs = v * scale;
    if !(0.0..=30.0 * 86_400.0).contains(&secs) {
        return Err(format!("'{s}' is out of range (0 to 30 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.001..=86_400.0).contains(&v) {
        return Err(format!("'{s}' seconds is out of range (0.001 to 86400)"));
    }
    Ok(v)
}
