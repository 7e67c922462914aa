//! Batches against the in-process libunftp server: a folder tree downloaded with `-r` (empty
//! files, spaces, non-ASCII), byte-exact, then skipped as complete on a second run; a glob; an
//! input file with bad lines; a per-IP limit of 4 with `-j 3 -n 8` and a budget of 4 (no 421,
//! sessions reused); checksums that match and that do not (exit 15, data kept); the server's
//! own hash (`SITE MD5` on libunftp); `--json` parsed in every test. The kill-and-resume tests
//! run once per store (`--io mmap`, `splice`, `pwrite`).

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use ftpseg::testserver::{ServerConfig, write_pattern_file};
use serde_json::Value;

/// The JSON events a run printed, one object a line.
fn events(o: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn summary(ev: &[Value]) -> &Value {
    let last = ev.last().expect("no events");
    assert_eq!(last["event"], "summary", "{ev:?}");
    assert_eq!(last["v"], 1);
    last
}

fn of_kind<'a>(ev: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["event"] == kind).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tree of mixed sizes under `served/tree`; returns (relative path, bytes) of each file.
fn make_tree(served: &Path) -> Vec<(String, Vec<u8>)> {
    let files = [
        ("a.bin", 3 * MIB + 17),
        ("empty.bin", 0),
        ("sub dir/name with spaces.bin", 200_001),
        ("ünïcødé/ö ä.bin", 5000),
        ("deep/er/x.bin", 1),
        ("deep/empty/.keep", 0),
    ];
    let mut out = Vec::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = served.join("tree").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_pattern_file(&p, *len, 100 + i as u64).unwrap();
        out.push((rel.to_string(), std::fs::read(&p).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_tree_is_byte_exact_then_skipped_as_complete() {
    let fx = Fixture::new(|c| c).await;
    let files = make_tree(&fx.served);
    let url = fx.url("tree/");
    let o = run(&["-r", "-d", "out", "--json", "-n", "4", &url], &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ev = events(&o);
    let s = summary(&ev);
    // ".keep" starts with a dot but is a file like any other in a tree.
    assert_eq!(s["done"], files.len() as u64, "{ev:?}");
    assert_eq!(s["failed"], 0);
    assert_eq!(of_kind(&ev, "file_done").len(), files.len());
    for (rel, bytes) in &files {
        let got = std::fs::read(fx.local.join("out/tree").join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(got == *bytes, "{rel} differs");
    }
    // Nothing but the files: no manifests or .part files left.
    let mut n = 0;
    let mut stack = vec![fx.local.join("out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    assert_eq!(n, files.len());

    // Second run: every file is complete (same size and MDTM), so nothing is fetched.
    let before = fx.server.stats().retrs;
    let o = run(&["-r", "-d", "out", "--json", &url], &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ev = events(&o);
    assert_eq!(summary(&ev)["skipped"], files.len() as u64, "{ev:?}");
    assert_eq!(
        fx.server.stats().retrs,
        before,
        "a complete file was fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_takes_only_matching_files_and_human_summary_says_so() {
    let fx = Fixture::new(|c| c).await;
    std::fs::create_dir_all(fx.served.join("isos")).unwrap();
    let a = fx.serve("isos/a-1.iso", 300_000, 1);
    let b = fx.serve("isos/b-2.iso", 5, 2);
    fx.serve("isos/a-1.iso.sig", 10, 3);
    fx.serve("isos/notes.txt", 10, 4);
    let o = run(&["-d", "dl", &fx.url("isos/*.iso")], &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("2 file(s): 2 done, 0 skipped, 0 failed"),
        "{out}"
    );
    assert_eq!(std::fs::read(fx.local.join("dl/a-1.iso")).unwrap(), a);
    assert_eq!(std::fs::read(fx.local.join("dl/b-2.iso")).unwrap(), b);
    assert_eq!(std::fs::read_dir(fx.local.join("dl")).unwrap().count(), 2);

    // A glob that matches nothing is a clear failure (exit 6).
    let o = run(&["-d", "dl", &fx.url("isos/*.img")], &fx.local).await;
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(stderr(&o).contains("no file matches"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_file_with_bad_lines_fails_those_and_does_the_rest() {
    let fx = Fixture::new(|c| c).await;
    let one = fx.serve("one.bin", 123_457, 7);
    let two = fx.serve("two.bin", 2 * MIB, 8);
    let list = format!(
        "# a comment\n{}\n\nnot-a-url\n{}   renamed.bin\n{}\n",
        fx.url("one.bin"),
        fx.url("two.bin"),
        fx.url("missing.bin")
    );
    std::fs::write(fx.local.join("list.txt"), list).unwrap();
    let o = run(
        &["-i", "list.txt", "-d", "got", "--json", "-j", "2"],
        &fx.local,
    )
    .await;
    let ev = events(&o);
    let s = summary(&ev);
    assert_eq!(s["done"], 2, "{ev:?}");
    assert_eq!(s["failed"], 2, "{ev:?}");
    // The first failure in input order decides the code: the bad URL (3).
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(s["exit_code"], 3);
    let failed = of_kind(&ev, "file_failed");
    assert!(
        failed
            .iter()
            .any(|f| f["url"] == "list.txt:4" && f["exit_code"] == 3),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|f| f["exit_code"] == 6 && f["error"].as_str().unwrap().contains("missing.bin")),
        "{failed:?}"
    );
    let err = stderr(&o);
    assert!(err.contains("list.txt:4"), "{err}");
    assert_eq!(std::fs::read(fx.local.join("got/one.bin")).unwrap(), one);
    assert_eq!(
        std::fs::read(fx.local.join("got/renamed.bin")).unwrap(),
        two
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_budget_of_four_keeps_under_the_server_limit_and_reuses_sessions() {
    let fx = Fixture::new(|c| c.with_max_connections(4)).await;
    let mut want = Vec::new();
    for i in 0..3 {
        want.push(fx.serve(&format!("f{i}.bin"), 6 * MIB, 20 + i));
    }
    let urls: Vec<String> = (0..3).map(|i| fx.url(&format!("f{i}.bin"))).collect();
    let mut args = vec![
        "-j",
        "3",
        "-n",
        "8",
        "--max-connections-per-host",
        "4",
        "-d",
        "b",
        "--json",
        "--min-range",
        "256K",
    ];
    args.extend(urls.iter().map(String::as_str));
    let o = run(&args, &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for (i, w) in want.iter().enumerate() {
        assert!(std::fs::read(fx.local.join(format!("b/f{i}.bin"))).unwrap() == *w);
    }
    let st = fx.server.stats();
    assert_eq!(st.connections_refused, 0, "{st:?}");
    assert!(st.max_live_connections <= 4, "{st:?}");
    let ev = events(&o);
    // Later files took sessions the earlier ones left logged in.
    assert!(
        summary(&ev)["sessions_reused"].as_u64().unwrap() >= 1,
        "{ev:?}"
    );
    assert!(
        st.login_attempts < 3 * 8,
        "every connection logged in afresh: {st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_budget_against_a_limit_of_four_shrinks_after_at_most_four_refusals() {
    // The user does not know the server allows 4: the budget is -n (8). Each "421 Too many
    // connections" gives a permit up for the rest of the batch (crate::ftp::pool), so at most
    // 8 - 4 connections are ever refused, however many files follow.
    let fx = Fixture::new(|c| c.with_max_connections(4)).await;
    let mut want = Vec::new();
    for i in 0..6 {
        want.push(fx.serve(&format!("f{i}.bin"), 6 * MIB, 40 + i));
    }
    let urls: Vec<String> = (0..6).map(|i| fx.url(&format!("f{i}.bin"))).collect();
    let mut args = vec![
        "-j",
        "3",
        "-n",
        "8",
        "-d",
        "b",
        "--json",
        "--min-range",
        "256K",
    ];
    args.extend(urls.iter().map(String::as_str));
    let o = run(&args, &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for (i, w) in want.iter().enumerate() {
        assert!(std::fs::read(fx.local.join(format!("b/f{i}.bin"))).unwrap() == *w);
    }
    assert_eq!(summary(&events(&o))["done"], 6);
    let st = fx.server.stats();
    assert!(st.connections_refused <= 4, "a 421 storm: {st:?}");
    assert!(st.max_live_connections <= 4, "{st:?}");
}

async fn streamed_checksums_are_right_after_kill_and_resume_and_over_many_connections(
    store: &'static str,
) {
    use ftpseg::testserver::Faults;
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(2 * MIB),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("k.bin", 16 * MIB + 5, 50);
    let sum = format!("sha256={}", sha256_hex(&data));
    let url = fx.url("k.bin");
    let args = [
        "--io",
        store,
        "-n",
        "4",
        "--checkpoint-interval",
        "0.05",
        "--checksum",
        &sum,
        "-d",
        "k",
        "--json",
        &url,
    ];
    let mut child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
    let out = fx.local.join("k/k.bin");
    // Killed once a few MiB are on disk: the next run's digest must cover them too, read
    // back from the .part (nothing of the digest is kept across runs).
    wait_for_durable(&out, 3 * MIB, Duration::from_secs(60)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_claims_hold(&out, &data);
    fx.server.set_faults(Faults::default());
    let o = run(&args, &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ev = events(&o);
    let done = of_kind(&ev, "file_done");
    assert!(done[0]["resumed"].as_u64().unwrap() >= 3 * MIB, "{ev:?}");
    assert!(
        done[0]["checks"]
            .to_string()
            .contains("sha256 matches --checksum"),
        "{ev:?}"
    );
    assert_ok_and_equal(&o, &out, &data);

    // Many connections, and the digests of a sums file (SHA-512 and MD5), checked as they go.
    let m = fx.serve("m.bin", 24 * MIB + 3, 51);
    let sha512: String = {
        use sha2::Digest;
        sha2::Sha512::digest(&m)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let md5: String = {
        use md5::Digest;
        md5::Md5::digest(&m)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    std::fs::write(fx.local.join("SHA512SUMS"), format!("{sha512}  m.bin\n")).unwrap();
    std::fs::write(fx.local.join("MD5SUMS"), format!("{md5} *m.bin\n")).unwrap();
    for (sums, dir, algo) in [("SHA512SUMS", "m1", "sha512"), ("MD5SUMS", "m2", "md5")] {
        let o = run(
            &[
                "-n",
                "8",
                "--min-range",
                "256K",
                "--checksum-file",
                sums,
                "-d",
                dir,
                "--json",
                &fx.url("m.bin"),
            ],
            &fx.local,
        )
        .await;
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let ev = events(&o);
        assert!(
            of_kind(&ev, "file_done")[0]["checks"]
                .to_string()
                .contains(&format!("{algo} matches {sums}")),
            "{ev:?}"
        );
        assert!(std::fs::read(fx.local.join(dir).join("m.bin")).unwrap() == m);
    }
    // A wrong digest is still caught (exit 15), the data kept.
    let mut bad = sha512.clone().into_bytes();
    bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
    let bad = format!("sha512={}", String::from_utf8(bad).unwrap());
    let o = run(
        &["-n", "8", "--checksum", &bad, "-d", "m3", &fx.url("m.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 15, "{}", stderr(&o));
    assert!(std::fs::read(fx.local.join("m3/m.bin")).unwrap() == m);
}
per_store!(streamed_checksums_are_right_after_kill_and_resume_and_over_many_connections);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_batch_and_glob_on_loopback() {
    let fx = Fixture::new(|c| ServerConfig {
        bind: std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ..c
    })
    .await;
    let a = fx.serve("a.iso", 3 * MIB + 1, 60);
    let b = fx.serve("b.iso", 2 * MIB + 7, 61);
    fx.serve("c.txt", 10, 62);
    let (ua, ub) = (fx.url("a.iso"), fx.url("b.iso"));
    assert!(ua.starts_with("ftp://[::1]:"), "{ua}");
    let o = run(&["-q", "-n", "4", "-d", "two", &ua, &ub], &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(std::fs::read(fx.local.join("two/a.iso")).unwrap() == a);
    assert!(std::fs::read(fx.local.join("two/b.iso")).unwrap() == b);
    let glob = fx.url("*.iso").replace("%2A", "*");
    let o = run(&["--json", "-d", "g", &glob], &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(summary(&events(&o))["done"], 2);
    assert!(std::fs::read(fx.local.join("g/a.iso")).unwrap() == a);
    assert!(std::fs::read(fx.local.join("g/b.iso")).unwrap() == b);
    assert!(!fx.local.join("g/c.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_match_mismatch_keep_data_and_server_hash() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("c.bin", 1_000_003, 9);
    let url = fx.url("c.bin");
    let good = sha256_hex(&data);

    // Match, with the server's hash too (libunftp answers SITE MD5, to logged-in users only).
    let alice = format!("ftp://alice:s3cret@{}/c.bin", fx.server.addr());
    let o = run(
        &[
            "-o",
            "c.bin",
            "--json",
            "--verify-remote",
            "--checksum",
            &format!("sha256={good}"),
            &alice,
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ev = events(&o);
    let done = of_kind(&ev, "file_done");
    let checks = done[0]["checks"].to_string();
    assert!(checks.contains("sha256 matches --checksum"), "{checks}");
    assert!(
        checks.contains("md5 matches the server's SITE MD5"),
        "{checks}"
    );

    // Mismatch: exit 15, loud, the bytes kept. Anonymous users get no server hash: said so.
    let bad = format!("sha256={}", "0".repeat(64));
    let o = run(
        &["-o", "d.bin", "--verify-remote", "--checksum", &bad, &url],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 15, "{}", stderr(&o));
    assert!(stderr(&o).contains("offers no file hash"), "{}", stderr(&o));
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
    assert_eq!(std::fs::read(fx.local.join("d.bin")).unwrap(), data);
    // Not marked complete: a run without --force refuses to clobber it rather than skip it.
    let o = run(&["-o", "d.bin", "--checksum", &bad, &url], &fx.local).await;
    assert_eq!(code(&o), 9, "{}", stderr(&o));

    // --checksum-file auto: SHA256SUMS beside the files, one entry wrong.
    std::fs::create_dir_all(fx.served.join("rel")).unwrap();
    let x = fx.serve("rel/x.iso", 70_000, 11);
    let y = fx.serve("rel/y.iso", 80_000, 12);
    let sums = format!("{}  x.iso\n{}  y.iso\n", sha256_hex(&x), "1".repeat(64));
    std::fs::write(fx.served.join("rel/SHA256SUMS"), sums).unwrap();
    let o = run(
        &[
            "-d",
            "rel",
            "--json",
            "--checksum-file",
            "auto",
            &fx.url("rel/*.iso"),
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 15, "{}", stderr(&o));
    let ev = events(&o);
    let s = summary(&ev);
    assert_eq!(
        (s["done"].as_u64(), s["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let done = of_kind(&ev, "file_done");
    assert!(
        done[0]["checks"]
            .to_string()
            .contains("sha256 matches SHA256SUMS on the server"),
        "{done:?}"
    );
    assert_eq!(std::fs::read(fx.local.join("rel/y.iso")).unwrap(), y);
    assert_eq!(std::fs::read(fx.local.join("rel/x.iso")).unwrap(), x);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_man_page_name_the_batch_options() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["completions", "bash"], dir.path()).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("--checksum-file") && text.contains("--max-connections-per-host"));
    let o = run(&["man"], dir.path()).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with(".ie") || text.contains(".TH ftpseg"),
        "{text}"
    );
    assert!(
        text.contains("verify\\-remote"),
        "man page lacks --verify-remote"
    );
}

async fn killed_batch_resumes_partial_files_and_skips_finished_ones(store: &'static str) {
    use ftpseg::testserver::Faults;
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(2 * MIB),
            ..Faults::default()
        })
    })
    .await;
    let small = fx.serve("small.bin", 1000, 30);
    let big = fx.serve("big.bin", 8 * MIB, 31);
    let args = [
        "-q",
        "--io",
        store,
        "-j",
        "1",
        "-n",
        "2",
        "--checkpoint-interval",
        "0.05",
        "-d",
        "r",
        &fx.url("small.bin"),
        &fx.url("big.bin"),
    ];
    let mut child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
    let out = fx.local.join("r/big.bin");
    // Killed (as by a laptop going to sleep and never coming back) once big.bin has progress.
    wait_for_durable(&out, MIB, Duration::from_secs(60)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(!out.exists());
    assert_claims_hold(&out, &big);

    let mut json_args = args.to_vec();
    json_args.retain(|a| *a != "-q");
    json_args.insert(0, "--json");
    let o = run(&json_args, &fx.local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ev = events(&o);
    assert_eq!(of_kind(&ev, "file_skipped").len(), 1, "{ev:?}");
    let done = of_kind(&ev, "file_done");
    assert_eq!(done.len(), 1, "{ev:?}");
    assert!(done[0]["resumed"].as_u64().unwrap() >= MIB, "{ev:?}");
    assert_ok_and_equal(&o, &out, &big);
    assert_eq!(std::fs::read(fx.local.join("r/small.bin")).unwrap(), small);
}
per_store!(killed_batch_resumes_partial_files_and_skips_finished_ones);
