//! One file from several servers at once (`--mirror`, issue 19), with in-process servers
//! serving copies of the same file: the bytes mix into one byte-exact file, a slow mirror
//! sends less, a mirror with another size or a refused login is left out with a note, a
//! mirror stopped mid-download is failed over without ending the run, and
//! `--max-connections-per-host` holds on every server.

use std::path::Path;

use crate::common::*;
use ftpseg::testserver::{Faults, ServerConfig, TestServer, write_pattern_file};

/// A server of `dir` (user alice/s3cret besides anonymous), with `faults`.
async fn server(dir: &Path, faults: Faults) -> TestServer {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = ServerConfig::new(dir)
        .with_user("alice", "s3cret")
        .with_faults(faults);
    TestServer::start(cfg).await.unwrap()
}

fn rate(bytes_per_second: u64) -> Faults {
    Faults {
        rate_per_transfer: Some(bytes_per_second),
        ..Faults::default()
    }
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mirrors_make_one_byte_exact_file_and_the_odd_ones_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let len = 24 * MIB + 3;
    let src = dir.path().join("src.bin");
    write_pattern_file(&src, len, 31).unwrap();
    let data = std::fs::read(&src).unwrap();
    let copy = |d: &str| {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
        std::fs::copy(&src, dir.path().join(d).join("f.bin")).unwrap();
    };
    copy("a");
    copy("b");
    let a = server(&dir.path().join("a"), rate(4 * MIB)).await;
    // 4 times slower per connection.
    let b = server(&dir.path().join("b"), rate(MIB)).await;
    // Another file of the same name: another size.
    let c = server(&dir.path().join("c"), Faults::default()).await;
    write_pattern_file(&dir.path().join("c/f.bin"), len - 1, 31).unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let o = run(
        &[
            "-v",
            "-n",
            "6",
            "--mirror",
            &b.url("f.bin"),
            "--mirror",
            &c.url("f.bin"),
            "--mirror",
            "ftp://alice:wrong@127.0.0.1:1/f.bin",
            &a.url("f.bin"),
        ],
        &local,
    )
    .await;
    assert_ok_and_equal(&o, &local.join("f.bin"), &data);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "mirror {} left out: its file has {} bytes, not {len}",
            c.url("f.bin"),
            len - 1
        )),
        "{err}"
    );
    assert!(
        err.contains("mirror ftp://alice@127.0.0.1:1/f.bin left out: cannot connect"),
        "the password is not shown, the reason is: {err}"
    );
    let (sa, sb) = (a.stats(), b.stats());
    assert!(
        sa.bytes_sent > 0 && sb.bytes_sent > 0,
        "both sent: {sa:?} {sb:?}"
    );
    assert!(
        sa.bytes_sent > sb.bytes_sent,
        "the slow mirror sent more than the fast one: {} vs {}",
        sb.bytes_sent,
        sa.bytes_sent
    );
    assert_eq!(c.stats().retrs, 0, "the mirror of another size sent bytes");
    let text = out(&o);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with("6 connections to 2 servers"),
        "{text}"
    );
    assert!(
        text.contains(&format!("from {}: ", b.url("f.bin"))),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_stopped_mid_download_is_failed_over() {
    let dir = tempfile::tempdir().unwrap();
    let len = 24 * MIB + 7;
    let data_path = dir.path().join("a/f.bin");
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    write_pattern_file(&data_path, len, 32).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    std::fs::copy(&data_path, dir.path().join("b/f.bin")).unwrap();
    let data = std::fs::read(&data_path).unwrap();
    let a = server(&dir.path().join("a"), rate(4 * MIB)).await;
    let b = server(&dir.path().join("b"), rate(2 * MIB)).await;
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut cmd = ftpseg();
    cmd.args([
        "-n",
        "6",
        "--max-tries",
        "2",
        "--mirror",
        &b.url("f.bin"),
        &a.url("f.bin"),
    ])
    .current_dir(&local);
    let child = cmd.spawn().unwrap();
    // Once b has sent some of its share, it goes away for good.
    let started = std::time::Instant::now();
    while b.stats().bytes_sent < 2 * MIB && started.elapsed().as_secs() < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    b.shutdown().await;
    let o = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("no end within 120 s")
    .unwrap();
    assert_ok_and_equal(&o, &local.join("f.bin"), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_host_limit_holds_on_every_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let len = 16 * MIB;
    let first = dir.path().join("s0/f.bin");
    std::fs::create_dir_all(dir.path().join("s0")).unwrap();
    write_pattern_file(&first, len, 33).unwrap();
    let data = std::fs::read(&first).unwrap();
    let mut servers = Vec::new();
    for k in 0..3 {
        let d = dir.path().join(format!("s{k}"));
        if k > 0 {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(&first, d.join("f.bin")).unwrap();
        }
        servers.push(server(&d, rate(2 * MIB)).await);
    }
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let o = run(
        &[
            "-n",
            "9",
            "--max-connections-per-host",
            "2",
            "--mirror",
            &servers[1].url("f.bin"),
            "--mirror",
            &servers[2].url("f.bin"),
            &servers[0].url("f.bin"),
        ],
        &local,
    )
    .await;
    assert_ok_and_equal(&o, &local.join("f.bin"), &data);
    for (k, s) in servers.iter().enumerate() {
        let st = s.stats();
        assert!(st.max_live_connections <= 2, "server {k}: {st:?}");
        assert!(st.bytes_sent > 0, "server {k} sent nothing: {st:?}");
    }
    assert!(
        out(&o).contains(", 6 connections to 3 servers"),
        "{}",
        out(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_is_for_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "--mirror",
            "ftp://127.0.0.1:1/a",
            "ftp://127.0.0.1:1/a",
            "ftp://127.0.0.1:1/b",
        ],
        dir.path(),
    )
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--mirror is for one file"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_line_with_tabs_gives_one_file_its_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    write_pattern_file(&dir.path().join("a/m.bin"), 12 * MIB + 1, 34).unwrap();
    std::fs::copy(dir.path().join("a/m.bin"), dir.path().join("b/m.bin")).unwrap();
    write_pattern_file(&dir.path().join("a/one.bin"), MIB, 35).unwrap();
    let a = server(&dir.path().join("a"), rate(4 * MIB)).await;
    let b = server(&dir.path().join("b"), rate(4 * MIB)).await;
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "{}\t{}\tmirrored.bin\n{}\n",
            a.url("m.bin"),
            b.url("m.bin"),
            a.url("one.bin")
        ),
    )
    .unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let o = run(&["-n", "4", "-i", list.to_str().unwrap()], &local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read(local.join("mirrored.bin")).unwrap(),
        std::fs::read(dir.path().join("a/m.bin")).unwrap()
    );
    assert_eq!(
        std::fs::read(local.join("one.bin")).unwrap(),
        std::fs::read(dir.path().join("a/one.bin")).unwrap()
    );
    assert!(
        b.stats().bytes_sent > 0,
        "the mirror sent nothing: {:?}",
        b.stats()
    );
}

