//! The second stage of the command line: what was typed ([`super::args`]) becomes a checked
//! job or plan the commands run (as ripgrep's `HiArgs::from_low_args`). Each setting is read
//! from its flag here and only here: a [`Job`] is written out once, in [`job_for`], for single
//! downloads, each server of a batch, bench's runs and demo's runs alike.
//!
//! Pure apart from what a job needs from outside: `FTPSEG_PASSWORD`, the netrc file, a
//! password prompt, and for batches the `-i` and `--checksum-file` files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, FromArgMatches};

use super::args::{BenchArgs, DemoArgs, DownloadOpts, GetArgs, PutArgs, ServeArgs};
use super::groups::TlsOpts;
use crate::batch::{self, JobFor, Sums};
use crate::commands::bench::BenchPlan;
use crate::commands::demo::DemoPlan;
use crate::commands::get::GetPlan;
use crate::commands::put::PutPlan;
use crate::commands::serve::ServePlan;
use crate::download::{Connections, Job, autotune};
use crate::error::Error;
use crate::ftp::Verify;
use crate::ftp::ratelimit::RateLimit;
use crate::ftp::url::{FtpUrl, Tls};
use crate::storage::Storage;
use crate::testserver::{Faults, ServerConfig};
use crate::ui::progress::Mode;

/// `ftpseg URL...`: one download, or a batch when the options ask for one (its inputs are read
/// here, before any signal is watched).
pub fn get_plan(mut args: GetArgs) -> Result<GetPlan, Error> {
    // `ftpseg FILE.meta4`: a local Metalink file in the URL's place.
    if let Some(u) = args.url.as_deref().filter(|u| is_metalink_path(u)) {
        if args.bulk.metalink.is_some() {
            return Err(Error::Usage("give one Metalink file".into()));
        }
        args.bulk.metalink = Some(PathBuf::from(u));
        args.url = None;
    }
    if args.bulk.wants_batch(args.url.as_deref()) {
        if !args.mirror.is_empty() {
            return Err(Error::Usage(
                "--mirror is for one file; in a list (-i FILE), give a file's mirrors on its \
                 line, separated by tabs"
                    .into(),
            ));
        }
        let settings = batch_settings(&args);
        let inputs = batch::Inputs::read(&settings)?;
        return Ok(GetPlan::Batch {
            settings: Box::new(settings),
            inputs,
            inhibit_sleep: args.download.network.inhibit_sleep,
            jobs: Box::new(DownloadJobs(args.download)),
        });
    }
    let named = args.output.is_some();
    let mut job = job_for(
        &args.download,
        args.url.as_deref().unwrap_or_default(),
        args.output,
    )?;
    job.mirrors = args
        .mirror
        .iter()
        .map(|raw| DownloadJobs(args.download.clone()).mirror_for(raw))
        .collect::<Result<_, _>>()?;
    // One file keeps within the per-host limit by using no more connections (a host table's
    // limit, applied by `job_for`, is above the file's other settings); with mirrors, each
    // server within it, -n the total.
    let host = job.url.host_for_connect();
    let cap = match args.download.hosts.per_host(&host) {
        Some(_) => None,
        None => args.bulk.max_connections_per_host,
    };
    match (cap, job.mirrors.is_empty()) {
        (Some(cap), true) => job.connections = job.connections.min(usize::from(cap)),
        (cap, false) => job.per_mirror = cap.map(usize::from),
        (None, true) => {}
    }
    // A folder from the config file (`dir = ...`) is where a single download goes, unless
    // -o names the place; typed, -d makes a batch instead.
    if let (Some(dir), true, false) = (&args.bulk.dir, args.bulk.dir_from_file, named) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        job.output = dir.join(&job.output);
    }
    Ok(GetPlan::One {
        job: Box::new(job),
        mode: args.download.output.mode(),
        quiet: args.download.output.quiet,
        verbose: args.bulk.verbose,
        inhibit_sleep: args.download.network.inhibit_sleep,
    })
}

