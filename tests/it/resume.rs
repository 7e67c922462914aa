//! Crash safety: the real binary killed with SIGKILL and run again; changed remote files and
//! damaged manifests refused without losing the partial download. Every test runs once per
//! store (`--io mmap`, `splice`, `pwrite`; `resume::<test>::<store>`), each of its runs with that
//! store; one test hands a partial download from store to store.

use std::time::Duration;

use crate::common::*;
use ftpseg::internals::manifest::Manifest;
use ftpseg::testserver::Faults;

const RATE: u64 = MIB; // per connection

async fn throttled() -> Fixture {
    Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(RATE),
            ..Faults::default()
        })
    })
    .await
}

async fn sigkill_at_several_points_then_resume_is_byte_exact(store: &'static str) {
    let fx = throttled().await;
    let size = 16 * MIB;
    let n = 4u64;
    let data = fx.serve("f.bin", size, 11);
    let out = fx.out("f.bin");
    let args = [
        "-q",
        "--io",
        store,
        "-n",
        "4",
        "-o",
        out.to_str().unwrap(),
        &fx.url("f.bin"),
    ];
    let mut refetched = 0u64;
    let mut done_before = 0u64;
    for kill_at in [2 * MIB, 6 * MIB, 11 * MIB] {
        let sent_before = fx.server.stats().bytes_sent;
        let mut child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
        wait_for_durable(&out, kill_at, Duration::from_secs(60)).await;
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "killed, not finished");
        let done_after = assert_claims_hold(&out, &data).bytes_done();
        assert!(done_after >= kill_at);
        assert!(ftpseg::part_path(&out).exists());
        // What the server sent in this run beyond what became durable was fetched in vain.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = fx.server.stats().bytes_sent - sent_before;
        refetched += sent.saturating_sub(done_after - done_before);
        done_before = done_after;
    }
    let sent_before = fx.server.stats().bytes_sent;
    let o = run(&args, &fx.local).await;
    assert_ok_and_equal(&o, &out, &data);
    // The last run fetches only what the manifest does not hold: a client that ignored it
    // would fetch the whole file again (done_before, at least 11 MiB, more). Slack: the bytes
    // in flight when a steal cuts a transfer short.
    let last = fx.server.stats().bytes_sent - sent_before;
    let slack = n * (512 << 10);
    assert!(
        last <= size - done_before + slack,
        "the last run fetched {last} bytes; {} were missing",
        size - done_before
    );
    // About one checkpoint (1 s at RATE) per connection per kill, plus reads under way.
    let bound = 3 * n * (RATE + (512 << 10));
    assert!(
        refetched <= bound,
        "re-fetched {refetched} bytes over 3 kills, more than {bound}"
    );
}
per_store!(sigkill_at_several_points_then_resume_is_byte_exact);

/// A `.part` does not belong to the store that wrote it: killed under each store in turn, each
/// run resuming what the one before left under another store (mmap, splice, pwrite, then mmap to
/// finish), every claim holds after every kill and the last run fetches only what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_killed_under_one_store_resumes_under_another() {
    let fx = throttled().await;
    let size = 12 * MIB;
    let n = 4u64;
    let data = fx.serve("x.bin", size, 12);
    let out = fx.out("x.bin");
    let url = fx.url("x.bin");
    let args = |store: &'static str| {
        [
            "-q",
            "--io",
            store,
            "-n",
            "4",
            "-o",
            out.to_str().unwrap(),
            &url,
        ]
        .map(str::to_owned)
    };
    let mut done = 0;
    for (k, store) in STORES.into_iter().enumerate() {
        let mut child = ftpseg()
            .args(args(store))
            .current_dir(&fx.local)
            .spawn()
            .unwrap();
        let kill_at = (k as u64 + 1) * 3 * MIB;
        wait_for_durable(&out, kill_at, Duration::from_secs(60)).await;
        child.start_kill().unwrap();
        assert!(
            !child.wait().await.unwrap().success(),
            "killed, not finished"
        );
        done = assert_claims_hold(&out, &data).bytes_done();
        assert!(done >= kill_at, "--io {store}: {done} bytes durable");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent_before = fx.server.stats().bytes_sent;
    let o = run(&args(STORES[0]).each_ref().map(String::as_str), &fx.local).await;
    assert_ok_and_equal(&o, &out, &data);
    let last = fx.server.stats().bytes_sent - sent_before;
    let slack = n * (512 << 10);
    assert!(
        last <= size - done + slack,
        "--io {} after --io {}: the last run fetched {last} bytes; {} were missing",
        STORES[0],
        STORES[STORES.len() - 1],
        size - done
    );
}

