use std::net::{IpAddr, Ipv4Addr};

use tokio::net::TcpStream;

use super::*;

#[test]
fn pattern_is_deterministic_and_offset_consistent() {
    let dir = std::env::temp_dir().join(format!("ftpseg-pattern-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.bin");
    let b = dir.join("b.bin");
    let c = dir.join("c.bin");
    let len = 3 * 1024 * 1024 + 13;
    write_pattern_file(&a, len, 42).unwrap();
    write_pattern_file(&b, len, 42).unwrap();
    write_pattern_file(&c, len, 43).unwrap();
    let a = std::fs::read(&a).unwrap();
    let b = std::fs::read(&b).unwrap();
    let c = std::fs::read(&c).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(a.len() as u64, len);
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "different seeds, different bytes");
    // Neighbouring seeds give unrelated streams, not shifted ones.
    let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
    assert!(
        same < a.len() / 100,
        "{same} equal bytes between seeds 42 and 43"
    );
    // Any range can be regenerated alone, at any alignment.
    for (off, n) in [
        (0u64, 1usize),
        (1, 7),
        (5, 64),
        (8, 8),
        (1_000_003, 70_001),
        (len - 3, 3),
    ] {
        assert_eq!(
            pattern_bytes(42, off, n as u64),
            a[off as usize..off as usize + n],
            "range {off}+{n}"
        );
    }
    // Shifting by one byte changes the data: offset errors are visible.
    assert_ne!(pattern_bytes(42, 1, 4096), pattern_bytes(42, 0, 4096));
    // Not a trivially repeating stream.
    assert_ne!(a[..4096], a[4096..8192]);
}

#[test]
fn empty_pattern_file() {
    let path = std::env::temp_dir().join(format!("ftpseg-pattern-empty-{}", std::process::id()));
    write_pattern_file(&path, 0, 1).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn url_encoding() {
    assert_eq!(encode_path("dir/a b%#?.bin"), "dir/a%20b%25%23%3F.bin");
    assert_eq!(encode_path("é"), "%C3%A9");
    assert_eq!(encode_path("plain-file_1.txt"), "plain-file_1.txt");
}

#[test]
fn config_debug_hides_passwords() {
    let cfg = ServerConfig::new("/tmp").with_user("alice", "hunter2");
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_url_and_shutdown() {
    let dir = std::env::temp_dir().join(format!("ftpseg-ts-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = TestServer::start(ServerConfig::new(&dir)).await.unwrap();
    let addr = server.addr();
    assert!(addr.ip().is_loopback());
    assert_eq!(
        server.url("x/y.bin"),
        format!("ftp://127.0.0.1:{}/x/y.bin", addr.port())
    );
    assert_eq!(
        server.url("/y.bin"),
        format!("ftp://127.0.0.1:{}/y.bin", addr.port())
    );

    // A raw client gets the greeting.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        buf[..n].starts_with(b"220"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(server.stats().connections_accepted, 1);

    server.shutdown().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let bad = TestServer::start(ServerConfig {
        bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ..ServerConfig::new(std::env::temp_dir())
    })
    .await;
    assert!(bad.is_err(), "non-loopback bind accepted");
    assert!(
        TestServer::start(ServerConfig::new("/nonexistent/ftpseg"))
            .await
            .is_err()
    );
}
