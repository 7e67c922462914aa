//! `--json`: one JSON object per line on standard output, one per event of a batch, for scripts.
//!
//! Schema version 1 (docs/bulk.md). Every object has `"v": 1` and `"event"`:
//! * `file_start`: `url`, `path`;
//! * `file_done`: `url`, `path`, `bytes`, `fetched`, `resumed`, `seconds`, `blake3`, and
//!   `checksum` (`{"algo", "expected", "actual", "source"}`) and `remote_hash`
//!   (`{"command", "hex"}`) when checked;
//! * `file_skipped`: `url`, `path`, `reason`;
//! * `file_failed`: `url` (or the input line), `path` (if known), `error`, `exit_code`;
//! * `network`: `url`, `state` (`down` with `why` and `wait_seconds`; `up` with
//!   `down_seconds`; `woke` with `slept_seconds`): the network was lost, came back, or the
//!   machine slept (docs/reliability.md);
//! * `summary` (always last): `done`, `skipped`, `failed`, `bytes`, `seconds`,
//!   `bytes_per_second`, `exit_code`, `sessions_reused`.
//!
//! Secrets never appear: URLs are redacted before they get here.

use std::io::Write;

use serde_json::{Value, json};

/// Writes events to standard output when enabled; does nothing otherwise. Clones write to the
/// same standard output, one whole line at a time (the stdout lock is held for each line).
#[derive(Clone, Debug)]
pub struct Events {
    enabled: bool,
}

/// The schema version in every event.
pub const SCHEMA_VERSION: u32 = 1;

impl Events {
    pub fn new(enabled: bool) -> Events {
        Events { enabled }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Emits `{"v":1,"event":<event>, ...fields}` as one line. `fields` must be an object.
    pub fn emit(&self, event: &str, fields: Value) {
        if !self.enabled {
            return;
        }
        let line = render(event, fields);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

/// The line for one event (pure).
pub fn render(event: &str, fields: Value) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("v".into(), json!(SCHEMA_VERSION));
    obj.insert("event".into(), json!(event));
    if let Value::Object(m) = fields {
        for (k, v) in m {
            obj.insert(k, v);
        }
    }
    Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn events_are_one_line_objects_with_version_first() {
        let line = render("file_done", json!({"path": "a\nb", "bytes": 3}));
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["event"], "file_done");
        assert_eq!(v["path"], "a\nb");
    }

    proptest! {
        #[test]
        fn any_text_round_trips(s in "\\PC{0,40}") {
            let line = render("x", json!({"error": s.clone()}));
            prop_assert!(!line.contains('\n'));
            let v: Value = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(v["error"].as_str().unwrap(), s.as_str());
        }
    }
}