/// A Metalink 4 document of `files`: (name, size, sha-256 hex, URLs).
fn meta4(files: &[(&str, u64, String, Vec<String>)]) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n",
    );
    for (name, size, sha, urls) in files {
        x += &format!(
            "  <file name=\"{name}\">\n    <size>{size}</size>\n    \
             <hash type=\"sha-256\">{sha}</hash>\n"
        );
        for (k, u) in urls.iter().enumerate() {
            x += &format!("    <url priority=\"{}\">{u}</url>\n", k + 1);
        }
        x += "  </file>\n";
    }
    x + "</metalink>\n"
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metalink_downloads_each_file_from_its_mirrors_and_checks_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    write_pattern_file(&dir.path().join("a/big.iso"), 12 * MIB + 9, 36).unwrap();
    std::fs::copy(dir.path().join("a/big.iso"), dir.path().join("b/big.iso")).unwrap();
    write_pattern_file(&dir.path().join("a/small.txt"), 100_000, 37).unwrap();
    let big = std::fs::read(dir.path().join("a/big.iso")).unwrap();
    let small = std::fs::read(dir.path().join("a/small.txt")).unwrap();
    let a = server(&dir.path().join("a"), rate(4 * MIB)).await;
    let b = server(&dir.path().join("b"), rate(4 * MIB)).await;
    let doc = meta4(&[
        (
            "isos/big.iso",
            big.len() as u64,
            sha256_hex(&big),
            vec![
                a.url("big.iso"),
                b.url("big.iso"),
                "https://example.org/big.iso".into(),
            ],
        ),
        (
            "small.txt",
            small.len() as u64,
            sha256_hex(&small),
            vec![a.url("small.txt")],
        ),
    ]);
    let file = dir.path().join("set.meta4");
    std::fs::write(&file, &doc).unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let o = run(&["-n", "4", file.to_str().unwrap()], &local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(local.join("isos/big.iso")).unwrap(), big);
    assert_eq!(std::fs::read(local.join("small.txt")).unwrap(), small);
    assert!(b.stats().bytes_sent > 0, "the second mirror sent nothing");
    assert!(out(&o).contains("verified sha256"), "{}", out(&o));
    assert!(
        stderr(&o).contains("the Metalink has 1 URL ftpseg does not fetch (1 https)"),
        "{}",
        stderr(&o)
    );

    // A hash that does not match: exit 15, the file kept for a look.
    let wrong = meta4(&[(
        "small.txt",
        small.len() as u64,
        "0".repeat(64),
        vec![a.url("small.txt")],
    )]);
    std::fs::write(&file, &wrong).unwrap();
    let again = dir.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let o = run(&["--metalink", file.to_str().unwrap()], &again).await;
    assert_eq!(code(&o), 15, "{}", stderr(&o));

    // A malformed one: one line, exit 3, nothing fetched.
    std::fs::write(
        &file,
        "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\"><file",
    )
    .unwrap();
    let before = a.stats().retrs;
    let o = run(&[file.to_str().unwrap()], &again).await;
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("ftpseg: error: {}: not valid XML", file.display())),
        "{err}"
    );
    assert_eq!(a.stats().retrs, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serving_other_bytes_is_caught_by_the_piece_hashes_and_dropped() {
    // b serves a copy with one byte changed in every MiB, faster than a: whatever b sends
    // fails its piece hash, is fetched again from a, and b is dropped by name.
    let dir = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let len = 12 * MIB + 5;
    write_pattern_file(&dir.path().join("a/f.iso"), len, 38).unwrap();
    let good = std::fs::read(dir.path().join("a/f.iso")).unwrap();
    let mut bad = good.clone();
    for at in (1000..bad.len()).step_by(MIB as usize) {
        bad[at] ^= 0x20;
    }
    std::fs::write(dir.path().join("b/f.iso"), &bad).unwrap();
    let a = server(&dir.path().join("a"), rate(2 * MIB)).await;
    let b = server(&dir.path().join("b"), rate(8 * MIB)).await;
    let piece = MIB as usize;
    let hashes: String = good
        .chunks(piece)
        .map(|c| format!("      <hash>{}</hash>\n", sha256_hex(c)))
        .collect();
    let doc = format!(
        "<?xml version=\"1.0\"?>\n<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n  \
         <file name=\"f.iso\">\n    <size>{len}</size>\n    <hash type=\"sha-256\">{}</hash>\n    \
         <pieces length=\"{piece}\" type=\"sha-256\">\n{hashes}    </pieces>\n    \
         <url priority=\"1\">{}</url>\n    <url priority=\"2\">{}</url>\n  </file>\n</metalink>\n",
        sha256_hex(&good),
        a.url("f.iso"),
        b.url("f.iso"),
    );
    let file = dir.path().join("f.meta4");
    std::fs::write(&file, doc).unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let o = run(&["-n", "4", file.to_str().unwrap()], &local).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(local.join("f.iso")).unwrap(), good);
    assert!(
        b.stats().bytes_sent > 0,
        "b sent nothing: the case was not tried"
    );
    assert!(
        stderr(&o).contains(&format!(
            "mirror {} served bytes that do not match the Metalink piece hash at offset",
            b.url("f.iso")
        )),
        "{}",
        stderr(&o)
    );
    assert!(out(&o).contains("verified sha256"), "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_mirrors_then_resumed_with_another_mirror_list() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let len = 16 * MIB + 3;
    write_pattern_file(&dir.path().join("a/f.bin"), len, 39).unwrap();
    for d in ["b", "c"] {
        std::fs::copy(dir.path().join("a/f.bin"), dir.path().join(d).join("f.bin")).unwrap();
    }
    let data = std::fs::read(dir.path().join("a/f.bin")).unwrap();
    let a = server(&dir.path().join("a"), rate(MIB)).await;
    let b = server(&dir.path().join("b"), rate(MIB)).await;
    let c = server(&dir.path().join("c"), rate(4 * MIB)).await;
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let out = local.join("f.bin");
    let mut cmd = ftpseg();
    cmd.args([
        "-n",
        "4",
        "--checkpoint-interval",
        "0.2",
        "--mirror",
        &b.url("f.bin"),
        &a.url("f.bin"),
    ])
    .current_dir(&local);
    let mut child = cmd.spawn().unwrap();
    wait_for_durable(&out, 3 * MIB, std::time::Duration::from_secs(60)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_claims_hold(&out, &data);
    // The same file on another mirror list: resumed, not started over.
    let a_before = a.stats().bytes_sent;
    let o = run(
        &["-n", "4", "--mirror", &c.url("f.bin"), &a.url("f.bin")],
        &local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let fetched = a.stats().bytes_sent - a_before + c.stats().bytes_sent;
    assert!(
        fetched <= len - 2 * MIB,
        "{fetched} bytes fetched again of {len}: the 3 MiB on disk were not kept"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(" resumed"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_with_another_file_of_the_same_size_is_left_out_by_the_spot_check() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let len = 8 * MIB + 1;
    write_pattern_file(&dir.path().join("a/f.iso"), len, 40).unwrap();
    // Same name, same size, other bytes (a rebuilt image).
    write_pattern_file(&dir.path().join("b/f.iso"), len, 41).unwrap();
    let data = std::fs::read(dir.path().join("a/f.iso")).unwrap();
    let a = server(&dir.path().join("a"), Faults::default()).await;
    let b = server(&dir.path().join("b"), Faults::default()).await;
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let o = run(&["--mirror", &b.url("f.iso"), &a.url("f.iso")], &local).await;
    assert_ok_and_equal(&o, &local.join("f.iso"), &data);
    assert!(
        stderr(&o).contains(&format!(
            "mirror {} left out: its bytes at offset {} differ from {}'s",
            b.url("f.iso"),
            (len - (64 << 10)) / 2,
            a.url("f.iso")
        )),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_servers_stopped_one_after_the_other_still_ends_byte_exact() {
    // Review case: the second drop used to end the download ("failed after 2 tries") although
    // the first server was healthy.
    let dir = tempfile::tempdir().unwrap();
    let len = 16 * MIB + 11;
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    write_pattern_file(&dir.path().join("a/f.bin"), len, 42).unwrap();
    for d in ["b", "c"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
        std::fs::copy(dir.path().join("a/f.bin"), dir.path().join(d).join("f.bin")).unwrap();
    }
    let data = std::fs::read(dir.path().join("a/f.bin")).unwrap();
    let a = server(&dir.path().join("a"), rate(2 * MIB)).await;
    let b = server(&dir.path().join("b"), rate(2 * MIB)).await;
    let c = server(&dir.path().join("c"), rate(2 * MIB)).await;
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut cmd = ftpseg();
    cmd.args([
        "-n",
        "3",
        "--max-tries",
        "2",
        "--mirror",
        &b.url("f.bin"),
        "--mirror",
        &c.url("f.bin"),
        &a.url("f.bin"),
    ])
    .current_dir(&local);
    let child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    while b.stats().bytes_sent < MIB && started.elapsed().as_secs() < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    b.shutdown().await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    c.shutdown().await;
    let o = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("no end within 120 s")
    .unwrap();
    assert_ok_and_equal(&o, &local.join("f.bin"), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_url_whose_size_is_not_the_metalink_s_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    write_pattern_file(&dir.path().join("a/f.iso"), MIB, 43).unwrap();
    let data = std::fs::read(dir.path().join("a/f.iso")).unwrap();
    let a = server(&dir.path().join("a"), Faults::default()).await;
    let doc = meta4(&[(
        "f.iso",
        data.len() as u64 + 1,
        sha256_hex(&data),
        vec![a.url("f.iso")],
    )]);
    let file = dir.path().join("f.meta4");
    std::fs::write(&file, doc).unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let o = run(&[file.to_str().unwrap()], &local).await;
    assert_eq!(code(&o), 11, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "{} has {} bytes, the Metalink says {}",
            a.url("f.iso"),
            data.len(),
            data.len() + 1
        )),
        "{}",
        stderr(&o)
    );
    assert!(!local.join("f.iso").exists());
}
