use super::*;
use std::io::Cursor;
use tokio::io::AsyncReadExt;

fn reader(
    data: Vec<u8>,
    plan: TransferFaults,
    from_zero: bool,
) -> (FaultyReader, Arc<Shared>, Arc<ConnState>) {
    let shared = Arc::new(Shared::new(Default::default()));
    let conn = Arc::new(ConnState::default());
    let r = FaultyReader::new(
        Box::new(Cursor::new(data)),
        plan,
        from_zero,
        shared.clone(),
        conn.clone(),
    );
    (r, shared, conn)
}

#[test]
fn session_rates_cycle_by_connection_number() {
    assert_eq!(session_rate(&[], 0), None);
    assert_eq!(session_rate(&[], 7), None);
    let rates = [10, 20, 30];
    let got: Vec<_> = (0..7).map(|k| session_rate(&rates, k)).collect();
    let want = [10, 20, 30, 10, 20, 30, 10].map(Some);
    assert_eq!(got, want);
    assert_eq!(session_rate(&rates, u64::MAX), Some(10)); // u64::MAX % 3 == 0
}

#[test]
fn throttle_has_no_initial_burst_and_keeps_the_rate() {
    let mut t = Throttle::new(1_000_000);
    let start = Instant::now();
    match t.permit(start, 0, 8192) {
        Permit::WaitUntil(at) => {
            let wait = at - start;
            assert!(
                wait > Duration::from_millis(5) && wait <= Duration::from_millis(25),
                "{wait:?}"
            );
        }
        p => panic!("unexpected {p:?}"),
    }
    // After one second exactly one second's worth is allowed (capped by want).
    let later = start + Duration::from_secs(1);
    assert_eq!(t.permit(later, 999_000, 8192), Permit::Bytes(1000));
    // Fell behind by a lot: credit capped to the burst (100 ms worth).
    let much_later = start + Duration::from_secs(10);
    assert_eq!(
        t.permit(much_later, 1_000_000, u64::MAX),
        Permit::Bytes(100_000)
    );
    assert!(matches!(
        t.permit(much_later, 1_100_000, 10),
        Permit::WaitUntil(_)
    ));
}

#[tokio::test]
async fn counts_and_passes_data_through() {
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let (mut r, shared, _conn) = reader(data.clone(), TransferFaults::default(), true);
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, data);
    assert_eq!(shared.counters.bytes_sent.load(Ordering::Relaxed), 100_000);
    assert_eq!(
        shared.counters.bytes_sent_from_zero.load(Ordering::Relaxed),
        100_000
    );
}

#[tokio::test]
async fn error_after_gives_exact_prefix_then_error() {
    let data = vec![7u8; 50_000];
    let plan = TransferFaults {
        error_after: Some(12_345),
        ..Default::default()
    };
    let (mut r, shared, _conn) = reader(data, plan, false);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let err = loop {
        match r.read(&mut buf).await {
            Ok(0) => panic!("unexpected EOF"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(out.len(), 12_345);
    assert!(err.to_string().contains("injected"));
    assert_eq!(shared.counters.bytes_sent.load(Ordering::Relaxed), 12_345);
    assert_eq!(
        shared.counters.bytes_sent_from_zero.load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn stall_after_stalls_until_the_connection_closes() {
    let data = vec![1u8; 10_000];
    let plan = TransferFaults {
        stall_after: Some(3000),
        ..Default::default()
    };
    let (mut r, _shared, conn) = reader(data, plan, true);
    let mut out = vec![0u8; 3000];
    r.read_exact(&mut out).await.unwrap();
    let mut one = [0u8; 1];
    let timed = tokio::time::timeout(Duration::from_millis(300), r.read(&mut one)).await;
    assert!(timed.is_err(), "stalled reader returned {timed:?}");
    conn.closed.store(true, Ordering::Relaxed);
    let res = tokio::time::timeout(Duration::from_secs(2), r.read(&mut one))
        .await
        .expect("stall did not end");
    assert!(res.is_err());
}
