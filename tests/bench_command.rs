//! `ftpseg bench`: the real binary against the in-process server; the JSON report is parsed
//! and checked, the chart is written, and no temporary file is left behind.

mod common;

use common::{Fixture, MIB, code, run, stderr};
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
