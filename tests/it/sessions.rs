//! Sessions that die between ranges: a control connection the server (or a NAT) dropped while
//! its transfer ran is found dead when reused, and replaced at once without counting a try.

use crate::common::*;
use ftpseg::testserver::Faults;

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_session_found_dead_is_replaced_without_a_try() {
    // One fast and one slow connection: the fast one finishes first and takes half of what the
    // slow one has left, on its session, which the proxy then closes: every reuse fails
    // before any byte. With --max-tries 1, one counted failure would end the download.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            session_rates: vec![16 * MIB, 2 * MIB],
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 12 * MIB, 4);
    let proxy = Proxy::dropping_reused_sessions(fx.server.addr()).await;
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-n",
            "2",
            "--max-tries",
            "1",
            "-o",
            out.to_str().unwrap(),
            &proxy.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let st = fx.server.stats();
    assert!(
        st.connections_accepted >= 3,
        "no session was reused, so none was found dead: {st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_unknown_size_broken_midway_goes_on_within_the_run() {
    // No SIZE (the proxy refuses it, announcing none): one stream. Its first RETR stops sending
    // after 1 MiB; after --stall-timeout the stream goes on with a new session and REST from
    // the durable offset, in the same run.
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            stall_after: Some(MIB),
            faulty_transfers: Some(1),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 3 * MIB + 1, 11);
    let proxy = Proxy::start(fx.server.addr(), &["SIZE"], None).await;
    let out = fx.out("f.bin");
    let o = run(
        &[
            "--stall-timeout",
            "1",
            "--max-tries",
            "2",
            "-o",
            out.to_str().unwrap(),
            &proxy.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    let st = fx.server.stats();
    assert_eq!(
        st.retrs, 2,
        "one stream, then one going on from its offset: {st:?}"
    );
    // From 0, the second would send the whole file again: 1 MiB more.
    assert!(
        st.bytes_sent <= data.len() as u64 + (256 << 10),
        "the second RETR did not start from the offset: {st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_dropped_while_its_spliced_bytes_wait_for_the_rate_limit_loses_none() {
    // Found by the fault campaign (seed 90417, runs 699, 857, 917): with --io splice and
    // --limit-rate, bytes spliced into a connection's pipe waited for the limiter before they
    // were written; a take-over dropping the attempt then left them in the pipe, and the next
    // attempt wrote them at its own offset. A freeze makes every range look stalled at once.
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 5 * MIB + 17, 12);
    for round in 0..4 {
        let out = fx.out(&format!("f{round}.bin"));
        let mut cmd = ftpseg();
        cmd.args([
            "-q",
            "-n",
            "8",
            "--io",
            "splice",
            "--limit-rate",
            "3M",
            "--straggler-timeout",
            "2",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ])
        .current_dir(&fx.local);
        let child = cmd.spawn().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(480)).await;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::STOP);
        tokio::time::sleep(std::time::Duration::from_millis(2350)).await;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
        let o = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .expect("no end within 120 s")
        .unwrap();
        assert_ok_and_equal(&o, &out, &data);
    }
}
