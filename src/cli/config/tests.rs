//! The file's settings against a command line: what is added, what a flag replaces, where
//! the words go, and the host tables.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

use super::*;
use crate::cli::Cli;
use crate::cli::args::Command as Sub;
use crate::download::Connections;

/// `text` as a loaded file.
fn loaded(text: &str) -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    load(&Choice::Named(path)).unwrap().unwrap()
}

/// The command line `args` with the file's settings, parsed as ftpseg would.
fn parsed(l: &Loaded, args: &[&str]) -> (Cli, ForRun) {
    let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
    let typed = Cli::command().try_get_matches_from(&argv).unwrap();
    let section = match typed.subcommand_name() {
        Some("put") => Section::Put,
        Some("bench") => Section::Bench,
        _ => Section::Get,
    };
    let own = match section.subcommand() {
        None => &typed,
        Some(n) => typed.subcommand_matches(n).unwrap(),
    };
    let run = ForRun::new(Some(l), section, &given_ids(own));
    let m = Cli::command()
        .try_get_matches_from(with_words(&argv, &run.words()))
        .unwrap();
    (Cli::from_arg_matches(&m).unwrap(), run)
}

#[test]
fn the_file_fills_what_no_flag_sets_and_a_flag_wins() {
    let l = loaded("connections = 16\nlimit-rate = \"20M\"\nstall-timeout = 60\n");
    let (cli, run) = parsed(&l, &["ftpseg", "ftp://h/f"]);
    let d = &cli.get.download;
    assert_eq!(d.connections, Connections::Fixed(16));
    assert_eq!(d.limit_rate, Some(20 << 20));
    assert_eq!(d.network.stall_timeout, 60.0);
    assert_eq!(run.used.len(), 3);
    let (cli, run) = parsed(&l, &["ftpseg", "-n", "2", "ftp://h/f"]);
    assert_eq!(cli.get.download.connections, Connections::Fixed(2));
    assert_eq!(run.replaced.len(), 1);
    assert_eq!(run.replaced[0].1, "--connections");
}

#[test]
fn a_flag_replaces_the_setting_it_excludes() {
    let l = loaded("ca-file = \"/etc/ca.pem\"\nactive = true\n");
    let (cli, run) = parsed(
        &l,
        &["ftpseg", "--insecure", "--use-pasv-address", "ftps://h/f"],
    );
    let d = &cli.get.download;
    assert!(d.tls.insecure && d.tls.ca_file.is_none());
    assert!(d.data.use_pasv_address && !d.data.active);
    let by: Vec<&str> = run.replaced.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(by, ["--insecure", "--use-pasv-address"]);
}

#[test]
fn put_takes_its_table_and_the_shared_top_level_settings_only() {
    let l = loaded(
        "connections = 16\nstall-timeout = 45\nmax-tries = 3\n[put]\nconnections = 2\n\
         temp-suffix = \".up\"\n",
    );
    let (cli, _) = parsed(&l, &["ftpseg", "put", "a.bin", "ftp://h/a.bin"]);
    let Some(Sub::Put(p)) = cli.command else {
        panic!("put")
    };
    assert_eq!(p.connections, 2);
    assert_eq!(p.temp_suffix, ".up");
    assert_eq!(p.network.stall_timeout, 45.0);
    // max-tries at the top is a download's: put keeps its own default.
    assert_eq!(p.max_tries, 8);
}

#[test]
fn bench_does_not_take_the_top_level_connections() {
    let l = loaded("connections = 16\nftps = true\n[bench]\nrepeat = 3\n");
    let (cli, _) = parsed(&l, &["ftpseg", "bench", "ftp://h/f"]);
    let Some(Sub::Bench(b)) = cli.command else {
        panic!("bench")
    };
    assert_eq!(b.connections, [1, 2, 4, 8, 16]);
    assert_eq!(b.repeat, 3);
    assert!(b.tls.ftps);
}

#[test]
fn words_go_before_a_double_dash() {
    let argv: Vec<OsString> = ["ftpseg", "-n", "2", "--", "ftp://h/-f"]
        .iter()
        .map(OsString::from)
        .collect();
    let out = with_words(&argv, &["--ftps".into()]);
    assert_eq!(out, ["ftpseg", "-n", "2", "--ftps", "--", "ftp://h/-f"]);
    let argv: Vec<OsString> = ["ftpseg", "u"].iter().map(OsString::from).collect();
    assert_eq!(with_words(&argv, &["-q".into()]), ["ftpseg", "u", "-q"]);
}

#[test]
fn a_leading_config_flag_moves_after_the_subcommand() {
    let subs = vec!["put".to_owned(), "bench".to_owned()];
    let v = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
    assert_eq!(
        config_first(v(&["ftpseg", "--config", "f", "put", "a", "u"]), &subs),
        v(&["ftpseg", "put", "--config", "f", "a", "u"])
    );
    assert_eq!(
        config_first(v(&["ftpseg", "--no-config", "bench", "u"]), &subs),
        v(&["ftpseg", "bench", "--no-config", "u"])
    );
    let subs = vec!["put".to_owned(), "help".to_owned()];
    assert_eq!(
        config_first(v(&["ftpseg", "--config", "f", "help", "put"]), &subs),
        v(&["ftpseg", "help", "put"])
    );
    // A download keeps its order: its URL is no subcommand.
    let get = v(&["ftpseg", "--config=f", "ftp://h/put"]);
    assert_eq!(config_first(get.clone(), &subs), get);
}

#[test]
fn a_host_table_applies_to_its_host_only_and_flags_still_win() {
    let l = loaded(
        "connections = 8\n[hosts.\"Slow.Example\"]\nconnections = 2\nmax-connections-per-host = 3\n\
         ftps = true\n",
    );
    let (cli, run) = parsed(&l, &["ftpseg", "ftp://h/f"]);
    let hosts = &run.hosts;
    let mut opts = cli.get.download.clone();
    hosts.apply_download("other.example", &mut opts);
    assert_eq!(opts.connections, Connections::Fixed(8));
    assert!(!opts.tls.ftps);
    hosts.apply_download("slow.example", &mut opts);
    assert_eq!(opts.connections, Connections::Fixed(2));
    assert!(opts.tls.ftps);
    assert_eq!(hosts.per_host("SLOW.example"), Some(3));
    // -n on the command line is above the host table.
    let (_, run) = parsed(&l, &["ftpseg", "-n", "5", "ftp://h/f"]);
    let mut opts = cli.get.download.clone();
    run.hosts.apply_download("slow.example", &mut opts);
    assert_eq!(opts.connections, Connections::Fixed(8));
}

#[test]
fn host_tables_take_server_settings_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[hosts.\"h\"]\nlimit-rate = \"1M\"\n").unwrap();
    let e = load(&Choice::Named(path.clone())).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2: limit-rate cannot be set per host: a [hosts.\"h\"] table takes connections, \
             max-connections-per-host, ftps, active, use-pasv-address, ca-file, insecure",
            path.display()
        )
    );
}

#[test]
fn a_missing_named_file_is_an_error_and_a_missing_default_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("nope.toml");
    let e = load(&Choice::Named(gone.clone())).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::USAGE);
    assert!(e.to_string().contains("--no-config"), "{e}");
    assert!(load(&Choice::Default(gone)).unwrap().is_none());
    assert!(load(&Choice::None).unwrap().is_none());
}
