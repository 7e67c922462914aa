//! FTPS against the in-process libunftp server: explicit (`ftpes://`, `--ftps`) and implicit
//! (`ftps://`) TLS, certificate verification (`--ca-file`, system roots, `--insecure`), refusal
//! without fallback, session reuse on every data connection, kill and resume, secrets. The
//! byte-exact download at 1 and 8 connections and the kill-and-resume tests run once per store
//! (`--io mmap` receives the TLS plaintext into the map; `splice` falls back to a buffer).
//!
//! Certificates are made at test time with rcgen: a CA and a leaf for `localhost` and
//! `127.0.0.1` signed by it, in PEM, in the test's temporary folder.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use ftpseg::FtpUrl;
use ftpseg::internals::manifest::Manifest;
use ftpseg::internals::{Session, TlsClient};
use ftpseg::testserver::{Faults, TlsFiles, pattern_bytes};
use ftpseg::{Credentials, Verify};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A test PKI written to a folder: `ca.pem`, and `leaf.pem` + `leaf.key` for the server.
struct Pki {
    ca: PathBuf,
    leaf: PathBuf,
    key: PathBuf,
}

/// A CA, and a leaf signed by it valid for `names` (DNS names or IP addresses).
fn make_pki(dir: &Path, names: &[&str]) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("ftpseg test CA {}", dir.display()),
    );
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    for name in names {
        leaf.subject_alt_names.push(match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into().unwrap()),
        });
    }
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let pki = Pki {
        ca: dir.join("ca.pem"),
        leaf: dir.join("leaf.pem"),
        key: dir.join("leaf.key"),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.leaf, leaf_cert.pem()).unwrap();
    std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
    pki
}

/// The usual localhost PKI in a folder of its own.
fn pki() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), &["localhost", "127.0.0.1"]);
    (dir, pki)
}

/// A fixture serving explicit (or, with `implicit`, implicit) FTPS with `pki`'s leaf.
async fn tls_fixture(pki: &Pki, adjust: impl FnOnce(TlsFiles) -> TlsFiles) -> Fixture {
    let files = adjust(TlsFiles::new(&pki.leaf, &pki.key));
    Fixture::new(move |c| c.with_tls(files)).await
}

/// `ftp://127.0.0.1:PORT/name` for a server whatever its scheme.
fn plain_url(fx: &Fixture, name: &str) -> String {
    format!("ftp://{}/{name}", fx.server.addr())
}

/// Runs the binary with extra environment variables.
async fn run_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = ftpseg();
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("ftpseg did not finish within 120 s")
        .unwrap()
}

