//! One file from three real servers at once (issue 19): vsftpd, proftpd and pure-ftpd, each
//! capped per connection (`scripts/ftp-servers.sh`, the `-capped` instances), serving the same
//! folder; `-n 9` within 3 connections per server. The file must be byte-exact and every
//! server must have sent part of it.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_real_servers_share_one_download() {
    let v = servers_json();
    let served = std::path::PathBuf::from(v["served"].as_str().unwrap());
    let port = |name: &str| {
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} is missing from servers.json"))["port"]
            .as_u64()
            .unwrap()
    };
    let urls: Vec<String> = ["vsftpd-capped", "proftpd-capped", "pure-ftpd-capped"]
        .iter()
        .map(|n| format!("ftp://127.0.0.1:{}/mid.bin", port(n)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mid.bin");
    let o = run(
        &[
            "-v",
            "-n",
            "9",
            "--max-connections-per-host",
            "3",
            "-o",
            out.to_str().unwrap(),
            "--mirror",
            &urls[1],
            "--mirror",
            &urls[2],
            &urls[0],
        ],
        dir.path(),
    )
    .await;
    let data = std::fs::read(served.join("mid.bin")).unwrap();
    assert_ok_and_equal(&o, &out, &data);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("9 connections to 3 servers"), "{text}");
    for u in &urls {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("from {u}: ")))
            .unwrap_or_else(|| panic!("no bytes from {u}: {text}"));
        assert!(!line.ends_with(": 0 B"), "{u} sent nothing: {text}");
    }
}
