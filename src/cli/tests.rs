//! Unit tests of the command line: parsing, the shared groups, and the second stage's jobs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::args::*;
use super::jobs::{self, job_for};
use super::parse::{parse_duration, parse_size};
use crate::download::{Connections, plan};
use crate::error::exit;
use crate::ftp::{Timeouts, Verify};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ftpseg").chain(args.iter().copied()))
}

fn get_job(args: &[&str]) -> Result<crate::download::Job, crate::Error> {
    let get = parse(args).unwrap().get;
    job_for(
        &get.download,
        get.url.as_deref().unwrap_or_default(),
        get.output,
    )
}

#[test]
fn the_commands_are_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn every_reworded_flag_exists_and_shows_its_text() {
    let cli = Cli::command();
    let commands = [
        (&cli, GET_WORDING),
        (cli.find_subcommand("put").unwrap(), PUT_WORDING),
        (cli.find_subcommand("bench").unwrap(), BENCH_WORDING),
    ];
    for (cmd, wording) in commands {
        for (id, help) in wording {
            let arg = cmd.get_arguments().find(|a| a.get_id() == *id);
            let arg = arg.unwrap_or_else(|| panic!("{}: no flag {id}", cmd.get_name()));
            assert_eq!(arg.get_help().unwrap().to_string(), *help);
        }
    }
}

#[test]
fn sizes() {
    assert_eq!(parse_size("1000").unwrap(), 1000);
    assert_eq!(parse_size("64K").unwrap(), 64 << 10);
    assert_eq!(parse_size("1M").unwrap(), 1 << 20);
    assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
    assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
    assert!(parse_size("12Q").is_err());
    assert!(parse_size("-1M").is_err());
    assert!(parse_size("lots").is_err());
}

#[test]
fn durations() {
    use std::time::Duration;
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    let e = parse_duration("3 weeks").unwrap_err();
    assert!(e.contains("unknown unit"), "{e}");
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("31d").is_err());
}

#[test]
fn cli_parses_get_and_demo() {
    let cli = parse(&["-n", "4", "ftp://h/f.iso"]).unwrap();
    assert!(cli.command.is_none());
    assert_eq!(cli.get.download.connections, Connections::Fixed(4));
    let cli = parse(&["-n", "auto", "ftp://h/f.iso"]).unwrap();
    assert_eq!(cli.get.download.connections, Connections::Auto);
    let cli = parse(&["ftp://h/f.iso"]).unwrap();
    assert_eq!(
        cli.get.download.connections,
        Connections::Fixed(plan::DEFAULT_CONNECTIONS)
    );
    let cli = parse(&["demo", "--size", "1M"]).unwrap();
    assert!(matches!(cli.command, Some(Command::Demo(_))));
    assert!(parse(&["-n", "65", "ftp://h/f"]).is_err());
    assert!(parse(&[]).is_err());
}

#[test]
fn ftps_flag_and_schemes_choose_tls() {
    use crate::ftp::url::Tls;
    assert_eq!(get_job(&["ftp://h/x"]).unwrap().url.tls, Tls::None);
    let j = get_job(&["--ftps", "ftp://h/x"]).unwrap();
    assert_eq!(j.url.tls, Tls::Explicit);
    assert_eq!(j.url.redacted(), "ftpes://h/x");
    assert_eq!(j.verify, Verify::SystemRoots);
    assert_eq!(get_job(&["ftpes://h/x"]).unwrap().url.tls, Tls::Explicit);
    assert_eq!(get_job(&["ftps://h/x"]).unwrap().url.tls, Tls::Implicit);
    assert_eq!(
        get_job(&["--ftps", "ftps://h/x"]).unwrap().url.tls,
        Tls::Implicit
    );
    let j = get_job(&["--ca-file", "/c.pem", "ftpes://h/x"]).unwrap();
    assert_eq!(j.verify, Verify::CaFile(PathBuf::from("/c.pem")));
    assert_eq!(
        get_job(&["--insecure", "ftps://h/x"]).unwrap().verify,
        Verify::Insecure
    );
    // TLS options on a plain URL are a mistake, not something to ignore.
    for args in [
        &["--insecure", "ftp://h/x"][..],
        &["--ca-file", "c", "ftp://h/x"],
    ] {
        let e = get_job(args).unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE, "{e}");
        assert!(e.to_string().contains("--ftps"), "{e}");
        assert!(
            !e.to_string().contains("  "),
            "one space between words: {e}"
        );
    }
    assert!(parse(&["--insecure", "--ca-file", "c", "ftpes://h/x"]).is_err());
}

