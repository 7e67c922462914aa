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
