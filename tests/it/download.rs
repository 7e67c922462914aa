//! Byte-exact downloads from the in-process server: sizes, connection counts, work stealing,
//! fallbacks. A leftover `.part` without a manifest is distrusted under every store.

use crate::common::*;
use ftpseg::testserver::Faults;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_and_connection_counts_are_byte_exact() {
    let fx = Fixture::new(|c| c).await;
    let files = [
        ("empty.bin", 0u64),
        ("one.bin", 1),
        ("prime.bin", 1_000_003),
        ("big.bin", 64 * MIB),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        let data = fx.serve(name, *len, i as u64 + 1);
        for n in [1, 3, 8, 16] {
            let out = fx.out(&format!("{name}.{n}"));
            let o = run(
                &[
                    "-q",
                    "-n",
                    &n.to_string(),
                    "-o",
                    out.to_str().unwrap(),
                    &fx.url(name),
                ],
                &fx.local,
            )
            .await;
            assert_ok_and_equal(&o, &out, &data);
        }
    }
}

/// The other connections log in while the first one still probes the server (issue 4), but only
/// as many as the file's size needs: one login per connection used, never one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_only_those_the_file_needs() {
    let fx = Fixture::new(|c| c).await;
    // (size, -n, connections the size allows with --min-range 1M)
    let cases = [
        ("tiny.bin", 100 * 1024, 8, 1),
        ("three.bin", 3 * MIB, 8, 3),
        ("big.bin", 16 * MIB, 4, 4),
    ];
    for (i, (name, len, n, logins)) in cases.into_iter().enumerate() {
        let data = fx.serve(name, len, 40 + i as u64);
        let out = fx.out(name);
        let before = fx.server.stats().login_attempts;
        let o = run(
            &[
                "-q",
                "-n",
                &n.to_string(),
                "--min-range",
                "1M",
                "-o",
                out.to_str().unwrap(),
                &fx.url(name),
            ],
            &fx.local,
        )
        .await;
        assert_ok_and_equal(&o, &out, &data);
        assert_eq!(
            fx.server.stats().login_attempts - before,
            logins,
            "{name} ({len} bytes) with -n {n}"
        );
    }
}