async fn interrupted(
    fx: &Fixture,
    store: &'static str,
    name: &str,
    size: u64,
) -> (std::path::PathBuf, Vec<u8>) {
    let data = fx.serve(name, size, 21);
    let out = fx.out(name);
    let mut child = ftpseg()
        .args([
            "-q",
            "--io",
            store,
            "-n",
            "2",
            "-o",
            out.to_str().unwrap(),
            &fx.url(name),
        ])
        .current_dir(&fx.local)
        .spawn()
        .unwrap();
    wait_for_durable(&out, MIB, Duration::from_secs(60)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_claims_hold(&out, &data);
    (out, data)
}

async fn changed_remote_file_is_refused_and_restart_recovers(store: &'static str) {
    let fx = throttled().await;
    let (out, _) = interrupted(&fx, store, "f.bin", 8 * MIB).await;
    let part = ftpseg::part_path(&out);
    let part_before = std::fs::read(&part).unwrap();
    // The remote file is replaced by a longer one.
    let new = fx.serve("f.bin", 8 * MIB + 1, 22);
    let args = [
        "-q",
        "--io",
        store,
        "-o",
        out.to_str().unwrap(),
        &fx.url("f.bin"),
    ];
    let o = run(&args, &fx.local).await;
    assert_eq!(code(&o), 11, "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(
        msg.contains("changed") && msg.contains("--restart"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    assert_eq!(
        std::fs::read(&part).unwrap(),
        part_before,
        ".part untouched"
    );
    assert!(Manifest::path_for(&out).exists(), "manifest kept");

    let mut with_restart = args.to_vec();
    with_restart.insert(0, "--restart");
    let o = run(&with_restart, &fx.local).await;
    assert_ok_and_equal(&o, &out, &new);
}
per_store!(changed_remote_file_is_refused_and_restart_recovers);

async fn same_size_new_mtime_is_refused(store: &'static str) {
    let fx = throttled().await;
    let (out, _) = interrupted(&fx, store, "g.bin", 8 * MIB).await;
    let f = std::fs::File::options()
        .write(true)
        .open(fx.served.join("g.bin"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let o = run(
        &[
            "-q",
            "--io",
            store,
            "-o",
            out.to_str().unwrap(),
            &fx.url("g.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 11, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mdtm") || stderr(&o).contains("modif"),
        "{}",
        stderr(&o)
    );
}
per_store!(same_size_new_mtime_is_refused);

async fn damaged_manifest_is_refused_and_part_kept(store: &'static str) {
    let fx = throttled().await;
    let (out, data) = interrupted(&fx, store, "h.bin", 8 * MIB).await;
    let mpath = Manifest::path_for(&out);
    let part = ftpseg::part_path(&out);
    let part_before = std::fs::read(&part).unwrap();
    let text = std::fs::read(&mpath).unwrap();
    let args = [
        "-q",
        "--io",
        store,
        "-o",
        out.to_str().unwrap(),
        &fx.url("h.bin"),
    ];
    for damaged in [
        text[..text.len() / 2].to_vec(),
        b"not json at all".to_vec(),
        String::from_utf8_lossy(&text)
            .replace(
                &format!("\"version\": {}", ftpseg::internals::manifest::VERSION),
                "\"version\": 99",
            )
            .into_bytes(),
    ] {
        std::fs::write(&mpath, &damaged).unwrap();
        let o = run(&args, &fx.local).await;
        assert_eq!(code(&o), 10, "{}", stderr(&o));
        assert!(stderr(&o).contains("--restart"), "{}", stderr(&o));
        assert_eq!(
            std::fs::read(&part).unwrap(),
            part_before,
            ".part untouched"
        );
    }
    let mut with_restart = args.to_vec();
    with_restart.insert(0, "--restart");
    let o = run(&with_restart, &fx.local).await;
    assert_ok_and_equal(&o, &out, &data);
}
per_store!(damaged_manifest_is_refused_and_part_kept);

async fn ctrl_c_saves_progress_and_exits_130(store: &'static str) {
    let fx = throttled().await;
    let data = fx.serve("i.bin", 8 * MIB, 31);
    let out = fx.out("i.bin");
    let args = [
        "-q",
        "--io",
        store,
        "-n",
        "2",
        "-o",
        out.to_str().unwrap(),
        &fx.url("i.bin"),
    ];
    let child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
    wait_for_durable(&out, MIB, Duration::from_secs(60)).await;
    let pid = child.id().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let o = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code(&o), 130, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run the same command again"),
        "{}",
        stderr(&o)
    );
    let o = run(&args, &fx.local).await;
    assert_ok_and_equal(&o, &out, &data);
}
per_store!(ctrl_c_saves_progress_and_exits_130);

async fn streamed_download_of_unknown_size_resumes_after_sigkill(store: &'static str) {
    let fx = throttled().await;
    let data = fx.serve("s.bin", 4 * MIB + 3, 41);
    let proxy = Proxy::start(fx.server.addr(), &["SIZE"], None).await;
    let out = fx.out("s.bin");
    let args = [
        "-q",
        "--io",
        store,
        "-o",
        out.to_str().unwrap(),
        &proxy.url("s.bin"),
    ];
    let mut child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
    let mpath = Manifest::path_for(&out);
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(m)) = Manifest::load(&mpath)
            && m.streamed.unwrap_or(0) >= MIB
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_claims_hold(&out, &data);
    let sent_before = fx.server.stats().bytes_sent;
    let o = run(&args, &fx.local).await;
    assert_ok_and_equal(&o, &out, &data);
    let second_run = fx.server.stats().bytes_sent - sent_before;
    assert!(
        second_run < data.len() as u64 - MIB / 2,
        "the second run resumed instead of starting over ({second_run} bytes)"
    );
}
per_store!(streamed_download_of_unknown_size_resumes_after_sigkill);

async fn server_losing_rest_does_not_cost_the_partial_download(store: &'static str) {
    let fx = throttled().await;
    let (out, data) = interrupted(&fx, store, "r.bin", 8 * MIB).await;
    let part = ftpseg::part_path(&out);
    let part_before = std::fs::read(&part).unwrap();
    // The same file, now behind a proxy that refuses REST.
    let proxy = Proxy::start(fx.server.addr(), &["REST"], None).await;
    let args = [
        "-q",
        "--io",
        store,
        "-o",
        out.to_str().unwrap(),
        &proxy.url("r.bin"),
    ];
    let o = run(&args, &fx.local).await;
    assert_eq!(code(&o), 11, "{}", stderr(&o));
    assert!(stderr(&o).contains("--restart"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&part).unwrap(),
        part_before,
        ".part untouched"
    );
    // Back on the server that resumes: the download completes.
    let o = run(
        &[
            "-q",
            "--io",
            store,
            "-o",
            out.to_str().unwrap(),
            &fx.url("r.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
}
per_store!(server_losing_rest_does_not_cost_the_partial_download);

async fn damaged_part_is_caught_on_resume_and_only_bad_chunks_refetched(store: &'static str) {
    let fx = throttled().await;
    let size = 24 * MIB;
    let data = fx.serve("d.bin", size, 51);
    let out = fx.out("d.bin");
    let args = [
        "-q",
        "--io",
        store,
        "-n",
        "2",
        "-o",
        out.to_str().unwrap(),
        &fx.url("d.bin"),
    ];
    let mut child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
    // Wait until the first chunk (bytes 0..4 MiB) has its hash recorded.
    let mpath = Manifest::path_for(&out);
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(m)) = Manifest::load(&mpath)
            && m.chunks.first().is_some_and(|c| c.is_some())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "chunk 0 never hashed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_claims_hold(&out, &data);
    // Damage one byte of chunk 0 in the partial file, as a disk or a careless edit would.
    let part = ftpseg::part_path(&out);
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[1234] ^= 0xFF;
    std::fs::write(&part, &bytes).unwrap();
    let done_before = Manifest::load(&mpath).unwrap().unwrap().bytes_done();
    let sent_before = fx.server.stats().bytes_sent;

    let child = ftpseg()
        .args([
            "--plain",
            "--io",
            store,
            "-n",
            "2",
            "-o",
            out.to_str().unwrap(),
            &fx.url("d.bin"),
        ])
        .current_dir(&fx.local)
        .spawn()
        .unwrap();
    let o = child.wait_with_output().await.unwrap();
    assert_ok_and_equal(&o, &out, &data);
    assert!(stderr(&o).contains("no longer match"), "{}", stderr(&o));
    let sent = fx.server.stats().bytes_sent - sent_before;
    let needed = size - done_before + 4 * MIB;
    assert!(
        sent <= needed + 2 * MIB,
        "only the damaged chunk and the missing bytes were fetched: sent {sent}, needed {needed}"
    );
}
per_store!(damaged_part_is_caught_on_resume_and_only_bad_chunks_refetched);

async fn a_kill_at_40_percent_costs_at_most_the_resume_budget(store: &'static str) {
    // 4 connections at 8 MiB/s. Killed when the server has sent 40 % of the file (at no
    // particular moment of the checkpoint cycle), the rerun may fetch again at most
    // max(1 % of the file, 4 MiB per connection) = 16 MiB. With checkpoints only once a second
    // up to 32 MiB were at stake. (The server's count includes what sat in socket buffers at
    // the kill; the throttle keeps that small.)
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(8 * MIB),
            ..Faults::default()
        })
    })
    .await;
    let size = 128 * MIB;
    let data = fx.serve("f.bin", size, 21);
    let out = fx.out("f.bin");
    let args = [
        "-q",
        "--io",
        store,
        "-n",
        "4",
        "-o",
        out.to_str().unwrap(),
        &fx.url("f.bin"),
    ];
    let mut child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
    let started = std::time::Instant::now();
    while fx.server.stats().bytes_sent < size * 4 / 10 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let at_kill = fx.server.stats().bytes_sent;
    let durable = assert_claims_hold(&out, &data).bytes_done();
    let o = run(&args, &fx.local).await;
    assert_ok_and_equal(&o, &out, &data);
    eprintln!(
        "sent before the kill {} MiB, durable {} MiB, resumed run sent {} MiB",
        at_kill / MIB,
        durable / MIB,
        (fx.server.stats().bytes_sent - at_kill) / MIB
    );
    let refetched = fx.server.stats().bytes_sent.saturating_sub(size);
    // The budget, plus 1 MiB per connection for what the kernel held in socket buffers at the
    // kill (the server counts it as sent; no client can use it).
    assert!(
        refetched <= 16 * MIB + 4 * MIB,
        "{} MiB fetched twice (budget 16 MiB + 4 MiB of socket buffers)",
        refetched as f64 / MIB as f64
    );
}
per_store!(a_kill_at_40_percent_costs_at_most_the_resume_budget);