/// A local Metalink file given where a URL goes: a name ending in `.meta4` or `.metalink`
/// that is not a URL.
fn is_metalink_path(s: &str) -> bool {
    !s.contains("://") && (s.ends_with(".meta4") || s.ends_with(".metalink"))
}

/// The download job for `raw` (a file URL, or a folder URL ending in `/` for a batch's
/// template) with the options of `opts`, saving to `output` [default: the remote name].
/// The config file's table for the URL's host, if any, applies first.
pub fn job_for(opts: &DownloadOpts, raw: &str, output: Option<PathBuf>) -> Result<Job, Error> {
    let (mut url, _) = FtpUrl::parse_file_or_folder(raw)?;
    let host = url.host_for_connect();
    let mut own;
    let mut opts = opts;
    if opts.hosts.rule(&host).is_some() {
        own = opts.clone();
        opts.hosts.apply_download(&host, &mut own);
        opts = &own;
    }
    let verify = tls_settings(&mut url, &opts.tls)?;
    let output = match output {
        Some(p) => p,
        None => PathBuf::from(url.file_name()?),
    };
    let creds = opts.credentials.resolve(&url)?;
    let per_host = opts.hosts.per_host(&host).map_or(usize::MAX, usize::from);
    Ok(Job {
        url,
        creds,
        output,
        connections: match opts.connections {
            Connections::Fixed(n) => n,
            Connections::Auto => autotune::MAX,
        }
        .min(per_host),
        auto_connections: opts.connections == Connections::Auto,
        min_range: opts.min_range.max(64 << 10),
        timeouts: opts.network.timeouts(),
        network_wait: opts.network.network_wait,
        max_tries: opts.max_tries,
        force: opts.force,
        restart: opts.restart,
        checkpoint_interval: Duration::from_secs_f64(opts.checkpoint_interval),
        use_pasv_address: opts.data.use_pasv_address,
        active: opts.data.active,
        busy_retry: Duration::from_secs_f64(opts.busy_retry),
        no_rang: opts.no_rang,
        straggler_timeout: Duration::from_secs_f64(opts.straggler_timeout),
        verify,
        pool: None,
        limit: None,
        rate_limits: opts
            .limit_rate
            .map(|r| Arc::new(RateLimit::new(r)))
            .into_iter()
            .collect(),
        per_file_rate: opts.limit_rate_per_file,
        digest: None,
        storage: Storage::File,
        io: opts.io,
        mirrors: Vec::new(),
        per_mirror: None,
        pieces: None,
        expected_size: None,
    })
}

/// The download options as a [`JobFor`]: a batch (or the demo) builds each job through it.
pub struct DownloadJobs(pub DownloadOpts);

impl JobFor for DownloadJobs {
    fn job_for(&self, raw: &str, output: Option<PathBuf>) -> Result<Job, Error> {
        job_for(&self.0, raw, output)
    }

    fn budget_for(&self, host: &str) -> Option<usize> {
        self.0.hosts.per_host(host).map(usize::from)
    }
}

/// The options of a download when no flag is given: clap's own defaults, so each default is
/// written once, in its `#[arg]` (for bench's and demo's runs, which take no such flags).
pub(super) fn default_download_opts() -> DownloadOpts {
    let cmd = DownloadOpts::augment_args(clap::Command::new("ftpseg"));
    let matches = cmd
        .try_get_matches_from(["ftpseg"])
        .expect("the download options have defaults only");
    DownloadOpts::from_arg_matches(&matches).expect("the download options have defaults only")
}

