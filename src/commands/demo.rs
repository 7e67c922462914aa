//! `ftpseg demo`: the whole product in one command, on a fresh machine, with no network.
//!
//! Starts the built-in FTP server ([`crate::testserver`]) on 127.0.0.1 with a per-connection
//! throttle, generates a test file, downloads it with 1 connection and then with N, verifies
//! that both copies are byte-identical to the source (BLAKE3), prints the speed-up, and removes
//! everything it created.

use std::time::Duration;

use crate::cli::{DemoArgs, ServeArgs, download_with_ctrl_c};
use crate::download::Job;
use crate::error::Error;
use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, Timeouts};
use crate::testserver::{Faults, ServerConfig, TestServer, write_pattern_file};
use crate::ui::human_bytes;
use crate::ui::progress::{Mode, Progress};

/// Runs the demo; an error means the demo itself failed (a bug or a broken machine).
pub async fn run(args: DemoArgs) -> Result<(), Error> {
    let dir = tempfile::Builder::new()
        .prefix("ftpseg-demo-")
        .tempdir()
        .map_err(|e| {
            Error::io(
                "cannot create a temporary folder in",
                std::env::temp_dir(),
                e,
            )
        })?;
    let served = dir.path().join("served");
    let local = dir.path().join("downloads");
    for d in [&served, &local] {
        std::fs::create_dir_all(d).map_err(|e| Error::io("cannot create", d, e))?;
    }
    let source = served.join("demo.bin");
    write_pattern_file(&source, args.size, 42)
        .map_err(|e| Error::io("cannot write", &source, e))?;
    let expected = crate::integrity::verify::hash_file(&source)
        .map_err(|e| Error::io("cannot read", &source, e))?;

    let mut cfg = ServerConfig::new(&served);
    cfg.faults = Faults {
        rate_per_transfer: Some(args.rate),
        ..Faults::default()
    };
    let server = TestServer::start(cfg)
        .await
        .map_err(|e| Error::Internal(format!("cannot start the demo FTP server: {e}")))?;
    let url = server.url("demo.bin");
    println!(
        "ftpseg demo: serving {} of generated data at {url}, each connection throttled to {}/s",
        human_bytes(args.size),
        human_bytes(args.rate)
    );

    let mut times = Vec::new();
    for n in [1, args.connections] {
        let out = local.join(format!("demo-{n}.bin"));
        let job = Job {
            url: FtpUrl::parse(&url)?,
            creds: Credentials::anonymous(),
            output: out.clone(),
            connections: n,
            min_range: 1 << 20,
            timeouts: Timeouts::default(),
            max_tries: 8,
            force: true,
            restart: true,
            checkpoint_interval: Duration::from_secs(1),
            use_pasv_address: false,
            active: false,
            busy_retry: Duration::from_secs(15),
            no_rang: false,
            straggler_timeout: Duration::from_secs(3),
            pool: None,
            verify: Default::default(),
            limit: None,
            auto_connections: false,
            rate_limits: Vec::new(),
            per_file_rate: None,
            digest: None,
            storage: Default::default(),
        };
        println!("\n$ ftpseg -n {n} -o {} {url}", out.display());
        let mut progress = Progress::new(Mode::Auto);
        let outcome = download_with_ctrl_c(&job, &mut progress).await?;
        println!("{}", outcome.summary());
        let ok = outcome.blake3 == Some(expected);
        println!(
            "verified against the served file: {}",
            if ok { "identical" } else { "DIFFERENT" }
        );
        if !ok {
            return Err(Error::Internal(format!(
                "the demo download with {n} connection(s) differs from the source"
            )));
        }
        times.push((n, outcome.elapsed));
    }
    server.shutdown().await;

    let (_, t1) = times[0];
    let (n, tn) = times[1];
    let ideal = args.size as f64 / args.rate as f64;
    println!(
        "\nspeed-up with {n} connections: {:.1}x ({:.2} s vs {:.2} s; one capped connection \
         needs at least {:.2} s)",
        t1.as_secs_f64() / tn.as_secs_f64().max(1e-6),
        tn.as_secs_f64(),
        t1.as_secs_f64(),
        ideal
    );
    Ok(())
}

/// `ftpseg serve`: the demo server on its own, until Ctrl-C (hidden; for benchmarks).
pub async fn serve(args: ServeArgs) -> Result<(), Error> {
    let mut cfg = ServerConfig::new(&args.root);
    cfg.faults.rate_per_transfer = args.rate;
    cfg.faults.session_rates = args.session_rates.clone();
    cfg.faults.stall_after = args.stall_after;
    cfg.faults.faulty_transfers = args.faulty_transfers;
    cfg.max_connections = args.max_connections;
    cfg.port = args.port;
    cfg.latency = args.rtt_ms.map(Duration::from_millis);
    let server = TestServer::start(cfg)
        .await
        .map_err(|e| Error::Internal(format!("cannot start the FTP server: {e}")))?;
    println!("{}", server.url(""));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Internal(format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let stats = server.stats();
    server.shutdown().await;
    if let Some(path) = &args.stats_file {
        let json = serde_json::to_string_pretty(&stats).expect("stats serialize");
        std::fs::write(path, json + "\n").map_err(|e| {
            Error::Internal(format!(
                "cannot write the stats file {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(())
}
