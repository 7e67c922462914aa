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
    assert!(report.get("ranking").is_none(), "one URL: today's report");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.matches("<circle").count() == 2);
    assert_eq!(chart.matches("<polyline").count(), 1);
    assert!(
        chart.contains(r#"class="scaling""#),
        "the dashed perfect-scaling line"
    );
    assert!(chart.contains(&format!(">-n {rec}</text>")), "{chart}");
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

/// A loopback port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The same file on two servers, one throttled to 4 MiB/s per connection and one to 32, and a
/// third URL where nothing listens: each is measured in turn (given slow first), the dead one
/// is reported and the others still run, the ranking puts the fast one first, the JSON has
/// both reports, the chart a line, a dashed reference and a label each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_ranks_two_mirrors_and_reports_the_dead_one() {
    let rate = |r| {
        move |c: ftpseg::testserver::ServerConfig| {
            c.with_faults(Faults {
                rate_per_transfer: Some(r),
                ..Faults::default()
            })
        }
    };
    let slow = Fixture::new(rate(4 * MIB)).await;
    let fast = Fixture::new(rate(32 * MIB)).await;
    slow.serve("big.bin", 8 * MIB, 5);
    fast.serve("big.bin", 8 * MIB, 5);
    let dead = format!("ftp://127.0.0.1:{}/big.bin", closed_port());
    let svg = fast.local.join("mirrors.svg");
    let o = run(
        &[
            "bench",
            "--discard",
            "--connections",
            "1,2",
            "--bytes",
            "4M",
            "--json",
            "-",
            "--plot",
            svg.to_str().unwrap(),
            &slow.url("big.bin"),
            &dead,
            &fast.url("big.bin"),
        ],
        &fast.local,
    )
    .await;
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "one mirror down is not a failure: {err}");
    // A header line per mirror, in the order given.
    for (i, url) in [slow.url("big.bin"), dead.clone(), fast.url("big.bin")]
        .iter()
        .enumerate()
    {
        let header = format!("ftpseg bench {url} (mirror {} of 3)", i + 1);
        assert!(err.contains(&header), "{header}: {err}");
    }
    let all: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is the JSON report ({e}): {err}"));
    assert_eq!(all["schema"], 1);
    let mirrors = all["mirrors"].as_array().unwrap();
    assert_eq!(mirrors.len(), 2, "the two measured mirrors: {all}");
    assert_eq!(mirrors[0]["url"], slow.url("big.bin").as_str());
    assert_eq!(mirrors[1]["url"], fast.url("big.bin").as_str());
    for m in mirrors {
        assert_eq!(m["schema"], 1);
        assert_eq!(m["rows"].as_array().unwrap().len(), 2);
        assert_eq!(m["bytes_per_run"], 4 * MIB);
    }
    let ranking = all["ranking"].as_array().unwrap();
    let order: Vec<&str> = ranking.iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert_eq!(
        order,
        [
            fast.url("big.bin").as_str(),
            slow.url("big.bin").as_str(),
            dead.as_str()
        ],
        "{all}"
    );
    let (f, s) = (&ranking[0], &ranking[1]);
    let rate_of = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    assert!(
        rate_of(f, "best_mib_per_second") > 2.0 * rate_of(s, "best_mib_per_second"),
        "{all}"
    );
    // 4 MiB/s per connection: one stream near 4, never above.
    let single = rate_of(s, "single_stream_mib_per_second");
    assert!(single > 2.0 && single < 4.5, "{all}");
    assert!(rate_of(f, "first_byte_seconds") > 0.0);
    assert_eq!(ranking[2]["ok"], false);
    assert!(ranking[2]["best_mib_per_second"].is_null());
    let why = ranking[2]["error"].as_str().unwrap();
    assert!(why.contains("cannot connect"), "{why}");
    assert!(
        err.contains(&format!("failed: {why}")),
        "the ranking table says so: {err}"
    );
    // The command that uses them, best first: -n the sum, per host the largest.
    let rec = |r: &serde_json::Value| r["recommended"].as_u64().unwrap();
    let cmd = format!(
        "suggested: ftpseg -n {} --max-connections-per-host {} --mirror {} {}",
        rec(f) + rec(s),
        rec(f).max(rec(s)),
        slow.url("big.bin"),
        fast.url("big.bin")
    );
    assert!(err.contains(&cmd), "{cmd}: {err}");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        chart.matches("<polyline").count(),
        2,
        "a line per measured mirror"
    );
    assert_eq!(chart.matches(r#"class="scaling""#).count(), 2);
    assert!(chart.contains(r#"stroke-dasharray="6 4""#));
    for r in [f, s] {
        let label = format!(">-n {}</text>", rec(r));
        assert!(chart.contains(&label), "{label}: {chart}");
        assert!(chart.contains(r["url"].as_str().unwrap()), "in the legend");
    }
    // Nothing stored with --discard, wherever the runs ran from.
    assert_eq!(
        std::fs::read_dir(&fast.local).unwrap().count(),
        1,
        "only the chart"
    );
}

/// Every mirror failing fails the command with the first one's error and exit code (5: login
/// refused); the JSON still lists them, and the password given in a URL is never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fails_only_when_every_mirror_fails() {
    let fx = Fixture::new(|c| c).await;
    fx.serve("f.bin", MIB, 1);
    let addr = fx.url("f.bin").trim_start_matches("ftp://").to_owned();
    let refused = format!("ftp://alice:hunter2@{addr}");
    let dead = format!("ftp://127.0.0.1:{}/f.bin", closed_port());
    let json = fx.local.join("all.json");
    let o = run(
        &[
            "bench",
            "--discard",
            "--connections",
            "1",
            "--json",
            json.to_str().unwrap(),
            &refused,
            &dead,
        ],
        &fx.local,
    )
    .await;
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(code(&o), 5, "the first mirror's error: {out}{err}");
    assert!(err.contains("login refused"), "{err}");
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));
    assert!(!out.contains("suggested:"), "nothing to suggest: {out}");
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(all["mirrors"].as_array().unwrap().len(), 0);
    let ranking = all["ranking"].as_array().unwrap();
    assert_eq!(ranking.len(), 2);
    assert_eq!(ranking[0]["url"], format!("ftp://alice@{addr}").as_str());
    assert!(
        ranking[0]["error"]
            .as_str()
            .unwrap()
            .contains("login refused")
    );
    assert!(
        ranking[1]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect")
    );
}
