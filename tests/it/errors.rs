//! Every user-facing failure: one clear line on stderr and its documented exit code, with
//! nothing lost.

use crate::common::*;

fn one_line(o: &std::process::Output) -> String {
    let s = stderr(o);
    assert_eq!(s.trim_end().lines().count(), 1, "one line expected: {s:?}");
    assert!(s.starts_with("ftpseg: error: "), "{s:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_url_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "http://example.org/x",
        "ftp://h/dir/",
        "ftp://h/a%0d%0aDELE%20x",
    ] {
        let o = run(&[url], dir.path()).await;
        assert_eq!(code(&o), 3, "{url}: {}", stderr(&o));
        one_line(&o);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_and_refused_connection_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &["--connect-timeout", "5", "ftp://no-such-host.invalid/x"],
        dir.path(),
    )
    .await;
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(one_line(&o).contains("no-such-host.invalid"));

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = run(&[&format!("ftp://127.0.0.1:{port}/x")], dir.path()).await;
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(one_line(&o).contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refused_exits_5_without_the_password() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 10, 1);
    let url = fx.url("f.bin").replace("ftp://", "ftp://alice:wrong-pw@");
    let o = run(&[&url], &fx.local).await;
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let line = one_line(&o);
    assert!(
        line.contains("alice") && !line.contains("wrong-pw"),
        "{line}"
    );
    let out = fx.out("f.bin");
    let manifest = ftpseg::internals::manifest::Manifest::path_for(&out);
    let part = ftpseg::part_path(&out);
    for p in [&out, &manifest, &part] {
        assert!(!p.exists(), "{} written after a refused login", p.display());
    }
    // The right password, given through the environment, works: the file is saved whole,
    // quietly, and the password shows nowhere.
    let url = fx.url("f.bin").replace("ftp://", "ftp://alice@");
    let child = ftpseg()
        .env("FTPSEG_PASSWORD", "s3cret")
        .args(["-q", &url])
        .current_dir(&fx.local)
        .spawn()
        .unwrap();
    let o = child.wait_with_output().await.unwrap();
    assert_ok_and_equal(&o, &out, &data);
    assert_eq!(stderr(&o), "", "-q printed something");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_remote_file_exits_6() {
    let fx = Fixture::new(|c| c).await;
    let o = run(&[&fx.url("nope.bin")], &fx.local).await;
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(one_line(&o).contains("nope.bin"));
    assert!(!fx.out("nope.bin").exists());
    assert!(!fx.out("nope.bin.ftpseg").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusing_service_exits_7() {
    let fx = Fixture::new(|c| c.with_max_connections(0)).await;
    fx.serve("f.bin", 10, 1);
    let o = run(&["--max-tries", "2", &fx.url("f.bin")], &fx.local).await;
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    assert!(one_line(&o).contains("421"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_space_exits_8_before_writing() {
    let fx = Fixture::new(|c| c).await;
    // A sparse 64 TiB file on the server: no local disk here can hold it.
    let f = std::fs::File::create(fx.served.join("huge.iso")).unwrap();
    if f.set_len(1 << 46).is_err() {
        f.set_len(1 << 43).unwrap();
    }
    drop(f);
    let o = run(&[&fx.url("huge.iso")], &fx.local).await;
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    let line = one_line(&o);
    assert!(line.contains("need ") && line.contains("have "), "{line}");
    let part = ftpseg::part_path(&fx.out("huge.iso"));
    let blocks = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert_eq!(blocks, 0, "nothing was allocated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_output_exits_9_unless_force() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 1000, 1);
    let out = fx.out("f.bin");
    std::fs::write(&out, b"precious").unwrap();
    let o = run(&[&fx.url("f.bin")], &fx.local).await;
    assert_eq!(code(&o), 9, "{}", stderr(&o));
    assert!(one_line(&o).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let o = run(&["-q", "--force", &fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &out, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["-n", "0", "ftp://h/x"], dir.path()).await;
    assert_eq!(code(&o), 2);
    let o = run(&[], dir.path()).await;
    assert_eq!(code(&o), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_netrc_file() {
    let fx = Fixture::new(|c| c.with_anonymous(false)).await;
    let data = fx.serve("f.bin", 1000, 1);
    let netrc = fx.dir.path().join("netrc");
    std::fs::write(
        &netrc,
        "machine 127.0.0.1\n  login alice\n  password \"s3cret\"\n",
    )
    .unwrap();
    let out = fx.out("f.bin");
    let o = run(
        &[
            "-q",
            "--netrc-file",
            netrc.to_str().unwrap(),
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &data);

    // A wrong password from netrc: exit 5, and the password is not shown.
    std::fs::write(
        &netrc,
        "machine 127.0.0.1 login alice password Wr0ng-Marker",
    )
    .unwrap();
    let o = run(
        &[
            "--netrc-file",
            netrc.to_str().unwrap(),
            "--force",
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(!one_line(&o).contains("Wr0ng-Marker"));

    // A malformed netrc: exit 3, naming the file and line, not the password.
    std::fs::write(
        &netrc,
        "machine 127.0.0.1 login alice password two Halves-Marker",
    )
    .unwrap();
    let o = run(
        &["--netrc-file", netrc.to_str().unwrap(), &fx.url("f.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let line = one_line(&o);
    assert!(
        line.contains("line 1") && !line.contains("Halves-Marker"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_without_password_off_a_terminal_says_where_to_put_it() {
    let fx = Fixture::new(|c| c).await;
    let url = fx.url("f.bin").replace("ftp://", "ftp://alice@");
    let o = run(&[&url], &fx.local).await;
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let line = one_line(&o);
    assert!(
        line.contains("FTPSEG_PASSWORD") && line.contains("netrc"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_pasv_address_opts_in_to_the_server_named_address() {
    // The proxy names 127.0.0.2 (where nothing listens) in PASV replies: by default ftpseg
    // ignores it (the `download` tests); with --use-pasv-address it follows it and fails.
    let fx = Fixture::new(|c| c).await;
    fx.serve("f.bin", 1000, 1);
    let proxy = Proxy::start_with(fx.server.addr(), &["EPSV"], None, Some("127,0,0,2")).await;
    let o = run(
        &[
            "--use-pasv-address",
            "--max-tries",
            "1",
            &proxy.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    // EPSV's 502 is the reply reported (with the PASV connection that failed): the server
    // refused what was asked of it, exit 12 (README "Exit codes").
    assert_eq!(code(&o), 12, "{}", stderr(&o));
    assert!(one_line(&o).contains("refused"), "{}", stderr(&o));
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(path.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_before_writing_on_a_real_small_filesystem() {
    let fx = Fixture::new(|c| c).await;
    let big = fx.serve("big.bin", 16 * MIB, 71);
    let small = fx.serve("small.bin", 3 * MIB, 72);
    let mnt = fx.dir.path().join("tmpfs");
    let _tmpfs = match Tmpfs::mount(&mnt, "8m") {
        Ok(t) => t,
        Err(e) if std::env::var_os("CI").is_none() && !rustix::process::geteuid().is_root() => {
            eprintln!("skipping: mounting a tmpfs needs root here ({e}); CI runs it as root");
            return;
        }
        Err(e) => panic!("cannot mount a tmpfs for the test: {e}"),
    };
    let out = mnt.join("big.bin");
    let o = run(
        &["-o", out.to_str().unwrap(), &fx.url("big.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    let line = one_line(&o);
    assert!(line.contains("need 16.00 MiB, have "), "{line}");
    let part = ftpseg::part_path(&out);
    assert_eq!(
        std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0),
        0,
        "nothing was written"
    );
    drop(big);
    // What fits, downloads.
    let out = mnt.join("small.bin");
    let o = run(
        &["-q", "-o", out.to_str().unwrap(), &fx.url("small.bin")],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &small);
}
