//! Batches against the real servers of the interop suite (vsftpd, proftpd, pure-ftpd,
//! pyftpdlib; `scripts/ftp-servers.sh start`): the served `tree/` (empty files, spaces,
//! non-ASCII, nesting) downloaded with `-r` byte-exact and checked against the `SHA256SUMS`
//! found beside the files (`--checksum-file auto`); MLSD where the server has it, LIST on
//! vsftpd; proftpd's own `HASH` (mod_digest) with `--verify-remote`; a glob; the per-IP limit
//! of the `-limited` instances (4 by default: vsftpd `max_per_ip`, proftpd `MaxClientsPerHost`,
//! pure-ftpd `-C`, pyftpdlib) with `-j 3 -n 8`, first with a budget equal to the limit, then
//! with the default budget (8), counting the refusals in the servers' logs. Each test runs once
//! per store (`--io mmap`, `splice`, `pwrite`).
//!
//! pure-ftpd serves the home folder of its users from /etc/passwd, which the instance started
//! last sets; with the single default instance (CI) that is this instance's folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

struct Server {
    kind: String,
    variant: String,
    port: u16,
    max_per_ip: u64,
    log: PathBuf,
    transfer_log: PathBuf,
}

fn servers() -> (PathBuf, Vec<Server>) {
    let v = servers_json();
    let list = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Server {
            kind: s["kind"].as_str().unwrap().into(),
            variant: s["variant"].as_str().unwrap().into(),
            port: s["port"].as_u64().unwrap() as u16,
            max_per_ip: s["max_per_ip"].as_u64().unwrap_or(0),
            log: PathBuf::from(s["log"].as_str().unwrap_or("")),
            transfer_log: PathBuf::from(s["transfer_log"].as_str().unwrap_or("")),
        })
        .collect();
    (PathBuf::from(v["served"].as_str().unwrap()), list)
}