/// The one error line of a failed run.
fn error_line(o: &std::process::Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("ftpseg: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    lines[0].to_owned()
}

/// Every data connection resumed the TLS session of its own control connection: the server
/// keeps a session cache per control connection, and counts a hit as a resumption.
///
/// Control connections are counted by their logins, not by `connections_accepted`: other
/// programs on this machine's 127.0.0.1 (other test suites) sometimes connect to a port that
/// one of these servers happens to have, and leave without a word (measured: such strays never
/// occur when the servers bind 127.0.0.5).
fn assert_every_data_connection_resumed(fx: &Fixture) {
    let s = fx.server.stats();
    assert!(s.retrs > 0, "{s:?}");
    // A login started early and aborted unneeded (`EarlyLogins`) may have done its handshake
    // before its PASS: between the logins and the connections accepted.
    let control = s.tls_handshakes - s.retrs.min(s.tls_handshakes);
    assert!(
        (s.login_attempts..=s.connections_accepted).contains(&control),
        "one handshake per control and per data connection: {s:?}"
    );
    assert_eq!(
        s.tls_resumed, s.retrs,
        "every data connection resumed its control connection's session: {s:?}"
    );
}

async fn explicit_ftps_with_ca_file_is_byte_exact_on_1_and_8_connections(store: &'static str) {
    let (_d, pki) = pki();
    let fx = tls_fixture(&pki, |t| t).await;
    let size = 12 * MIB + 12_345;
    let data = fx.serve("f.bin", size, 31);
    let ca = pki.ca.to_str().unwrap();
    for (n, url) in [
        ("1", fx.url("f.bin")),
        ("8", fx.url("f.bin")),
        ("8", plain_url(&fx, "f.bin")),
    ] {
        assert!(url.starts_with("ftpes://") || url.starts_with("ftp://"));
        let before = fx.server.stats();
        let out = fx.out(&format!("f-{n}-{}.bin", url.len()));
        let mut args = vec![
            "-q",
            "--io",
            store,
            "-n",
            n,
            "--ca-file",
            ca,
            "-o",
            out.to_str().unwrap(),
        ];
        if url.starts_with("ftp://") {
            args.push("--ftps");
        }
        args.push(&url);
        let o = run(&args, &fx.local).await;
        assert_ok_and_equal(&o, &out, &data);
        let after = fx.server.stats();
        let retrs = after.retrs - before.retrs;
        if n == "8" {
            assert!(retrs >= 8, "{retrs} RETRs for 8 connections: {after:?}");
            assert!(after.connections_accepted - before.connections_accepted >= 8);
        } else {
            assert_eq!(retrs, 1, "{after:?}");
        }
    }
    assert_every_data_connection_resumed(&fx);
}
per_store!(explicit_ftps_with_ca_file_is_byte_exact_on_1_and_8_connections);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_server_resumes_by_session_id() {
    let (_d, pki) = pki();
    let fx = tls_fixture(&pki, |t| t.tls12_only()).await;
    let data = fx.serve("f.bin", 6 * MIB + 1, 32);
    let out = fx.out("f.bin");
    let ca = pki.ca.to_str().unwrap();
    let url = fx.url("f.bin");
    let o = run(
        &[
            "-q",
            "-n",
            "8",
            "--ca-file",
            ca,
            "-o",
            out.to_str().unwrap(),
            &url,
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(fx.server.stats().retrs >= 6);
    assert_every_data_connection_resumed(&fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_ftps_is_byte_exact_on_8_connections() {
    let (_d, pki) = pki();
    let fx = tls_fixture(&pki, |t| t.implicit()).await;
    let data = fx.serve("f.bin", 10 * MIB + 7, 33);
    let out = fx.out("f.bin");
    let url = fx.url("f.bin");
    assert!(url.starts_with("ftps://"), "{url}");
    let ca = pki.ca.to_str().unwrap();
    let o = run(
        &[
            "-q",
            "-n",
            "8",
            "--ca-file",
            ca,
            "-o",
            out.to_str().unwrap(),
            &url,
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(fx.server.stats().retrs >= 8);
    assert_every_data_connection_resumed(&fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_fails_with_exit_13_before_login() {
    let (dir, pki) = pki();
    // The system roots, made hermetic: a file with another CA only.
    let other = make_pki(&dir.path().join("other"), &["localhost"]);
    let fx = tls_fixture(&pki, |t| t).await;
    fx.serve("f.bin", MIB, 34);
    let out = fx.out("f.bin");
    let url = fx.url("f.bin").replace("ftpes://", "ftpes://alice:s3cret@");
    let no_dir = dir.path().join("none");
    let env = [
        ("SSL_CERT_FILE", other.ca.to_str().unwrap()),
        ("SSL_CERT_DIR", no_dir.to_str().unwrap()),
    ];
    let o = run_env(&["-q", "-o", out.to_str().unwrap(), &url], &fx.local, &env).await;
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    let line = error_line(&o);
    assert!(line.contains("not trusted"), "{line}");
    assert!(line.contains("--ca-file"), "{line}");
    assert!(line.contains("--insecure"), "{line}");
    assert!(!out.exists());
    assert!(!ftpseg::part_path(&out).exists());
    assert_eq!(fx.server.stats().login_attempts, 0, "password never sent");
    assert_eq!(fx.server.stats().retrs, 0);

    // A CA file that does not sign this server's certificate: the same.
    let o = run(
        &[
            "-q",
            "--ca-file",
            other.ca.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            &url,
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    assert!(error_line(&o).contains("unknown issuer"), "{}", stderr(&o));

    // No roots at all: a clear message, exit 13.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let env = [
        ("SSL_CERT_FILE", empty.to_str().unwrap()),
        ("SSL_CERT_DIR", no_dir.to_str().unwrap()),
    ];
    let o = run_env(&["-q", "-o", out.to_str().unwrap(), &url], &fx.local, &env).await;
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    let line = error_line(&o);
    assert!(line.contains("no trusted root certificates"), "{line}");
    assert!(line.contains("--ca-file"), "{line}");
    assert_eq!(fx.server.stats().login_attempts, 0, "password never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), &["files.example"]);
    let fx = tls_fixture(&pki, |t| t).await;
    fx.serve("f.bin", MIB, 35);
    let out = fx.out("f.bin");
    let ca = pki.ca.to_str().unwrap();
    let o = run(
        &[
            "-q",
            "--ca-file",
            ca,
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    let line = error_line(&o);
    assert!(line.contains("not valid for name"), "{line}");
    assert!(line.contains("127.0.0.1"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skips_verification_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // Not even for this host: --insecure accepts it anyway.
    let pki = make_pki(dir.path(), &["files.example"]);
    let fx = tls_fixture(&pki, |t| t).await;
    let data = fx.serve("f.bin", 4 * MIB + 5, 36);
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-n",
            "4",
            "--plain",
            "--insecure",
            "-o",
            out.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(
        stderr(&o).contains("certificate verification is off (--insecure)"),
        "{}",
        stderr(&o)
    );
    assert_every_data_connection_resumed(&fx);
    // Also with -q: the warning is not progress output.
    let out2 = fx.out("g.bin");
    let o = run(
        &[
            "-q",
            "--insecure",
            "-o",
            out2.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out2, &data);
    assert!(stderr(&o).contains("--insecure"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_tls_is_refused_without_sending_the_password() {
    // A plain server (libunftp answers AUTH TLS with 502).
    let fx = Fixture::new(|c| c.with_user("bob", "PW-MARKER-17")).await;
    fx.serve("f.bin", MIB, 37);
    let out = fx.out("f.bin");
    let url = format!("ftp://bob:PW-MARKER-17@{}/f.bin", fx.server.addr());
    let o = run(&["--ftps", "-o", out.to_str().unwrap(), &url], &fx.local).await;
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    let line = error_line(&o);
    assert!(line.contains("refused AUTH TLS"), "{line}");
    assert!(
        line.contains("drop --ftps/ftpes:// to connect without it"),
        "{line}"
    );
    let s = fx.server.stats();
    assert_eq!(s.login_attempts, 0, "no USER/PASS after a refused AUTH TLS");
    assert_eq!(s.retrs, 0);
    assert_eq!(s.bytes_sent, 0);
    assert!(!out.exists());
    assert!(!Manifest::path_for(&out).exists());
    for text in [stderr(&o), String::from_utf8_lossy(&o.stdout).into_owned()] {
        assert!(!text.contains("PW-MARKER-17"), "{text}");
    }

    // ftpes:// says the same.
    let url = format!("ftpes://bob:PW-MARKER-17@{}/f.bin", fx.server.addr());
    let o = run(&["-q", "-o", out.to_str().unwrap(), &url], &fx.local).await;
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    // Implicit TLS against a plain server: the handshake fails on the greeting.
    let url = format!("ftps://bob:PW-MARKER-17@{}/f.bin", fx.server.addr());
    let o = run(&["-q", "-o", out.to_str().unwrap(), &url], &fx.local).await;
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    assert!(
        error_line(&o).contains("failed on the control connection"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fx.server.stats().login_attempts, 0);
    assert_eq!(fx.server.stats().retrs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_on_a_plain_url_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--insecure", "ftp://127.0.0.1:9/f.bin"][..],
        &["--ca-file", "ca.pem", "ftp://127.0.0.1:9/f.bin"],
    ] {
        let o = run(args, dir.path()).await;
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(error_line(&o).contains("--ftps"), "{}", stderr(&o));
    }
}

async fn killed_ftps_download_resumes_byte_exact_and_keeps_the_password_secret(
    store: &'static str,
) {
    const MARKER: &str = "Pw-Marker-\u{a7}-4711";
    let (_d, pki) = pki();
    let fx = Fixture::new(|c| {
        c.with_tls(TlsFiles::new(&pki.leaf, &pki.key))
            .with_user("carol", MARKER)
            .with_faults(Faults {
                rate_per_transfer: Some(MIB),
                ..Faults::default()
            })
    })
    .await;
    let data = fx.serve("f.bin", 12 * MIB, 38);
    let out = fx.out("f.bin");
    let url = format!(
        "ftpes://carol:Pw-Marker-%C2%A7-4711@{}/f.bin",
        fx.server.addr()
    );
    let ca = pki.ca.to_str().unwrap();
    let args = [
        "--plain",
        "--io",
        store,
        "-n",
        "4",
        "--ca-file",
        ca,
        "-o",
        out.to_str().unwrap(),
        url.as_str(),
    ];
    let child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
    wait_for_durable(&out, 3 * MIB, Duration::from_secs(60)).await;
    let mut child = child;
    child.start_kill().unwrap();
    let killed = child.wait_with_output().await.unwrap();
    assert!(!killed.status.success());
    let manifest_text = std::fs::read_to_string(Manifest::path_for(&out)).unwrap();
    let m = assert_claims_hold(&out, &data);
    assert_eq!(m.url, format!("ftpes://carol@{}/f.bin", fx.server.addr()));
    let done = m.bytes_done();
    assert!(done >= 3 * MIB);

    // The same command resumes.
    let sent_before = fx.server.stats().bytes_sent;
    let o = run(&args, &fx.local).await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    let sent = fx.server.stats().bytes_sent - sent_before;
    assert!(
        sent <= 12 * MIB - done + 2 * MIB,
        "resumed rather than restarted: {sent} bytes sent after {done} were on disk"
    );
    for text in [
        manifest_text,
        stderr(&killed),
        String::from_utf8_lossy(&killed.stdout).into_owned(),
        stderr(&o),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    ] {
        assert!(!text.contains("Pw-Marker"), "{text}");
        assert!(!text.contains("%C2%A7"), "{text}");
    }
    assert_every_data_connection_resumed(&fx);
}
per_store!(killed_ftps_download_resumes_byte_exact_and_keeps_the_password_secret);

async fn plain_download_resumes_over_tls_with_ftps_flag(store: &'static str) {
    // libunftp with FTPS configured also serves plain FTP: start in clear, resume with --ftps.
    let (_d, pki) = pki();
    let fx = Fixture::new(|c| {
        c.with_tls(TlsFiles::new(&pki.leaf, &pki.key))
            .with_faults(Faults {
                rate_per_transfer: Some(MIB),
                ..Faults::default()
            })
    })
    .await;
    let data = fx.serve("f.bin", 8 * MIB, 39);
    let out = fx.out("f.bin");
    let url = plain_url(&fx, "f.bin");
    let mut child = ftpseg()
        .args([
            "-q",
            "--io",
            store,
            "-n",
            "2",
            "-o",
            out.to_str().unwrap(),
            &url,
        ])
        .current_dir(&fx.local)
        .spawn()
        .unwrap();
    wait_for_durable(&out, 2 * MIB, Duration::from_secs(60)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_claims_hold(&out, &data);
    assert_eq!(fx.server.stats().tls_handshakes, 0);
    fx.server.set_faults(Faults::default());
    let ca = pki.ca.to_str().unwrap();
    let o = run(
        &[
            "--plain",
            "--io",
            store,
            "--ftps",
            "--ca-file",
            ca,
            "-o",
            out.to_str().unwrap(),
            &url,
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    assert!(fx.server.stats().tls_handshakes > 0);
}
per_store!(plain_download_resumes_over_tls_with_ftps_flag);

/// The session layer itself: TLS bytes are the file's bytes, every data connection of a session
/// resumes that session (seen by rustls on the client side), and TLS data sockets get no
/// receive low-water mark while plain ones do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_their_own_tls_session_and_read_plaintext() {
    let (_d, pki) = pki();
    let fx = tls_fixture(&pki, |t| t).await;
    let size = 3 * MIB;
    fx.serve("f.bin", size, 40);
    let url = FtpUrl::parse(&fx.url("f.bin")).unwrap();
    let tls = std::sync::Arc::new(TlsClient::new(&url, &Verify::CaFile(pki.ca.clone())).unwrap());
    let addrs = [fx.server.addr()];
    let creds = Credentials::anonymous();
    let timeouts = ftpseg::Timeouts::default();
    let mut a = Session::connect_with(&addrs, &creds, timeouts, Some(&tls))
        .await
        .unwrap();
    let mut b = Session::connect_with(&addrs, &creds, timeouts, Some(&tls))
        .await
        .unwrap();
    assert!(a.is_tls());
    assert_eq!(a.tls_handshakes(), Some((1, 0)), "control: full handshake");
    a.probe().await.unwrap();
    b.probe().await.unwrap();
    // Interleaved transfers on two sessions: each resumes its own session.
    for (k, offset) in [0u64, MIB, 2 * MIB + 17].into_iter().enumerate() {
        for s in [&mut a, &mut b] {
            let mut t = s.retr("f.bin", offset).await.unwrap();
            assert_eq!(
                lowat(&t.stream),
                1,
                "no low-water mark on a TLS data socket"
            );
            let mut buf = vec![0u8; 100_000];
            let mut got = 0;
            while got < buf.len() {
                let n = s.read_data(&mut t.stream, &mut buf[got..]).await.unwrap();
                assert!(n > 0);
                got += n;
            }
            assert_eq!(
                buf,
                pattern_bytes(40, offset, 100_000),
                "plaintext at {offset}"
            );
            s.end_transfer(t.stream, false).await.unwrap();
            let k = k as u64 + 1;
            assert_eq!(
                s.tls_handshakes(),
                Some((1 + k, k)),
                "all data handshakes resumed"
            );
        }
    }
    a.quit().await;
    b.quit().await;

    // A plain session on the same server keeps the low-water mark.
    let mut p = Session::connect(&addrs, &creds, timeouts).await.unwrap();
    p.probe().await.unwrap();
    assert!(!p.is_tls());
    assert_eq!(p.tls_handshakes(), None);
    let t = p.retr("f.bin", 0).await.unwrap();
    assert_eq!(lowat(&t.stream), 128 << 10);
    p.end_transfer(t.stream, false).await.unwrap();
    p.quit().await;
}

/// SO_RCVLOWAT of a data connection's socket.
fn lowat(stream: &ftpseg::internals::DataStream) -> i32 {
    use std::os::fd::AsRawFd;
    let fd = stream.get_ref().get_ref().as_raw_fd();
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requiring_tls_tells_a_plain_client_to_use_ftps() {
    let (_d, pki) = pki();
    let fx = tls_fixture(&pki, |t| t.required()).await;
    let data = fx.serve("f.bin", 3 * MIB, 41);
    let out = fx.out("f.bin");
    let o = run(
        &["-q", "-o", out.to_str().unwrap(), &plain_url(&fx, "f.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let line = error_line(&o);
    assert!(line.contains("TLS connection is required"), "{line}");
    assert!(line.contains("--ftps"), "{line}");
    let ca = pki.ca.to_str().unwrap();
    let o = run(
        &[
            "-q",
            "-n",
            "3",
            "--ftps",
            "--ca-file",
            ca,
            "-o",
            out.to_str().unwrap(),
            &plain_url(&fx, "f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert_every_data_connection_resumed(&fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_literal_is_verified_against_the_certificates_ip_address() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), &["::1"]);
    let files = TlsFiles::new(&pki.leaf, &pki.key);
    let fx = Fixture::new(move |mut c| {
        c.bind = "::1".parse().unwrap();
        c.with_tls(files)
    })
    .await;
    let data = fx.serve("f.bin", 3 * MIB, 42);
    let out = fx.out("f.bin");
    let url = fx.url("f.bin");
    assert!(url.starts_with("ftpes://[::1]:"), "{url}");
    let ca = pki.ca.to_str().unwrap();
    let o = run(
        &[
            "-q",
            "-n",
            "3",
            "--ca-file",
            ca,
            "-o",
            out.to_str().unwrap(),
            &url,
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);
    assert_every_data_connection_resumed(&fx);
}
