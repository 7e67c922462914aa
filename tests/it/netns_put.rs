//! `ftpseg put` losing its network (issue 18), in a network namespace of the test's own
//! (`netns_support`): the built-in server takes uploads at a throttled rate, the loopback goes
//! down for 10 s in the middle, and the upload must end exit 0 with the remote file byte-exact,
//! without spending its tries (`--max-tries 2`), on one connection and on several. Skipped,
//! with a message, where namespaces are not allowed.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::MIB;
use crate::netns_support::Netns;
use ftpseg::testserver::write_pattern_file;

/// Waits until `p` holds at least `bytes` (the upload's temporary remote file grows).
async fn grown(p: &Path, bytes: u64, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::metadata(p).is_ok_and(|m| m.len() >= bytes) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_losing_the_network_for_10s_ends_byte_exact_on_1_and_4_connections() {
    let Some(ns) = Netns::or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (served, local) = (dir.path().join("served"), dir.path().join("local"));
    std::fs::create_dir_all(&served).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    let server = ns.serve(&served, &["--upload-rate", "2M"]).await;
    for n in ["1", "4"] {
        let name = format!("up-{n}.bin");
        let src = local.join(&name);
        write_pattern_file(&src, 24 * MIB + 5, 7).unwrap();
        let data = std::fs::read(&src).unwrap();
        let temp = served.join(format!("{name}.ftpseg-part"));
        let args = [
            "put",
            "--plain",
            "-n",
            n,
            "--max-tries",
            "2",
            &name,
            &server.url(&name),
        ];
        let c = ns.client(&args, &local, &[]);
        assert!(
            grown(&temp, 4 * MIB, Duration::from_secs(60)).await,
            "-n {n}: the upload did not start"
        );
        ns.lo_down().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        ns.lo_up().await;
        let f = c.finish(Duration::from_secs(120)).await;
        let err = f.stderr_text();
        assert_eq!(f.code, 0, "-n {n}: exit {}: {err}", f.code);
        let got = std::fs::read(served.join(&name)).unwrap();
        assert!(
            got == data,
            "-n {n}: the remote file differs ({} bytes)",
            got.len()
        );
        assert!(!temp.exists(), "-n {n}: the temporary remote name is left");
    }
}
