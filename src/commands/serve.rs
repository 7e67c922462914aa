//! `ftpseg serve ROOT` (hidden): the built-in FTP server on its own, until Ctrl-C or SIGTERM
//! (for benchmarks and tests).

use std::path::PathBuf;

use super::Stop;
use crate::error::Error;
use crate::testserver::{ServerConfig, TestServer};

/// What `ftpseg serve` is asked to do.
pub struct ServePlan {
    pub config: ServerConfig,
    /// Where to write the server's counters as JSON when it stops.
    pub stats_file: Option<PathBuf>,
}

/// Serves until `stop`, then writes the counters (`--stats-file`).
pub async fn run(plan: ServePlan, stop: &Stop) -> Result<(), Error> {
    let server = TestServer::start(plan.config)
        .await
        .map_err(|e| Error::Internal(format!("cannot start the FTP server: {e}")))?;
    println!("{}", server.url(""));
    if let Some(e) = stop.sigterm_error() {
        return Err(Error::Internal(format!("cannot watch SIGTERM: {e}")));
    }
    stop.requested().await;
    let stats = server.stats();
    server.shutdown().await;
    if let Some(path) = &plan.stats_file {
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
