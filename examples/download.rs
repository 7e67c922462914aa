//! Embedding a download: ftpseg as a library, against its built-in test server.
//!
//! `cargo run --example download` starts the in-process FTP server on 127.0.0.1 with a
//! generated 24 MiB file (each connection throttled, so several connections pay), downloads
//! it over 6 connections with the progress reported to a callback, checks the copy is
//! byte-identical, and removes what it made. A program that embeds ftpseg does the same with
//! its own URL; it passes its own stop signal (the library never installs signal handlers).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ftpseg::testserver::{Faults, ServerConfig, TestServer, write_pattern_file};
use ftpseg::{FtpUrl, Job, Progress};

const SIZE: u64 = 24 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let served = dir.path().join("served");
    std::fs::create_dir(&served)?;
    write_pattern_file(&served.join("big.iso"), SIZE, 7)?;
    let mut cfg = ServerConfig::new(&served);
    cfg.faults = Faults {
        rate_per_transfer: Some(16 << 20),
        ..Faults::default()
    };
    let server = TestServer::start(cfg).await?;

    let mut job = Job::new(
        FtpUrl::parse(&server.url("big.iso"))?,
        dir.path().join("big.iso"),
    );
    job.connections = 6;
    // The callback sees every progress view; here it keeps the largest byte count seen.
    let seen = Arc::new(AtomicU64::new(0));
    let seen_in_view = seen.clone();
    let mut progress = Progress::observed(move |view| {
        seen_in_view.fetch_max(view.done, Ordering::Relaxed);
    });
    // Sending `true` on `_stop` would end the download after a final checkpoint.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let result = ftpseg::download(&job, &mut progress, stopped).await;
    server.shutdown().await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("download failed (exit code {}): {e}", e.exit_code());
            std::process::exit(e.exit_code());
        }
    };

    println!("{}", outcome.summary(&[]));
    println!(
        "progress callback saw up to {} bytes; connections opened: {}",
        seen.load(Ordering::Relaxed),
        outcome.connections
    );
    let same = std::fs::read(&outcome.path)? == std::fs::read(served.join("big.iso"))?;
    if !same || outcome.size != SIZE {
        eprintln!("the copy differs from the served file");
        std::process::exit(1);
    }
    println!("the copy is byte-identical to the served file");
    Ok(())
}