/// The batch's settings from the arguments.
fn batch_settings(args: &GetArgs) -> batch::Settings {
    let (bulk, opts) = (&args.bulk, &args.download);
    let quiet = opts.output.quiet;
    let mode = if quiet {
        Mode::Quiet
    } else if bulk.verbose {
        Mode::Plain
    } else if bulk.no_progress || bulk.json || bulk.jobs > 1 {
        Mode::Quiet
    } else {
        opts.output.mode()
    };
    let budget = bulk
        .max_connections_per_host
        .map(usize::from)
        .unwrap_or_else(|| {
            let n = match opts.connections {
                Connections::Fixed(n) => n,
                // -n auto may grow to this many.
                Connections::Auto => autotune::MAX,
            };
            n.max(usize::from(bulk.jobs))
        });
    batch::Settings {
        urls: args.url.iter().chain(&bulk.more_urls).cloned().collect(),
        input_file: bulk.input_file.clone(),
        metalink: bulk.metalink.clone(),
        output: args.output.clone(),
        dir: bulk.dir.clone(),
        recursive: bulk.recursive,
        jobs: usize::from(bulk.jobs),
        budget,
        checksum: bulk.checksum.clone(),
        sums: match bulk.checksum_file.as_deref() {
            None => Sums::None,
            Some("auto") => Sums::Auto,
            Some(path) => Sums::File(path.to_owned()),
        },
        verify_remote: bulk.verify_remote,
        json: bulk.json,
        quiet,
        verbose: bulk.verbose,
        mode,
    }
}

/// `ftpseg put LOCAL... URL`.
pub fn put_plan(args: &PutArgs) -> Result<PutPlan, Error> {
    let (raw, locals) = args
        .paths
        .split_last()
        .ok_or_else(|| Error::Usage("give the local files, then the remote URL".into()))?;
    let (mut url, folder) = FtpUrl::parse_file_or_folder(raw)?;
    if folder {
        url.path = crate::ftp::url::folder_path(&url.path);
    }
    let into_dir = folder || locals.len() > 1 || args.recursive;
    if into_dir && !folder {
        return Err(Error::Usage(format!(
            "several files or -r go into a folder: end the URL with / ({raw}/)"
        )));
    }
    let host = url.host_for_connect();
    let (mut tls, mut data) = (args.tls.clone(), args.data.clone());
    args.hosts.apply_server(&host, &mut tls, &mut data);
    // A host table's connections (fixed ones; put has no `auto`), within its per-host limit.
    let connections = match args.hosts.connections(&host) {
        Some(Connections::Fixed(n)) => n,
        _ => args.connections,
    }
    .min(args.hosts.per_host(&host).map_or(usize::MAX, usize::from));
    let verify = tls_settings(&mut url, &tls)?;
    let creds = args.credentials.resolve(&url)?;
    let job = crate::upload::PutJob {
        url,
        creds,
        locals: locals.iter().map(PathBuf::from).collect(),
        into_dir,
        recursive: args.recursive,
        connections,
        timeouts: args.network.timeouts(),
        network_wait: args.network.network_wait,
        max_tries: args.max_tries,
        force: args.force,
        restart: args.restart,
        temp_suffix: (!args.no_temp).then(|| args.temp_suffix.clone()),
        use_pasv_address: data.use_pasv_address,
        active: data.active,
        verify,
        busy_retry: Duration::from_secs_f64(args.busy_retry),
    };
    Ok(PutPlan {
        job,
        mode: args.output.mode(),
        quiet: args.output.quiet,
        verbose: args.verbose,
        inhibit_sleep: args.network.inhibit_sleep,
    })
}

