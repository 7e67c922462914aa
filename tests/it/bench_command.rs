//! `ftpseg bench`: the real binary against the in-process server; the JSON report is parsed
//! and checked, the chart is written, and no temporary file is left behind.

use crate::common::{Fixture, MIB, code, run, stderr};
use ftpseg::testserver::Faults;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_each_count_and_leaves_nothing_behind() {
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(32 * MIB),
            ..Faults::default()
        })
    })
    .await;
    fx.serve("big.bin", 12 * MIB, 7);
    let tmp = fx.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let svg = fx.local.join("chart.svg");
    let o = run(
        &[
            "bench",
            "--connections",
            "1,4",
            "--bytes",
            "4M",
            "--repeat",
            "2",
            "--json",
            "-",
            "--plot",
            svg.to_str().unwrap(),
            "--dir",
            tmp.to_str().unwrap(),
            &fx.url("big.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is the JSON report ({e}): {}", stderr(&o)));
    assert_eq!(report["schema"], 1);
    assert_eq!(report["bytes_per_run"], 4 * MIB);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, n) in rows.iter().zip([1, 4]) {
        assert_eq!(row["connections"], n);
        assert_eq!(row["runs"].as_array().unwrap().len(), 2, "two repetitions");
        assert_eq!(row["median"]["bytes"], 4 * MIB, "exactly --bytes fetched");
        assert!(row["median"]["first_byte_seconds"].as_f64().unwrap() > 0.0);
        assert!(row["mib_per_second"].as_f64().unwrap() > 0.0);
    }
    let rec = report["recommended"].as_u64().unwrap();
    assert!(rec == 1 || rec == 4, "{report}");
    // The table goes to stderr when the JSON takes stdout.
    assert!(stderr(&o).contains("recommended: -n"), "{}", stderr(&o));
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.matches("<circle").count() == 2);
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // The server sent each run's bytes (plus what was in flight when a range stopped early).
    let sent = fx.server.stats().bytes_sent;
    assert!(sent >= 4 * 4 * MIB, "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_refuses_a_missing_folder_and_a_bad_count() {
    let fx = Fixture::new(|c| c).await;
    fx.serve("f.bin", MIB, 1);
    let o = run(
        &["bench", "--dir", "/nonexistent/ftpseg", &fx.url("f.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no such folder"), "{}", stderr(&o));
    let o = run(
        &["bench", "--connections", "1,0", &fx.url("f.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("connection count"), "{}", stderr(&o));
    let o = run(&["bench", &fx.url("missing.bin")], &fx.local).await;
    assert_eq!(code(&o), 6, "{}", stderr(&o));
}

/// `--discard`: the same runs, but nothing is stored anywhere: not in the working folder, not
/// in the temporary folder the bench would otherwise use (`TMPDIR`), not beside the output name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_discard_counts_the_bytes_and_stores_nothing() {
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(32 * MIB),
            ..Faults::default()
        })
    })
    .await;
    fx.serve("big.bin", 12 * MIB, 11);
    let tmp = fx.dir.path().join("tmp");
    let reports = fx.dir.path().join("reports");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(&reports).unwrap();
    let json = reports.join("bench.json");
    let mut cmd = crate::common::ftpseg();
    cmd.args([
        "bench",
        "--discard",
        "--connections",
        "1,2",
        "--bytes",
        "8M",
        "--json",
        json.to_str().unwrap(),
        &fx.url("big.bin"),
    ])
    .env("TMPDIR", &tmp)
    .current_dir(&fx.local);
    let o = crate::common::run_command(cmd).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("bytes discarded"), "{stdout}");
    assert!(stdout.contains("recommended: -n"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], 1);
    assert_eq!(report["discard"], true);
    assert_eq!(report["bytes_per_run"], 8 * MIB);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    for (row, n) in rows.iter().zip([1, 2]) {
        assert_eq!(row["connections"], n);
        assert_eq!(row["runs"].as_array().unwrap().len(), 1);
        assert_eq!(row["median"]["bytes"], 8 * MIB, "exactly --bytes counted");
        assert!(row["median"]["connections_opened"].as_u64().unwrap() >= n);
        assert!(row["mib_per_second"].as_f64().unwrap() > 0.0);
    }
    // The bytes really came over the network: the server sent both runs' 8 MiB.
    let sent = fx.server.stats().bytes_sent;
    assert!(sent >= 2 * 8 * MIB, "{sent}");
    // Nothing stored: no temporary file, no .part, no manifest, anywhere it could go.
    for dir in [&tmp, &fx.local] {
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "files left in {}: {left:?}", dir.display());
    }
    let reports_left: Vec<_> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(reports_left, ["bench.json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_refuses_discard_with_a_folder() {
    let fx = Fixture::new(|c| c).await;
    fx.serve("f.bin", MIB, 1);
    let dir = fx.dir.path().join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let o = run(
        &[
            "bench",
            "--discard",
            "--dir",
            dir.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let first = stderr(&o).lines().next().unwrap_or_default().to_owned();
    assert!(
        first.contains("--discard") && first.contains("--dir") && first.contains("cannot be used"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fx.server.stats().bytes_sent, 0, "refused before connecting");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
