//! `ftpseg demo`: the whole product in one command, on a fresh machine, with no network.
//!
//! Starts the built-in FTP server ([`crate::testserver`]) on 127.0.0.1 with a per-connection
//! throttle, generates a test file, downloads it with 1 connection and then with N, verifies
//! that both copies are byte-identical to the source (BLAKE3), prints the speed-up, and removes
//! everything it created.

use super::Stop;
use crate::batch::JobFor;
use crate::download;
use crate::error::Error;
use crate::testserver::{Faults, ServerConfig, TestServer, write_pattern_file};
use crate::ui::human_bytes;
use crate::ui::progress::{Mode, Progress};

/// What `ftpseg demo` is asked to do.
pub struct DemoPlan {
    /// Size of the generated file.
    pub size: u64,
    /// The server's throttle per connection, bytes per second.
    pub rate: u64,
    /// Connections of the parallel run.
    pub connections: usize,
    /// Each run's download job: that of `ftpseg --force --restart URL`, anonymous.
    pub jobs: Box<dyn JobFor>,
}

/// Runs the demo; an error means the demo itself failed (a bug or a broken machine).
pub async fn run(plan: DemoPlan, stop: &Stop) -> Result<(), Error> {
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
    write_pattern_file(&source, plan.size, 42)
        .map_err(|e| Error::io("cannot write", &source, e))?;
    let expected = crate::integrity::verify::hash_file(&source)
        .map_err(|e| Error::io("cannot read", &source, e))?;

    let mut cfg = ServerConfig::new(&served);
    cfg.faults = Faults {
        rate_per_transfer: Some(plan.rate),
        ..Faults::default()
    };
    let server = TestServer::start(cfg)
        .await
        .map_err(|e| Error::Internal(format!("cannot start the demo FTP server: {e}")))?;
    let url = server.url("demo.bin");
    println!(
        "ftpseg demo: serving {} of generated data at {url}, each connection throttled to {}/s",
        human_bytes(plan.size),
        human_bytes(plan.rate)
    );

    let mut times = Vec::new();
    for n in [1, plan.connections] {
        let out = local.join(format!("demo-{n}.bin"));
        let mut job = plan.jobs.job_for(&url, Some(out.clone()))?;
        job.connections = n;
        println!("\n$ ftpseg -n {n} -o {} {url}", out.display());
        let mut progress = Progress::new(Mode::Auto);
        let outcome = download::download(&job, &mut progress, stop.receiver()).await?;
        println!("{}", outcome.summary(&[]));
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
    let ideal = plan.size as f64 / plan.rate as f64;
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