/// `ftpseg bench URL [URL...]`: the download every run repeats, one per URL (a normal one with
/// `--force --restart`, into a temporary file or nowhere), and the counts to run it with.
pub fn bench_plan(args: &BenchArgs) -> Result<BenchPlan, Error> {
    if args.connections.is_empty() {
        return Err(Error::Usage(
            "--connections needs at least one count".into(),
        ));
    }
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let storage = if args.discard {
        Storage::Discard
    } else {
        Storage::File
    };
    if storage == Storage::File && !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--dir {}: no such folder; give an existing folder for the temporary downloads",
            dir.display()
        )));
    }
    // With --discard the engine never creates this file (nor its .part or manifest).
    let output = dir.join(format!("ftpseg-bench-{}.tmp", std::process::id()));
    let mut opts = default_download_opts();
    opts.force = true;
    opts.restart = true;
    opts.tls = args.tls.clone();
    opts.credentials = args.credentials.clone();
    opts.data = args.data.clone();
    opts.io = args.io;
    // A host table's server settings apply; its connections do not (bench sets its own).
    opts.hosts = args.hosts.clone();
    let mut jobs = Vec::with_capacity(args.urls.len());
    for url in &args.urls {
        // The runs are one after the other, so every URL's may use the same temporary file.
        let mut job = job_for(&opts, url, Some(output.clone()))?;
        job.limit = args.bytes;
        job.storage = storage;
        jobs.push(job);
    }
    let mut jobs = jobs.into_iter();
    let job = jobs
        .next()
        .ok_or_else(|| Error::Usage("bench needs a URL".into()))?;
    Ok(BenchPlan {
        job,
        mirrors: jobs.collect(),
        counts: args.connections.clone(),
        repeat: args.repeat,
        dir,
        json: args.json.clone(),
        plot: args.plot.clone(),
    })
}

/// `ftpseg demo`: its runs are plain downloads with `--force --restart`, anonymous (no netrc).
pub fn demo_plan(args: &DemoArgs) -> DemoPlan {
    let mut opts = default_download_opts();
    opts.force = true;
    opts.restart = true;
    opts.credentials.no_netrc = true;
    DemoPlan {
        size: args.size,
        rate: args.rate,
        connections: args.connections,
        jobs: Box::new(DownloadJobs(opts)),
    }
}

/// `ftpseg serve ROOT`: the test server's configuration.
pub fn serve_plan(args: &ServeArgs) -> ServePlan {
    let mut config = ServerConfig::new(&args.root);
    config.faults = Faults {
        rate_per_transfer: args.rate,
        session_rates: args.session_rates.clone(),
        stall_after: args.stall_after,
        faulty_transfers: args.faulty_transfers,
        upload_rate: args.upload_rate,
        ..Faults::default()
    };
    config.max_connections = args.max_connections;
    config.port = args.port;
    config.latency = args.rtt_ms.map(Duration::from_millis);
    config.idle_timeout = args.idle_timeout.map(Duration::from_secs);
    ServePlan {
        config,
        stats_file: args.stats_file.clone(),
    }
}

/// The TLS settings from `--ftps`, `--ca-file` and `--insecure`: `--ftps` turns an ftp:// URL
/// into explicit TLS; the certificate options on a plain URL are a usage error.
///
/// From the config file, `ca-file` and `insecure` apply to TLS URLs and are left out for
/// plain ones.
fn tls_settings(url: &mut FtpUrl, tls: &TlsOpts) -> Result<Verify, Error> {
    if tls.ftps && url.tls == Tls::None {
        url.tls = Tls::Explicit;
    }
    if tls.from_file && !url.tls.is_tls() {
        return Ok(Verify::SystemRoots);
    }
    let verify = match (&tls.ca_file, tls.insecure) {
        (Some(path), _) => Verify::CaFile(path.clone()),
        (None, true) => Verify::Insecure,
        (None, false) => Verify::SystemRoots,
    };
    if verify != Verify::SystemRoots && !url.tls.is_tls() {
        // Never let the user believe a plain connection is protected.
        return Err(Error::Usage(format!(
            "{} applies to FTPS only, and {} is plain FTP; add --ftps, or use an ftpes:// \
             (explicit TLS) or ftps:// (implicit TLS) URL",
            if tls.insecure {
                "--insecure"
            } else {
                "--ca-file"
            },
            url.redacted()
        )));
    }
    Ok(verify)
}
