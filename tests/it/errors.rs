//! Every user-facing failure: one clear line on stderr and its documented exit code, with
//! nothing lost. The disk-full tests run once per store (`--io mmap`, `splice`, `pwrite`); on a
//! file system that cannot preallocate, `--io mmap` is refused and `auto` does not map.

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
        // --network-wait 0: where no resolver answers, the lookup means "no network" and would
        // otherwise be waited for; either way the message names the host, exit 4.
        &[
            "--connect-timeout",
            "5",
            "--network-wait",
            "0",
            "ftp://no-such-host.invalid/x",
        ],
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
    let o = run(
        &["--max-tries", "2", "--busy-retry", "0.2", &fx.url("f.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    // One wait (its note), then the error.
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("refuses more connections"), "{err}");
    assert!(
        lines[1].starts_with("ftpseg: error: ") && lines[1].contains("421"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_at_the_first_contact_is_waited_for() {
    // As right after a kill: the old sessions still hold the server's only slot for a while.
    let fx = Fixture::new(|c| c.with_max_connections(1)).await;
    let data = fx.serve("f.bin", 2 * MIB, 2);
    let held = tokio::net::TcpStream::connect(fx.server.addr())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        drop(held);
    });
    let o = run(
        &["--busy-retry", "0.5", "--max-tries", "8", &fx.url("f.bin")],
        &fx.local,
    )
    .await;
    release.await.unwrap();
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert!(
        stderr(&o).contains("refuses more connections"),
        "{}",
        stderr(&o)
    );
}

async fn no_space_exits_8_before_writing(store: &'static str) {
    let fx = Fixture::new(|c| c).await;
    // A sparse 64 TiB file on the server: no local disk here can hold it.
    let f = std::fs::File::create(fx.served.join("huge.iso")).unwrap();
    if f.set_len(1 << 46).is_err() {
        f.set_len(1 << 43).unwrap();
    }
    drop(f);
    let o = run(&["--io", store, &fx.url("huge.iso")], &fx.local).await;
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    let line = one_line(&o);
    assert!(line.contains("need ") && line.contains("have "), "{line}");
    let part = ftpseg::part_path(&fx.out("huge.iso"));
    let blocks = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert_eq!(blocks, 0, "nothing was allocated");
}
per_store!(no_space_exits_8_before_writing);

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
    // As a netrc should be: others cannot read it (else a warning line comes first).
    std::fs::set_permissions(&netrc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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

async fn full_disk_fails_before_writing_on_a_real_small_filesystem(store: &'static str) {
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
        &[
            "--io",
            store,
            "-o",
            out.to_str().unwrap(),
            &fx.url("big.bin"),
        ],
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
        &[
            "-q",
            "--io",
            store,
            "-o",
            out.to_str().unwrap(),
            &fx.url("small.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_ok_and_equal(&o, &out, &small);
}
per_store!(full_disk_fails_before_writing_on_a_real_small_filesystem);

/// A small ext2 file system in an image file, loop-mounted for one test and unmounted when
/// dropped (the image goes with the test's folder). Files on ext2 have no extents, and the
/// kernel refuses `fallocate` for them (EOPNOTSUPP): a `.part` there is sparse.
struct Ext2(std::path::PathBuf);

impl Ext2 {
    fn mount(dir: &std::path::Path, bytes: u64) -> Result<Ext2, String> {
        let image = dir.join("ext2.img");
        let mnt = dir.join("ext2");
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| format!("cannot make {}: {e}", image.display()))?;
        let cmd = |name: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let out = std::process::Command::new(name)
                .args(args)
                .output()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "{name} is not installed (e2fsprogs, util-linux; scripts/test.sh \
                         installs them): {e}"
                    ),
                    _ => format!("cannot run {name}: {e}"),
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{name} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        // In /usr/sbin, which a user's PATH may lack.
        let mkfs = ["/usr/sbin/mkfs.ext2", "/sbin/mkfs.ext2"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("mkfs.ext2");
        cmd(mkfs, &["-q".as_ref(), "-F".as_ref(), image.as_ref()])?;
        cmd(
            "mount",
            &["-o".as_ref(), "loop".as_ref(), image.as_ref(), mnt.as_ref()],
        )?;
        Ok(Ext2(mnt))
    }
}

impl Drop for Ext2 {
    fn drop(&mut self) {
        // Unmounting frees the loop device (mount -o loop sets it to clear itself); lazily if
        // something still holds the mount.
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// On a file system that cannot preallocate, a map of the sparse `.part` would turn a full disk
/// into a SIGBUS: an explicit `--io mmap` is refused (exit 8, one line naming the other stores)
/// before anything is fetched and without touching a partial download there, and `auto` (the
/// default) never picks the map: it downloads byte-exact with the sparse warning, as `splice`
/// and `pwrite` do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_file_system_refuses_io_mmap_and_auto_never_maps() {
    use ftpseg::internals::manifest::Manifest;
    use ftpseg::testserver::Faults;
    use std::time::Duration;

    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(MIB),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("s.bin", 8 * MIB + 3, 81);
    let ext2 = match Ext2::mount(fx.dir.path(), 32 * MIB) {
        Ok(m) => m,
        Err(e) if std::env::var_os("CI").is_none() && !rustix::process::geteuid().is_root() => {
            eprintln!("skipping: mounting an ext2 image needs root here ({e}); CI runs it as root");
            return;
        }
        Err(e) => panic!("cannot mount an ext2 image for the test: {e}"),
    };
    let out = ext2.0.join("s.bin");
    let part = ftpseg::part_path(&out);
    let mpath = Manifest::path_for(&out);
    let url = fx.url("s.bin");
    let out_arg = out.to_str().unwrap();
    let refused = |o: &std::process::Output, when: &str| {
        assert_eq!(code(o), 8, "{when}: {}", stderr(o));
        let line = one_line(o);
        for needle in ["--io mmap", "--io splice", "--io pwrite"] {
            assert!(line.contains(needle), "{when}: no {needle:?} in {line}");
        }
        assert!(!out.exists(), "{when}: the output exists");
    };
    let mmap = ["-q", "--io", "mmap", "-o", out_arg, url.as_str()];

    // A fresh download: refused before a byte is fetched; whatever is left claims nothing.
    let o = run(&mmap, &fx.local).await;
    refused(&o, "fresh");
    assert_eq!(
        fx.server.stats().retrs,
        0,
        "nothing fetched for a refused --io mmap"
    );
    if let Some(m) = Manifest::load(&mpath).unwrap() {
        assert_eq!(m.bytes_done(), 0, "a refused --io mmap claims bytes");
    }

    // auto, killed once bytes are durable: the trace shows the store it chose, never the map.
    let auto = ["--plain", "-n", "2", "-o", out_arg, url.as_str()];
    let mut child = ftpseg()
        .env("FTPSEG_TRACE", "1")
        .args(auto)
        .current_dir(&fx.local)
        .spawn()
        .unwrap();
    wait_for_durable(&out, 2 * MIB, Duration::from_secs(60)).await;
    child.start_kill().unwrap();
    let killed = child.wait_with_output().await.unwrap();
    let text = stderr(&killed);
    assert!(
        text.contains(".part ready, "),
        "no store in the trace: {text}"
    );
    assert!(
        !text.contains("mmap store"),
        "auto mapped a sparse file: {text}"
    );
    assert!(text.contains("sparse"), "no sparse warning: {text}");
    let done = assert_claims_hold(&out, &data).bytes_done();
    let part_before = std::fs::read(&part).unwrap();

    // --io mmap on that partial download: refused, the .part and its claims as they were.
    let o = run(&mmap, &fx.local).await;
    refused(&o, "resumed");
    assert!(
        std::fs::read(&part).unwrap() == part_before,
        ".part changed"
    );
    assert_eq!(assert_claims_hold(&out, &data).bytes_done(), done);

    // auto resumes it to the end.
    fx.server.set_faults(Faults::default());
    let child = ftpseg()
        .env("FTPSEG_TRACE", "1")
        .args(auto)
        .current_dir(&fx.local)
        .spawn()
        .unwrap();
    let o = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("ftpseg did not finish within 120 s")
        .unwrap();
    assert_ok_and_equal(&o, &out, &data);
    let text = stderr(&o);
    assert!(text.contains("resuming"), "{text}");
    assert!(text.contains("sparse"), "no sparse warning: {text}");
    assert!(
        !text.contains("mmap store"),
        "auto mapped a sparse file: {text}"
    );

    // The explicit stores that do not map write there too.
    for store in ["splice", "pwrite"] {
        std::fs::remove_file(&out).unwrap();
        let o = run(
            &["-q", "--io", store, "-o", out_arg, url.as_str()],
            &fx.local,
        )
        .await;
        assert_ok_and_equal(&o, &out, &data);
    }
}