/// The test server's long path (`ServerConfig::with_latency`, `ftpseg serve --rtt-ms`, the
/// benchmark's latency scenario) really delays the control connection: the greeting comes two
/// round trips after the connect, each reply one round trip after its command. A download
/// through it is byte-exact, its early logins and early end included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_control_path_delays_every_round_trip_and_downloads_byte_exact() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let rtt = std::time::Duration::from_millis(60);
    let fx = Fixture::new(|c| c.with_latency(rtt)).await;
    let data = fx.serve("far.bin", 6 * MIB + 5, 77);

    let t0 = std::time::Instant::now();
    let tcp = tokio::net::TcpStream::connect(fx.server.addr())
        .await
        .unwrap();
    let mut control = BufReader::new(tcp);
    let mut line = String::new();
    control.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220"), "{line}");
    assert!(t0.elapsed() >= 2 * rtt, "greeting after {:?}", t0.elapsed());
    let t1 = std::time::Instant::now();
    control
        .get_mut()
        .write_all(b"USER anonymous\r\n")
        .await
        .unwrap();
    line.clear();
    control.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("331"), "{line}");
    assert!(t1.elapsed() >= rtt, "reply after {:?}", t1.elapsed());
    drop(control);

    let out = fx.out("far.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "4",
            "-o",
            out.to_str().unwrap(),
            &fx.url("far.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_output_name_and_summary() {
    let fx = Fixture::new(|c| c).await;
    std::fs::create_dir_all(fx.served.join("sub dir")).unwrap();
    let data = fx.serve("sub dir/name with spaces.bin", 3 * MIB + 7, 9);
    let url = fx.url("sub dir/name with spaces.bin");
    assert!(
        url.ends_with("/sub%20dir/name%20with%20spaces.bin"),
        "{url}"
    );
    let o = run(&[&url], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("name with spaces.bin"), &data);
    let stdout = String::from_utf8_lossy(&o.stdout);
    // One line a person reads at a glance, within 80 columns for a short path.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {stdout}");
    assert!(
        lines[0].starts_with("saved name with spaces.bin (3.00 MiB) in "),
        "{stdout}"
    );
    // 3 MiB in ranges of at least 1 MiB: 3 of the 8 connections.
    assert!(lines[0].ends_with("/s, 3 connections"), "{stdout}");
    assert!(lines[0].chars().count() <= 80, "longer than 80: {stdout}");
    let hash = blake3::hash(&data).to_hex().to_string();
    assert!(!stdout.contains(&hash), "the BLAKE3 is for -v: {stdout}");
    // -v adds the BLAKE3 on a second line.
    let o = run(&["-v", "--force", &url], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("name with spaces.bin"), &data);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let second = stdout.lines().nth(1).unwrap_or_default();
    assert!(
        second.trim_start().starts_with(&format!("BLAKE3 {hash} (")),
        "-v names the BLAKE3: {stdout}"
    );
    // --json carries it for scripts (a batch of one: the complete file would be skipped).
    std::fs::remove_file(fx.out("name with spaces.bin")).unwrap();
    let o = run(&["--json", &url], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("name with spaces.bin"), &data);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let done: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "file_done")
        .unwrap_or_else(|| panic!("no file_done event: {stdout}"));
    assert_eq!(done["blake3"], hash.as_str(), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stealing_does_not_wait_for_the_slow_connection() {
    // The connection reading range 0 gets 256 KiB/s; the others 16 MiB/s. Without stealing,
    // range 0 (8 MiB of 32) alone would take 32 s and be served entirely by the slow RETR.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(16 * MIB),
            slow_rate_at_zero: Some(256 << 10),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 32 * MIB, 3);
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "4",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let stats = fx.server.stats();
    assert!(
        stats.bytes_sent_from_zero < 4 * MIB,
        "the slow connection served {} bytes: its range was not stolen",
        stats.bytes_sent_from_zero
    );
    assert!(stats.retrs > 4, "steals open new transfers: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_hashed_as_written_merge_into_the_file_s_blake3() {
    // Connections hash the whole chunks they write as they write them; the chunks cut by a
    // steal are read back. Both kinds merge into the summary's BLAKE3, which must be the file's.
    // A slow second session makes the others split its range at cuts of their choosing.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            session_rates: vec![16 * MIB, 512 << 10, 16 * MIB, 16 * MIB],
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 40 * MIB + 4321, 21);
    let out = fx.out("f.bin");
    let mut cmd = ftpseg();
    cmd.args([
        "-v",
        "-n",
        "4",
        "-o",
        out.to_str().unwrap(),
        &fx.url("f.bin"),
    ])
    .current_dir(&fx.local)
    .env("FTPSEG_TRACE", "1");
    let o = run_command(cmd).await;
    assert_ok_and_equal(&o, &out, &data);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&blake3::hash(&data).to_hex().to_string()),
        "summary names the file's BLAKE3: {stdout}"
    );
    let err = stderr(&o);
    let counts = err
        .lines()
        .find_map(|l| l.split_once("chunks hashed as written: "))
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or_else(|| panic!("no hashing line in the trace: {err}"));
    let inline: u64 = counts.split(',').next().unwrap().trim().parse().unwrap();
    assert!(
        inline >= 5,
        "most of the 11 chunks hashed as written: {counts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_connection_keeps_only_what_it_can_finish_in_time() {
    // The second control connection is 64 times slower than the others for all its transfers
    // (a slow path, not a slow first transfer). Halving its range (the old rule) would leave it
    // at least 1 MiB (16 s); balancing by measured speed leaves it a few hundred KiB, and its
    // last bytes are taken over by a fast connection.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            session_rates: vec![8 * MIB, 128 << 10, 8 * MIB, 8 * MIB],
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 24 * MIB, 11);
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "4",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let stats = fx.server.stats();
    let slow = stats.bytes_by_connection[1];
    assert!(
        slow < MIB,
        "the slow connection sent {slow} bytes: it kept too much of its range ({stats:?})"
    );
    assert_eq!(
        stats.bytes_by_connection.iter().sum::<u64>(),
        stats.bytes_sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_connections_grow_on_a_capped_server_and_stop_at_its_limit() {
    // 4 MiB/s per connection: every added connection pays, so -n auto keeps adding.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(4 * MIB),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 40 * MIB, 12);
    let out = fx.out("f.bin");
    let args = ["-n", "auto", "--plain", "-o", out.to_str().unwrap()];
    let o = run(
        &[&args[..], &[fx.url("f.bin").as_str()]].concat(),
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let stats = fx.server.stats();
    assert!(
        stats.max_live_connections > 2,
        "-n auto starts with 2 and must add more on a per-connection cap: {stats:?}"
    );
    assert!(
        stderr(&o).contains("-n auto: stopped adding connections at"),
        "{}",
        stderr(&o)
    );

    // The same with a server that allows 3 connections: no storm of refused logins.
    let fx = Fixture::new(|c| {
        c.with_max_connections(3).with_faults(Faults {
            rate_per_transfer: Some(4 * MIB),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 64 * MIB, 13);
    let out = fx.out("f.bin");
    let args = ["-n", "auto", "--plain", "-o", out.to_str().unwrap()];
    let o = run(
        &[&args[..], &[fx.url("f.bin").as_str()]].concat(),
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let stats = fx.server.stats();
    assert_eq!(stats.max_live_connections, 3);
    assert!(
        stats.connections_refused <= 2,
        "auto stops at the first refusal: {stats:?}"
    );
    assert!(
        stderr(&o).contains("refused a connection"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_rate_holds_all_connections_together_to_the_rate() {
    // 6 MiB at 2 MiB/s over 4 connections: at least about 3 s (a lower bound only, so a slow
    // machine cannot make it fail), and the bytes intact.
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 6 * MIB, 14);
    let out = fx.out("f.bin");
    let started = std::time::Instant::now();
    let o = run(
        &[
            "-q",
            "-n",
            "4",
            "--limit-rate",
            "2M",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    let took = started.elapsed().as_secs_f64();
    assert_ok_and_equal(&o, &out, &data);
    assert!(took >= 2.5, "6 MiB at 2 MiB/s took only {took:.2} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refused_falls_back_to_one_stream() {
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            refuse_rest: true,
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 5 * MIB + 3, 4);
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-n",
            "8",
            "--plain",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(
        stderr(&o).contains("does not support REST"),
        "the user is told: {}",
        stderr(&o)
    );
    assert_eq!(fx.server.stats().retrs, 1, "one stream from byte 0");
}

async fn part_without_manifest_is_not_trusted(store: &'static str) {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 2 * MIB, 5);
    let out = fx.out("f.bin");
    // A leftover .part of the right size full of wrong bytes, with no manifest.
    std::fs::write(ftpseg::part_path(&out), vec![0xAAu8; data.len()]).unwrap();
    let o = run(
        &[
            "--plain",
            "--io",
            store,
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(stderr(&o).contains("cannot be trusted"), "{}", stderr(&o));
}
per_store!(part_without_manifest_is_not_trusted);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_from_where_the_range_got() {
    // The first 6 transfers fail after 300 KB (EOF then 451); later ones succeed.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(8 * MIB),
            error_after: Some(300_000),
            faulty_transfers: Some(6),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 8 * MIB, 6);
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "3",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let stats = fx.server.stats();
    // Each failed transfer had sent 300 KB into its range: a retry that starts the range
    // again fetches those 6 x 300 KB twice (1.8 MB over the file); one that resumes where the
    // range got fetches none of them again (measured: 130-250 KB over the file, bytes in
    // flight when a transfer is cut short).
    assert!(
        stats.bytes_sent < 8 * MIB + 6 * 300_000 / 2,
        "retries resume mid-range rather than from the start: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connection_is_replaced() {
    // The first transfer stalls after 1 MB; with a 1 s stall timeout it is dropped and resumed.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            stall_after: Some(1_000_000),
            faulty_transfers: Some(1),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 4 * MIB, 7);
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "1",
            "--stall-timeout",
            "1",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(fx.server.stats().connections_accepted >= 2, "reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_size_uses_the_size_announced_in_150() {
    let fx = Fixture::new(|c| c).await;
    let len = 6 * MIB + 5;
    let data = fx.serve("f.bin", len, 8);
    let proxy = Proxy::start(fx.server.addr(), &["SIZE"], Some(len)).await;
    let out = fx.out("f.bin");
    let o = run(
        &[
            "--plain",
            "-n",
            "4",
            "-o",
            out.to_str().unwrap(),
            &proxy.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(stderr(&o).contains("announced"), "{}", stderr(&o));
    assert!(fx.server.stats().retrs > 1, "still segmented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_size_at_all_streams_on_one_connection() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 3 * MIB + 1, 10);
    let proxy = Proxy::start(fx.server.addr(), &["SIZE"], None).await;
    let out = fx.out("f.bin");
    let o = run(
        &[
            "--plain",
            "-n",
            "4",
            "-o",
            out.to_str().unwrap(),
            &proxy.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(
        stderr(&o).contains("streaming on one connection"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fx.server.stats().retrs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epsv_refused_falls_back_to_pasv() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 4 * MIB, 12);
    let proxy = Proxy::start(fx.server.addr(), &["EPSV"], None).await;
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "4",
            "-o",
            out.to_str().unwrap(),
            &proxy.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasv_address_from_the_server_is_ignored() {
    // EPSV refused, and every PASV reply names 127.0.0.2, where nothing listens: the data
    // connections must go to the control connection's peer instead.
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 3 * MIB, 13);
    let proxy = Proxy::start_with(fx.server.addr(), &["EPSV"], None, Some("127,0,0,2")).await;
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "3",
            "-o",
            out.to_str().unwrap(),
            &proxy.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_of_three_with_eight_asked_completes() {
    let fx = Fixture::new(|c| {
        c.with_max_connections(3).with_faults(Faults {
            rate_per_transfer: Some(8 * MIB),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 24 * MIB, 14);
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "8",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let stats = fx.server.stats();
    assert!(stats.max_live_connections <= 3, "{stats:?}");
    assert!(
        stats.connections_refused >= 1,
        "the limit was hit: {stats:?}"
    );
    assert!(
        stats.connections_refused <= 20,
        "no storm of refused logins: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_come_back_when_the_server_frees_up() {
    // The server allows 2 connections at first, then 6: the connections it refused wait
    // (--busy-retry 1) and rejoin, so more than 2 end up working on the download.
    let fx = Fixture::new(|c| {
        c.with_max_connections(2).with_faults(Faults {
            rate_per_transfer: Some(2 * MIB),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 24 * MIB, 15);
    let out = fx.out("f.bin");
    let child = ftpseg()
        .args([
            "-q",
            "-n",
            "6",
            "--busy-retry",
            "1",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ])
        .current_dir(&fx.local)
        .spawn()
        .unwrap();
    wait_for_durable(&out, 2 * MIB, std::time::Duration::from_secs(60)).await;
    assert!(
        fx.server.stats().connections_refused >= 1,
        "the limit was hit"
    );
    fx.server.set_max_connections(Some(6));
    let o = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_ok_and_equal(&o, &out, &data);
    let stats = fx.server.stats();
    assert!(
        stats.max_live_connections > 2,
        "refused connections came back once the server allowed more: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_taken_over_long_before_the_stall_timeout() {
    // The first transfer stalls after 1 MB and never sends again. With --stall-timeout 60,
    // waiting for it would take over a minute; a free connection takes its range over after
    // --straggler-timeout (3 s by default) instead.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(8 * MIB),
            stall_after: Some(1_000_000),
            faulty_transfers: Some(1),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 16 * MIB, 16);
    let out = fx.out("f.bin");
    let started = std::time::Instant::now();
    let o = run(
        &[
            "-q",
            "-n",
            "4",
            "--stall-timeout",
            "60",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "the stalled range waited for the stall timeout: {took:?}"
    );
}
