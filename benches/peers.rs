//! ftpseg side by side with lftp `pget`, aria2c, axel and curl on real FTP servers (issue 4).
//!
//! Run with `cargo bench --bench peers` (as root; see docs/benchmarks.md, "Peers"). Cargo builds
//! the release `ftpseg` binary first; this driver then runs `benches/peers.py`, which installs
//! the peer tools (Debian packages), starts its own instance of `scripts/ftp-servers.sh`
//! (`/tmp/ftpseg-bench`, ports 12100+), runs the seven scenarios and writes
//! `docs/bench/peers.md` and `docs/bench/peers.json`. Options are environment variables, listed
//! at the top of `benches/peers.py` (`FTPSEG_PEERS_SCENARIOS`, `FTPSEG_PEERS_REPS`,
//! `FTPSEG_PEERS_SIZE`, `FTPSEG_PEERS_TOOLS`, `FTPSEG_PEERS_IO`, `FTPSEG_PEERS_BIN`, ...).

use std::process::Command;

fn main() {
    // `cargo test --benches` runs benches with no `--bench` flag: keep that quick and skip.
    if !std::env::args().any(|a| a == "--bench") {
        println!("peers bench: run with `cargo bench --bench peers`");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers.py");
    let bin = std::env::var("FTPSEG_PEERS_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ftpseg").to_string());
    // The script forwards SIGINT/SIGTERM cleanup itself (it kills what it started); we only
    // wait for it and pass its exit status on.
    let status = Command::new("python3")
        .arg(script)
        .env("FTPSEG_PEERS_BIN", &bin)
        .status()
        .expect("run python3 benches/peers.py (Debian package python3)");
    std::process::exit(status.code().unwrap_or(1));
}
