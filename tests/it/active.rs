//! Active mode (`--active`): the server opens the data connections (`PORT`, `EPRT` over IPv6).
//!
//! To prove a download really went through active mode, the server is reached through the
//! control proxy of `common` refusing `EPSV` and `PASV`: without `--active` that fails, with it
//! every byte must arrive. libunftp (in-process) has `PORT` but no `EPRT`; the real servers
//! (`scripts/ftp-servers.sh start`: vsftpd, proftpd, pure-ftpd, pyftpdlib) have both, and
//! proftpd also listens on ::1, so `EPRT` is tested there. Segmented downloads (`-n 4`) have
//! several listeners open at once. The real-server tests run once per store (`--io mmap`,
//! `splice`, `pwrite`).

use std::path::PathBuf;

use crate::common::*;

const PASSIVE: &[&str] = &["EPSV", "PASV"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_download_from_libunftp_when_passive_is_refused() {
    let fx = Fixture::new(|c| c.with_active()).await;
    let data = fx.serve("a.bin", 8 * MIB + 13, 5);
    let proxy = Proxy::start(fx.server.addr(), PASSIVE, None).await;
    for n in ["1", "4"] {
        let out = fx.out(&format!("a{n}.bin"));
        let o = run(
            &[
                "-q",
                "--active",
                "-n",
                n,
                "--min-range",
                "256K",
                "-o",
                out.to_str().unwrap(),
                &proxy.url("a.bin"),
            ],
            &fx.local,
        )
        .await;
        assert_ok_and_equal(&o, &out, &data);
    }
    // The same proxy without --active: no way to open a data connection.
    let out = fx.out("passive.bin");
    let o = run(
        &["-q", "-o", out.to_str().unwrap(), &proxy.url("a.bin")],
        &fx.local,
    )
    .await;
    // EPSV and PASV both answered 502: the server refused what was asked of it, exit 12
    // (README "Exit codes").
    assert_eq!(code(&o), 12, "passive mode: {}", stderr(&o));
    assert!(stderr(&o).contains("PASV"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_mode_refused_by_the_server_says_try_without_it() {
    // libunftp's default: PORT answered "502 Active mode not enabled."
    let fx = Fixture::new(|c| c).await;
    fx.serve("a.bin", MIB, 6);
    let out = fx.out("a.bin");
    let o = run(
        &["--active", "-o", out.to_str().unwrap(), &fx.url("a.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 12, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("try without --active"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_mirror_and_upload_on_libunftp() {
    let fx = Fixture::new(|c| c.with_active()).await;
    std::fs::create_dir_all(fx.served.join("d/sub")).unwrap();
    let a = fx.serve("d/a.bin", 3 * MIB + 1, 7);
    let b = fx.serve("d/sub/b.bin", 70_001, 8);
    let proxy = Proxy::start(fx.server.addr(), PASSIVE, None).await;
    // -r lists over active data connections too.
    let o = run(
        &["-q", "--active", "-r", "-d", "m", &proxy.url("d/")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(std::fs::read(fx.local.join("m/d/a.bin")).unwrap() == a);
    assert!(std::fs::read(fx.local.join("m/d/sub/b.bin")).unwrap() == b);

    // put: the upload's data connection is opened by the server as well.
    let up = fx.local.join("up.bin");
    let data = ftpseg::testserver::pattern_bytes(9, 0, 2 * MIB + 5);
    std::fs::write(&up, &data).unwrap();
    let dest = proxy.url("up.bin").replace("ftp://", "ftp://alice:s3cret@");
    let o = run(
        &["put", "-q", "--active", up.to_str().unwrap(), &dest],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(std::fs::read(fx.served.join("up.bin")).unwrap() == data);
}

struct RealServer {
    kind: String,
    variant: String,
    port: u16,
}

fn find<'a>(list: &'a [RealServer], kind: &str, variant: &str) -> &'a RealServer {
    list.iter()
        .find(|s| s.kind == kind && s.variant == variant)
        .unwrap_or_else(|| panic!("no {kind} ({variant}) in servers.json"))
}

fn real_servers() -> (PathBuf, Vec<RealServer>) {
    let v = servers_json();
    let list = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| RealServer {
            kind: s["kind"].as_str().unwrap().into(),
            variant: s["variant"].as_str().unwrap().into(),
            port: s["port"].as_u64().unwrap() as u16,
        })
        .collect();
    (PathBuf::from(v["served"].as_str().unwrap()), list)
}

async fn active_segmented_downloads_from_every_real_server(store: &'static str) {
    let (served, list) = real_servers();
    let data = std::fs::read(served.join("mid.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for s in list.iter().filter(|s| s.variant == "plain") {
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], s.port));
        let proxy = Proxy::start(server, PASSIVE, None).await;
        let out = dir.path().join(format!("{}.bin", s.kind));
        let o = run(
            &[
                "-q",
                "--io",
                store,
                "--active",
                "-n",
                "4",
                "-o",
                out.to_str().unwrap(),
                &proxy.url("mid.bin"),
            ],
            dir.path(),
        )
        .await;
        assert_eq!(code(&o), 0, "{}: {}", s.kind, stderr(&o));
        assert_ok_and_equal(&o, &out, &data);
    }
}
per_store!(active_segmented_downloads_from_every_real_server);

async fn active_over_ipv6_uses_eprt_on_proftpd(store: &'static str) {
    let (served, list) = real_servers();
    let data = std::fs::read(served.join("mid.bin")).unwrap();
    let s = find(&list, "proftpd", "plain");
    // proftpd listens on ::1 as well (scripts/ftp-servers.sh). Our listener is on ::1, so the
    // server must be told with EPRT: PORT cannot name an IPv6 address.
    let server: std::net::SocketAddr = format!("[::1]:{}", s.port).parse().unwrap();
    let proxy = Proxy::start(server, PASSIVE, None).await;
    let url = proxy.url("mid.bin");
    assert!(url.starts_with("ftp://[::1]:"), "{url}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("six.bin");
    let o = run(
        &[
            "-q",
            "--io",
            store,
            "--active",
            "-n",
            "4",
            "-o",
            out.to_str().unwrap(),
            &url,
        ],
        dir.path(),
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
}
per_store!(active_over_ipv6_uses_eprt_on_proftpd);

async fn active_over_tls_on_vsftpd(store: &'static str) {
    // vsftpd with require_ssl_reuse: the accepted data connection still resumes the control
    // connection's TLS session (TLS client on our side, as RFC 4217 wants).
    let (served, list) = real_servers();
    let data = std::fs::read(served.join("mid.bin")).unwrap();
    let s = find(&list, "vsftpd", "tls");
    let dir = tempfile::tempdir().unwrap();
    let ca = served.parent().unwrap().join("pki/ca.pem");
    let out = dir.path().join("tls.bin");
    let o = run(
        &[
            "-q",
            "--io",
            store,
            "--active",
            "-n",
            "4",
            "--ca-file",
            ca.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            &format!("ftpes://127.0.0.1:{}/mid.bin", s.port),
        ],
        dir.path(),
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
}
per_store!(active_over_tls_on_vsftpd);
