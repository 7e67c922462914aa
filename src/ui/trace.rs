//! A scheduling trace for diagnosis and benchmarks: with `FTPSEG_TRACE=1` in the environment,
//! one line per decision (a range taken, split or taken over, a first byte, a range finished, a
//! checkpoint) goes to standard error, stamped with seconds since the trace started. Off, it
//! costs one relaxed load per call site.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Option<Instant>> = OnceLock::new();

fn start() -> Option<Instant> {
    *START.get_or_init(|| {
        std::env::var_os("FTPSEG_TRACE")
            .is_some_and(|v| !v.is_empty() && v != "0")
            .then(Instant::now)
    })
}

/// Whether `FTPSEG_TRACE` asks for the trace.
pub fn enabled() -> bool {
    start().is_some()
}

/// Writes one trace line (use the [`trace!`](crate::trace!) macro).
pub fn line(args: std::fmt::Arguments<'_>) {
    if let Some(t0) = start() {
        eprintln!("[{:9.3}] {args}", t0.elapsed().as_secs_f64());
    }
}

/// `trace!("conn {id} ...")`: a trace line when `FTPSEG_TRACE` is set; nothing otherwise.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::ui::trace::enabled() {
            $crate::ui::trace::line(format_args!($($arg)*));
        }
    };
}
