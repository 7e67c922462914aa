//! The config file with the real binary and the in-process server: its settings seen in what
//! happens (connections the server counts, the output folder, the rate limit, a batch, `put`),
//! a flag above it, `--no-config`, `FTPSEG_CONFIG` and the XDG place, a host table for its host
//! only, `config show`'s sources, and each kind of bad file: one line naming file, line and
//! key, exit 2, nothing downloaded.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::*;

const MIB: u64 = 1 << 20;

/// Writes `text` as a config file in the fixture's folder.
fn config(fx: &Fixture, text: &str) -> PathBuf {
    let p = fx.dir.path().join("config.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `ftpseg --config FILE ARGS...` in the fixture's local folder.
async fn with_config(cfg: &Path, args: &[&str], cwd: &Path) -> std::process::Output {
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all, cwd).await
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sets_connections_and_a_flag_overrides_it() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 16 * MIB, 1);
    let cfg = config(&fx, "# mine\nconnections = 3\nplain = true\n");
    let o = with_config(&cfg, &[&fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert_eq!(fx.server.stats().connections_accepted, 3, "{}", out(&o));
    assert!(out(&o).contains(", 3 connections"), "{}", out(&o));
    // A flag is above the file.
    let before = fx.server.stats().connections_accepted;
    let o = with_config(&cfg, &["-n", "2", "--force", &fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert_eq!(fx.server.stats().connections_accepted - before, 2);
    // --no-config reads none: the default 8.
    let before = fx.server.stats().connections_accepted;
    let o = with_config(
        &cfg,
        &["--no-config", "--force", &fx.url("f.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(
        code(&o),
        2,
        "--config and --no-config together: {}",
        stderr(&o)
    );
    let o = run(&["--no-config", "--force", &fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert_eq!(fx.server.stats().connections_accepted - before, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftpseg_config_and_the_xdg_place_are_read_and_no_config_skips_them() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 8 * MIB, 2);
    let xdg = fx.dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("ftpseg")).unwrap();
    std::fs::write(xdg.join("ftpseg/config.toml"), "connections = 2\n").unwrap();
    let mut cmd = ftpseg();
    cmd.args([&fx.url("f.bin")])
        .env("XDG_CONFIG_HOME", &xdg)
        .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert_eq!(fx.server.stats().connections_accepted, 2);
    // FTPSEG_CONFIG names another file, above the XDG one.
    let other = config(&fx, "connections = 4\n");
    let mut cmd = ftpseg();
    cmd.args(["--force", &fx.url("f.bin")])
        .env("XDG_CONFIG_HOME", &xdg)
        .env("FTPSEG_CONFIG", &other)
        .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert_eq!(fx.server.stats().connections_accepted, 2 + 4);
    // --no-config: neither.
    let mut cmd = ftpseg();
    cmd.args(["--no-config", "--force", &fx.url("f.bin")])
        .env("XDG_CONFIG_HOME", &xdg)
        .env("FTPSEG_CONFIG", &other)
        .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert_eq!(fx.server.stats().connections_accepted, 2 + 4 + 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_saves_into_the_file_s_folder_at_its_rate() {
    let fx = Fixture::new(|c| c).await;
    let a = fx.serve("a.bin", 2 * MIB, 3);
    let b = fx.serve("b.bin", MIB, 4);
    let into = fx.dir.path().join("into");
    let cfg = config(
        &fx,
        &format!(
            "dir = \"{}\"\nlimit-rate = \"1M\"\nconnections = 2\n",
            into.display()
        ),
    );
    let started = Instant::now();
    let o = with_config(&cfg, &[&fx.url("a.bin"), &fx.url("b.bin")], &fx.local).await;
    let took = started.elapsed();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(into.join("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(into.join("b.bin")).unwrap(), b);
    assert!(!fx.out("a.bin").exists(), "saved outside the file's dir");
    // 3 MiB at 1 MiB/s in all cannot take less than the bytes past the limiter's burst.
    assert!(
        took.as_secs_f64() >= 1.5,
        "--limit-rate 1M from the file did not hold: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_table_applies_to_its_host_only() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 16 * MIB, 5);
    let cfg = config(
        &fx,
        "connections = 6\n[hosts.\"localhost\"]\nconnections = 2\n\n[hosts.\"127.0.0.1\"]\n\
         connections = 3\nca-file = \"~/no-such-ca.pem\"\n",
    );
    let o = with_config(&cfg, &[&fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert_eq!(fx.server.stats().connections_accepted, 3);
    // Another host's table, and none: the file's top level.
    let other = config(
        &fx,
        "connections = 6\n[hosts.\"localhost\"]\nconnections = 2\n",
    );
    let o = with_config(&other, &["--force", &fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert_eq!(fx.server.stats().connections_accepted, 3 + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reads_its_table_and_the_shared_settings() {
    let fx = Fixture::new(|c| c).await;
    let p = fx.local.join("up.bin");
    ftpseg::testserver::write_pattern_file(&p, 3 * MIB, 6).unwrap();
    let data = std::fs::read(&p).unwrap();
    let cfg = config(
        &fx,
        "connections = 8\nreply-timeout = 20\n[put]\nconnections = 1\ntemp-suffix = \".cfg-tmp\"\n",
    );
    let url = format!("ftp://alice@{}/up.bin", fx.server.addr());
    let mut cmd = ftpseg();
    cmd.args([
        "put",
        "--config",
        cfg.to_str().unwrap(),
        "-v",
        "up.bin",
        &url,
    ])
    .env("FTPSEG_PASSWORD", "s3cret")
    .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(fx.served.join("up.bin")).unwrap(), data);
    assert!(out(&o).contains(", 1 connection,"), "{}", out(&o));
    // `--config` before `put` works as well.
    let mut cmd = ftpseg();
    cmd.args([
        "--config",
        cfg.to_str().unwrap(),
        "put",
        "--force",
        "up.bin",
        &url,
    ])
    .env("FTPSEG_PASSWORD", "s3cret")
    .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(out(&o).contains(", 1 connection,"), "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_show_names_each_source() {
    let fx = Fixture::new(|c| c).await;
    let cfg = config(
        &fx,
        "connections = 16\nlimit-rate = \"20M\"\n[hosts.\"127.0.0.1\"]\nftps = true\n",
    );
    let o = with_config(
        &cfg,
        &["config", "show", "--limit-rate", "5M", "ftp://127.0.0.1/x"],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = out(&o);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_owned()
    };
    let f = cfg.display().to_string();
    assert!(line("connections").ends_with(&format!("# {f}:1")), "{text}");
    assert!(
        line("limit-rate").starts_with("limit-rate = \"5M\"")
            && line("limit-rate").ends_with(&format!("# command line (instead of {f}:2)")),
        "{text}"
    );
    assert!(line("stall-timeout").ends_with("# default"), "{text}");
    assert!(
        line("ftps").ends_with(&format!("# {f}:4 [hosts.\"127.0.0.1\"]")),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_in_the_file_is_for_tls_urls_only() {
    // As a flag, --ca-file on a plain URL is refused; from the file it waits for a TLS URL.
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", MIB, 7);
    let cfg = config(&fx, "ca-file = \"~/corp-ca.pem\"\n");
    let o = with_config(&cfg, &[&fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_file_is_one_line_naming_file_line_and_key_exit_2() {
    let fx = Fixture::new(|c| c).await;
    fx.serve("f.bin", MIB, 8);
    let cases: &[(&str, &str)] = &[
        (
            "connections = 4\nbogus-key = 1\n",
            ":2: unknown key bogus-key",
        ),
        (
            "connection = 4\n",
            ":1: unknown key connection (did you mean connections?)",
        ),
        (
            "connections = \"many\"\n",
            ":1: connections = \"many\": 'many' is not a connection count",
        ),
        (
            "stall-timeout = true\n",
            ":1: stall-timeout = true: give SECS",
        ),
        (
            "limit-rate = \"fast\"\n",
            ":1: limit-rate = \"fast\": unknown unit in 'fast'",
        ),
        ("ftps = 1\n", ":1: ftps = 1: a switch takes true or false"),
        ("io = \"disk\"\n", "(one of: auto, mmap, splice, pwrite)"),
        (
            "\n\npassword = \"hunter2\"\n",
            ":3: `password`: credentials do not go in the config file",
        ),
        (
            "[hosts.\"127.0.0.1\"]\nuser = \"bob\"\n",
            ":2: `user`: credentials",
        ),
        (
            "force = true\n",
            ":1: force cannot be set in the config file",
        ),
        ("connections = 4\nconnections = 5\n", ":2: not valid TOML"),
        ("[put]\nlimit-rate = \"1M\"\n", ":2: unknown key limit-rate"),
    ];
    for (text, want) in cases {
        let cfg = config(&fx, text);
        let o = with_config(&cfg, &[&fx.url("f.bin")], &fx.local).await;
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{text}: {err}");
        assert_eq!(err.lines().count(), 1, "{text}: one line: {err}");
        assert!(
            err.starts_with(&format!("ftpseg: error: {}", cfg.display())),
            "{text}: names the file: {err}"
        );
        assert!(err.contains(want), "{text}: want {want:?} in {err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            !fx.out("f.bin").exists(),
            "{text}: downloaded despite the bad file"
        );
    }
    // A file named but missing.
    let o = run(
        &["--config", "/nonexistent/ftpseg.toml", &fx.url("f.bin")],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/ftpseg.toml: cannot read the config file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_man_page_documents_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["man"], dir.path()).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let man = out(&o);
    for want in [
        "CONFIG FILE",
        "config.toml",
        "FTPSEG_CONFIG",
        "hosts.",
        "config show",
    ] {
        assert!(man.contains(want), "the man page lacks {want}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netrc_named_in_the_file_is_used_and_warned_about_when_others_can_read_it() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new(|c| c.with_anonymous(false)).await;
    let data = fx.serve("f.bin", MIB, 9);
    let home = fx.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let netrc = home.join("netrc");
    std::fs::write(&netrc, "machine 127.0.0.1 login alice password s3cret\n").unwrap();
    std::fs::set_permissions(&netrc, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = config(&fx, "netrc-file = \"~/netrc\"\n");
    let go = |force: bool| {
        let mut cmd = ftpseg();
        cmd.args(["--config", cfg.to_str().unwrap()])
            .args(force.then_some("--force"))
            .arg(fx.url("f.bin"))
            .env("HOME", &home)
            .current_dir(&fx.local);
        run_command(cmd)
    };
    let o = go(false).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    let want = format!(
        "ftpseg: warning: the netrc file {} holds passwords and other users can read it (mode 644)",
        netrc.display()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    std::fs::set_permissions(&netrc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = go(true).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_settings_reach_bench_and_put_only_where_they_have_the_option() {
    let fx = Fixture::new(|c| c.with_active()).await;
    fx.serve("f.bin", 2 * MIB, 10);
    // bench has no --stall-timeout or -q: the top-level ones are not for it.
    let cfg = config(
        &fx,
        "stall-timeout = 60\nquiet = true\nactive = true\n[put]\nuse-pasv-address = true\n\
         [hosts.\"127.0.0.1\"]\nconnections = 1\n",
    );
    let o = with_config(
        &cfg,
        &[
            "bench",
            "--discard",
            "--connections",
            "1,2",
            &fx.url("f.bin"),
        ],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(out(&o).contains("recommended: -n"), "{}", out(&o));
    // put: its table's use-pasv-address replaces the top-level active it excludes, and the
    // host table's connections apply.
    let p = fx.local.join("up.bin");
    ftpseg::testserver::write_pattern_file(&p, 3 * MIB, 11).unwrap();
    let url = format!("ftp://alice@{}/up.bin", fx.server.addr());
    let mut cmd = ftpseg();
    cmd.args([
        "--config",
        cfg.to_str().unwrap(),
        "put",
        "-n",
        "4",
        "up.bin",
        &url,
    ])
    .env("FTPSEG_PASSWORD", "s3cret")
    .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read(fx.served.join("up.bin")).unwrap(),
        std::fs::read(&p).unwrap()
    );
    // quiet = true from the file: no summary line.
    assert_eq!(out(&o), "", "{}", stderr(&o));
    let cfg = config(&fx, "[hosts.\"127.0.0.1\"]\nconnections = 1\n");
    let mut cmd = ftpseg();
    cmd.args([
        "--config",
        cfg.to_str().unwrap(),
        "put",
        "--force",
        "up.bin",
        &url,
    ])
    .env("FTPSEG_PASSWORD", "s3cret")
    .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(out(&o).contains(", 1 connection,"), "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_from_the_file_takes_a_single_download_without_a_batch() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 2 * MIB, 12);
    let into = fx.dir.path().join("downloads");
    let cfg = config(&fx, &format!("dir = \"{}\"\n", into.display()));
    let o = with_config(&cfg, &[&fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &into.join("f.bin"), &data);
    let text = out(&o);
    assert_eq!(
        text.lines().count(),
        1,
        "one summary line, no batch footer: {text}"
    );
    assert!(
        text.starts_with(&format!("saved {}", into.join("f.bin").display())),
        "{text}"
    );
    // A single download: an existing file is an error (exit 9), not skipped.
    let o = with_config(&cfg, &[&fx.url("f.bin")], &fx.local).await;
    assert_eq!(code(&o), 9, "{}", stderr(&o));
    // -o names the place itself.
    let o = with_config(&cfg, &["-o", "here.bin", &fx.url("f.bin")], &fx.local).await;
    assert_ok_and_equal(&o, &fx.out("here.bin"), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_still_works_with_a_config_file() {
    let fx = Fixture::new(|c| c).await;
    let cfg = config(&fx, "connections = 4\n");
    for args in [
        vec!["help"],
        vec!["config", "show", "put", "--help"],
        vec!["put", "--help"],
    ] {
        let o = with_config(&cfg, &args, &fx.local).await;
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert!(out(&o).contains("Usage:"), "{args:?}: {}", out(&o));
    }
    // A password in config show's arguments stays out of its messages.
    let o = with_config(
        &cfg,
        &["config", "show", "-n", "ftp://u:pw@h/a", "ftp://u:pw@h/b"],
        &fx.local,
    )
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ftp://u:<password>@h/a"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(":pw@"), "{}", stderr(&o));
}
