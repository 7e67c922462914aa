//! What a batch tells: each file's end as it happens (a line, or a `--json` event), the
//! summary at the end, and the batch's exit code.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::{Ctx, Ended, FileEnd};
use crate::error::{Error, exit};
use crate::ui::human_bytes;

/// Prints (or emits) how one file ended.
pub(super) fn file_end(ctx: &Ctx, label: &str, path: Option<&Path>, end: &FileEnd) {
    let shown = path.map(|p| p.display().to_string()).unwrap_or_default();
    match end {
        FileEnd::Done { outcome, checks } => {
            let long: Vec<String> = checks.iter().map(|c| c.to_string()).collect();
            ctx.events.emit(
                "file_done",
                json!({
                    "url": label, "path": shown, "bytes": outcome.size,
                    "fetched": outcome.fetched, "resumed": outcome.resumed,
                    "seconds": outcome.elapsed.as_secs_f64(),
                    "blake3": outcome.blake3.map(|h| h.to_hex().to_string()), "checks": long,
                    "sources": outcome.sources.iter()
                        .map(|(url, bytes)| json!({"url": url, "bytes": bytes}))
                        .collect::<Vec<_>>(),
                }),
            );
            if !ctx.quiet && !ctx.events.enabled() {
                let mut algos: Vec<&str> = checks.iter().map(|c| c.algo.name()).collect();
                algos.dedup();
                println!("{}", outcome.summary(&algos));
                if ctx.verbose {
                    let extra = outcome
                        .source_lines()
                        .into_iter()
                        .chain(outcome.hash_line());
                    for line in extra.chain(long) {
                        println!("  {line}");
                    }
                }
            }
        }
        FileEnd::Skipped(why) => {
            ctx.events.emit(
                "file_skipped",
                json!({"url": label, "path": shown, "reason": why}),
            );
            if !ctx.quiet && !ctx.events.enabled() {
                println!("skipped {shown}: {why}");
            }
        }
        FileEnd::Failed(e) => {
            ctx.events.emit(
                "file_failed",
                json!({"url": label, "path": shown, "error": e.to_string(), "exit_code": e.exit_code()}),
            );
            eprintln!("ftpseg: error: {label}: {e}");
        }
    }
}

/// The exit code of a whole batch from the codes of its failed files: 0 when none failed;
/// 130 if any was interrupted; a checksum mismatch (15) before anything else, since it means
/// corrupt data; otherwise the first failure's code.
pub fn batch_exit_code(failed: &[i32]) -> i32 {
    if failed.is_empty() {
        exit::OK
    } else if failed.contains(&exit::INTERRUPTED) {
        exit::INTERRUPTED
    } else if failed.contains(&exit::CHECKSUM) {
        exit::CHECKSUM
    } else {
        failed[0]
    }
}

/// Emits and prints the summary of the whole batch; the error, if any file failed, carries
/// the batch's exit code ([`batch_exit_code`]).
pub(super) fn summary(
    ctx: &Ctx,
    results: &[Ended],
    elapsed: Duration,
    reused: u64,
    json: bool,
) -> Result<(), Error> {
    let (mut n_done, mut n_skipped, mut bytes) = (0usize, 0usize, 0u64);
    let mut failed_codes = Vec::new();
    let mut failures = Vec::new();
    for (label, _, end) in results {
        match end {
            FileEnd::Done { outcome, .. } => {
                n_done += 1;
                bytes += outcome.fetched;
            }
            FileEnd::Skipped(_) => n_skipped += 1,
            FileEnd::Failed(e) => {
                failed_codes.push(e.exit_code());
                failures.push(format!("  {label}: {e} (exit {})", e.exit_code()));
            }
        }
    }
    let code = batch_exit_code(&failed_codes);
    let secs = elapsed.as_secs_f64().max(1e-6);
    let rate = (bytes as f64 / secs) as u64;
    ctx.events.emit(
        "summary",
        json!({
            "done": n_done, "skipped": n_skipped, "failed": failed_codes.len(),
            "bytes": bytes, "seconds": secs, "bytes_per_second": rate,
            "exit_code": code, "sessions_reused": reused,
        }),
    );
    if !ctx.quiet && !json {
        println!(
            "{} file(s): {n_done} done, {n_skipped} skipped, {} failed; {} in {secs:.2} s, {}/s mean",
            results.len(),
            failed_codes.len(),
            human_bytes(bytes),
            human_bytes(rate)
        );
        for f in &failures {
            println!("{f}");
        }
    }
    if code == exit::OK {
        Ok(())
    } else {
        Err(Error::BatchFailed {
            failed: failed_codes.len(),
            total: results.len(),
            code,
        })
    }
}