#[test]
fn every_command_refuses_ca_file_with_insecure() {
    let conflict = |args: &[&str]| {
        let e = parse(args).unwrap_err();
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{args:?}"
        );
    };
    for (command, paths) in [("bench", &[][..]), ("put", &["a.bin"])] {
        for flags in [
            ["--insecure", "--ca-file", "c", "ftpes://h/x"],
            ["--no-netrc", "--netrc-file", "n", "ftp://h/x"],
        ] {
            let (url, flags) = flags.split_last().unwrap();
            let mut args = vec![command];
            args.extend(flags);
            args.extend(paths);
            args.push(url);
            conflict(&args);
        }
    }
}

#[test]
fn job_defaults_output_to_remote_name() {
    let job = get_job(&["ftp://h/pub/x.iso"]).unwrap();
    assert_eq!(job.output, PathBuf::from("x.iso"));
    assert_eq!(job.creds.user, "anonymous");
}

#[test]
fn a_folder_url_alone_names_no_file() {
    let e = get_job(&["--no-netrc", "ftp://h/dir/"]).unwrap_err();
    assert_eq!(e.exit_code(), exit::BAD_URL);
    assert!(e.to_string().contains("\"dir/\""), "{e}");
}

#[test]
fn batch_is_chosen_by_its_options() {
    let b = BulkArgs::default();
    assert!(!b.wants_batch(Some("ftp://h/a.iso")));
    assert!(b.wants_batch(Some("ftp://h/pub/*.iso")));
    // A folder without -r is the single-file path's error (exit 3, "add -r").
    assert!(!b.wants_batch(Some("ftp://h/pub/")));
    let b = BulkArgs {
        jobs: 2,
        dir: Some("x".into()),
        ..BulkArgs::default()
    };
    assert!(b.wants_batch(Some("ftp://h/a.iso")));
}

#[test]
fn demo_runs_are_default_downloads_forced_and_anonymous() {
    let plan = jobs::demo_plan(&DemoArgs {
        size: 1 << 20,
        rate: 1 << 20,
        connections: 8,
    });
    let job = plan
        .jobs
        .job_for("ftp://127.0.0.1:2121/demo.bin", Some("out".into()))
        .unwrap();
    assert_eq!(job.creds.user, "anonymous");
    assert!(job.force && job.restart);
    assert_eq!(job.min_range, 1 << 20);
    let (t, d) = (job.timeouts, Timeouts::default());
    assert_eq!(
        (t.connect, t.reply, t.data_idle),
        (d.connect, d.reply, d.data_idle)
    );
    assert_eq!(job.max_tries, 8);
    assert_eq!(job.checkpoint_interval, Duration::from_secs(1));
    assert_eq!(job.busy_retry, Duration::from_secs(15));
    assert_eq!(job.straggler_timeout, Duration::from_secs(3));
    assert!(!job.auto_connections && !job.active && !job.use_pasv_address && !job.no_rang);
    assert!(job.rate_limits.is_empty() && job.per_file_rate.is_none());
    assert_eq!(job.verify, Verify::SystemRoots);
}

#[test]
fn bench_runs_are_quiet_forced_downloads_with_its_tls_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cli = parse(&["bench", "--dir", d, "--bytes", "1M", "--ftps", "ftp://h/f"]).unwrap();
    let Some(Command::Bench(args)) = cli.command else {
        panic!("bench expected");
    };
    let plan = jobs::bench_plan(&args).unwrap();
    assert!(plan.job.force && plan.job.restart);
    assert_eq!(plan.job.url.redacted(), "ftpes://h/f");
    assert_eq!(plan.job.limit, Some(1 << 20));
    assert!(plan.job.output.starts_with(dir.path()));
    assert_eq!(plan.counts, [1, 2, 4, 8, 16]);
}

#[test]
fn the_librarys_job_new_has_the_command_lines_defaults() {
    let mut opts = jobs::default_download_opts();
    opts.credentials.no_netrc = true;
    for raw in [
        "ftp://u:secret@h/f.iso",
        "ftp://h/f.iso",
        "ftpes://h:2121/a/b",
    ] {
        let cli = job_for(&opts, raw, Some("out".into())).unwrap();
        let lib = crate::download::Job::new(crate::ftp::url::FtpUrl::parse(raw).unwrap(), "out");
        assert_eq!(format!("{cli:?}"), format!("{lib:?}"), "{raw}");
        assert_eq!(cli.creds.password, lib.creds.password, "{raw}");
    }
}
