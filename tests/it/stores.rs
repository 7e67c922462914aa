//! The stores of `--io` themselves: the list the per-store tests run against
//! ([`crate::common::STORES`]) is every store the binary offers, and each `--io` value really
//! selects its store (the setup line of `FTPSEG_TRACE`), so a per-store test is not one store
//! three times.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_io_value_but_auto_is_a_tested_store() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &["--io", "no-such-store", "ftp://127.0.0.1:9/f.bin"],
        dir.path(),
    )
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    let values: Vec<&str> = err
        .split_once("[possible values: ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .unwrap_or_else(|| panic!("no list of possible values in {err:?}"))
        .0
        .split(", ")
        .collect();
    let mut want = vec!["auto"];
    want.extend(STORES);
    assert_eq!(
        values, want,
        "--io offers other stores than the tests run (common::STORES, per_store!)"
    );
}

async fn io_selects_its_store(store: &'static str) {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 3 * MIB + 7, 91);
    let out = fx.out("f.bin");
    let mut cmd = ftpseg();
    cmd.env("FTPSEG_TRACE", "1")
        .args([
            "-q",
            "--io",
            store,
            "-n",
            "3",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ])
        .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_ok_and_equal(&o, &out, &data);
    let want = format!("setup: .part ready, {store} store");
    assert!(stderr(&o).contains(&want), "no {want:?} in {}", stderr(&o));
}
per_store!(io_selects_its_store);

/// A program embedding ftpseg chooses the store with `Job.io` (the library's `--io`): a
/// download through the library with each store is byte-exact and leaves nothing behind.
async fn library_job_io_downloads_with_its_store(store: &'static str) {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 5 * MIB + 3, 92);
    let out = fx.out("f.bin");
    let mut job = ftpseg::Job::new(ftpseg::FtpUrl::parse(&fx.url("f.bin")).unwrap(), &out);
    job.connections = 3;
    job.io = match store {
        "mmap" => ftpseg::Io::Mmap,
        "splice" => ftpseg::Io::Splice,
        "pwrite" => ftpseg::Io::Pwrite,
        other => panic!("no Io for {other}"),
    };
    let mut progress = ftpseg::Progress::new(ftpseg::Mode::Quiet);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let outcome = ftpseg::download(&job, &mut progress, stopped)
        .await
        .unwrap_or_else(|e| panic!("--io {store} through the library: {e}"));
    assert_eq!(outcome.size, data.len() as u64);
    assert!(std::fs::read(&out).unwrap() == data, "bytes differ");
    assert!(!ftpseg::internals::manifest::Manifest::path_for(&out).exists());
    assert!(!ftpseg::part_path(&out).exists());
}
per_store!(library_job_io_downloads_with_its_store);