/// The files of `root`, relative, sorted.
fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn events(o: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn run_long(args: &[&str], cwd: &Path) -> std::process::Output {
    let child = ftpseg().args(args).current_dir(cwd).spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("ftpseg did not finish within 180 s")
        .unwrap()
}

async fn recursive_tree_with_auto_checksums_on_every_server(store: &'static str) {
    let (served, list) = servers();
    let tree = served.join("tree");
    let want = files_under(&tree);
    assert!(
        want.len() >= 8,
        "tree/ is missing from {}",
        served.display()
    );
    for s in list.iter().filter(|s| s.variant == "plain") {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("ftp://127.0.0.1:{}/tree/", s.port);
        let mut args = vec![
            "--io",
            store,
            "-r",
            "-d",
            "out",
            "--json",
            "--checksum-file",
            "auto",
            "-j",
            "3",
        ];
        if s.kind == "proftpd" {
            args.push("--verify-remote");
        }
        args.push(&url);
        let o = run_long(&args, dir.path()).await;
        assert_eq!(code(&o), 0, "{}: {}", s.kind, stderr(&o));
        let got_root = dir.path().join("out/tree");
        assert_eq!(
            files_under(&got_root),
            want,
            "{}: not the same files",
            s.kind
        );
        for rel in &want {
            let a = std::fs::read(tree.join(rel)).unwrap();
            let b = std::fs::read(got_root.join(rel)).unwrap();
            assert!(a == b, "{}: {rel} differs", s.kind);
        }
        let ev = events(&o);
        let summary = ev.last().unwrap();
        assert_eq!(summary["event"], "summary");
        assert_eq!(summary["done"], want.len() as u64, "{}: {ev:?}", s.kind);
        // Every top-level .bin was checked against tree/SHA256SUMS found on the server.
        for e in ev.iter().filter(|e| e["event"] == "file_done") {
            let path = e["path"].as_str().unwrap();
            let top_bin =
                path.ends_with(".bin") && Path::new(path).parent() == Some(Path::new("out/tree"));
            let checks = e["checks"].to_string();
            if top_bin {
                assert!(
                    checks.contains("sha256 matches SHA256SUMS on the server"),
                    "{}: {path}: {checks}",
                    s.kind
                );
            }
            if s.kind == "proftpd" {
                assert!(
                    checks.contains("the server's HASH (SHA-256)"),
                    "{}: {path}: {checks}",
                    s.kind
                );
            }
        }
    }
}
per_store!(recursive_tree_with_auto_checksums_on_every_server);

async fn glob_and_per_ip_limit_on_the_limited_servers(store: &'static str) {
    let _one_at_a_time = LIMITED.lock().await;
    let (served, list) = servers();
    for s in list.iter().filter(|s| s.variant == "limited") {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("ftp://127.0.0.1:{}/tree/*.bin", s.port);
        // A budget equal to the instance's per-IP limit, across -j 3 -n 8.
        assert!(s.max_per_ip >= 1, "{}: no per-IP limit", s.kind);
        let budget = s.max_per_ip.to_string();
        let o = run_long(
            &[
                "--io",
                store,
                "-j",
                "3",
                "-n",
                "8",
                "--max-connections-per-host",
                &budget,
                "--min-range",
                "64K",
                "-d",
                "g",
                "--json",
                &url,
            ],
            dir.path(),
        )
        .await;
        assert_eq!(code(&o), 0, "{}: {}", s.kind, stderr(&o));
        let ev = events(&o);
        let summary = ev.last().unwrap();
        assert_eq!(summary["failed"], 0, "{}: {ev:?}", s.kind);
        let mut got = files_under(&dir.path().join("g"));
        got.sort();
        assert_eq!(
            got,
            vec!["a.bin", "b c.bin", "empty.bin"],
            "{}: the glob took other files",
            s.kind
        );
        for name in &got {
            let a = std::fs::read(served.join("tree").join(name)).unwrap();
            let b = std::fs::read(dir.path().join("g").join(name)).unwrap();
            assert!(a == b, "{}: {name} differs", s.kind);
        }
    }
}
per_store!(glob_and_per_ip_limit_on_the_limited_servers);

/// Lines of a server's log that record a connection refused by its per-IP limit; `None` for
/// pure-ftpd, which runs with `-f none` and logs no refusal (its count cannot be checked).
fn refusals(kind: &str, log: &str) -> Option<usize> {
    let marker = match kind {
        "vsftpd" => "too many sessions for this address",
        "proftpd" => "Connection refused (MaxClientsPerHost",
        "pyftpdlib" => "Too many connections from the same IP address",
        "pure-ftpd" => return None,
        other => panic!("no refusal marker known for {other}"),
    };
    Some(log.lines().filter(|l| l.contains(marker)).count())
}

async fn default_budget_meets_a_per_ip_limit_of_four_without_a_421_storm(store: &'static str) {
    let _one_at_a_time = LIMITED.lock().await;
    let (served, list) = servers();
    // Once per store, one at a time (LIMITED): three files of 1-3 MiB instead of one of 64 MiB
    // among them (20 s per store before); each still asks for the budget's 8 connections.
    let files = [
        "tree/a.bin",
        "prime.bin",
        "sub%20dir/name%20with%20spaces.bin",
    ];
    for s in list.iter().filter(|s| s.variant == "limited") {
        assert_eq!(
            s.max_per_ip, 4,
            "{}: start the servers with the default --max-per-ip (4)",
            s.kind
        );
        let before = log_before(&s.log).len();
        let sent_before = log_before(&s.transfer_log).len();
        let dir = tempfile::tempdir().unwrap();
        let urls: Vec<String> = files
            .iter()
            .map(|f| format!("ftp://127.0.0.1:{}/{f}", s.port))
            .collect();
        // No --max-connections-per-host: the budget is -n (8), twice what the server allows.
        let mut args = vec![
            "--io",
            store,
            "-j",
            "3",
            "-n",
            "8",
            "--min-range",
            "64K",
            "-d",
            "d",
            "--json",
        ];
        args.extend(urls.iter().map(String::as_str));
        let o = run_long(&args, dir.path()).await;
        assert_eq!(code(&o), 0, "{}: {}", s.kind, stderr(&o));
        let ev = events(&o);
        assert_eq!(ev.last().unwrap()["done"], 3, "{}: {ev:?}", s.kind);
        for (f, local) in [
            ("tree/a.bin", "a.bin"),
            ("prime.bin", "prime.bin"),
            ("sub dir/name with spaces.bin", "name with spaces.bin"),
        ] {
            let a = std::fs::read(served.join(f)).unwrap();
            let b = std::fs::read(dir.path().join("d").join(local)).unwrap();
            assert!(a == b, "{}: {f} differs", s.kind);
        }
        // Each refusal takes one permit out of the budget for the rest of the batch, so the
        // budget of 8 settles at the limit: 4 refusals (measured 3-4; 20-25 before the
        // budget learned). The hard bound is 7: the budget never goes below 1.
        // The logs read are the ones this instance writes: its transfer log holds this batch.
        let sent = sent_in_log(&s.kind, &read_log_settled(&s.transfer_log)[sent_before..]);
        let total: u64 = files
            .iter()
            .map(|f| {
                std::fs::metadata(served.join(f.replace("%20", " ")))
                    .unwrap()
                    .len()
            })
            .sum();
        assert!(
            sent >= total,
            "{}: {} records {sent} bytes sent for {total} bytes of files",
            s.kind,
            s.transfer_log.display()
        );
        // A budget of 8 against a limit of 4 meets the limit at least once, so a count of 0
        // would mean the refusals are no longer found in the log.
        let after = read_log_settled(&s.log);
        if let Some(refused) = refusals(&s.kind, &after[before..]) {
            eprintln!("{} (--io {store}): {refused} connections refused", s.kind);
            assert!(
                (1..=7).contains(&refused),
                "{}: {refused} connections refused (in {})",
                s.kind,
                s.log.display()
            );
        }
    }
}
per_store!(default_budget_meets_a_per_ip_limit_of_four_without_a_421_storm);
