//! Command-line interface: the arguments, and turning them into a run with an exit code.
//!
//! `ftpseg [OPTIONS] <URL>` downloads one file; `ftpseg demo` runs the built-in demonstration.
//! Every failure prints one line, `ftpseg: error: ...`, and exits with the code documented in
//! README.md (see [`crate::error::exit`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::download::plan;
use crate::download::{self, Connections, Job, Outcome};
use crate::error::{Error, exit};
use crate::ftp::url::FtpUrl;
use crate::ftp::{Credentials, Timeouts, Verify};
use crate::ui::progress::{Mode, Progress};

#[derive(Debug, Parser)]
#[command(
    name = "ftpseg",
    version,
    about = "Download large files from FTP servers over many connections at once, resumably.",
    long_about = "Download large files from FTP servers over many connections at once.\n\n\
        The file is written to <output>.part, with a manifest <output>.ftpseg recording each \
        range's durable progress; run the same command again after a crash, kill or network \
        cut and it resumes every range where it stopped.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub get: GetArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a built-in FTP server on 127.0.0.1 with a throttled test file, download it with 1
    /// and with N connections, show the speed-up and verify the bytes.
    Demo(DemoArgs),
    /// Upload files resumably: under a temporary name renamed at the end, on several
    /// connections where the server allows it, verified (SIZE, and the server's hash where it
    /// offers one). Run the same command again after a crash to resume.
    Put(PutArgs),
    /// Measure a server: download one file with 1, 2, 4, 8, 16 connections (or --connections),
    /// print throughput, time to first byte and CPU for each, and recommend the fewest
    /// connections within 5% of the best. Nothing is kept on disk.
    Bench(BenchArgs),
    /// Serve a folder with the built-in FTP server on loopback (for benchmarks and tests)
    #[command(hide = true)]
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on standard output
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on standard output: ftpseg man > ftpseg.1
    Man,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// ftp://[user[:password]@]host[:port]/path of a large file (ftpes:// or ftps:// for TLS)
    pub url: String,
    /// Connection counts to measure, in this order (comma-separated, each 1-64)
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16",
          value_parser = parse_connections, value_name = "N,N,...")]
    pub connections: Vec<usize>,
    /// Fetch only the first SIZE bytes of the file in each run (K, M, G suffixes)
    /// [default: the whole file]
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub bytes: Option<u64>,
    /// Runs per connection count; the table shows each count's median run
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100),
          value_name = "RUNS")]
    pub repeat: u16,
    /// Also write the results as JSON to FILE ("-": standard output; the table then goes to
    /// standard error)
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw throughput against connections as an SVG chart
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Folder for the temporary download, removed after each run [default: the system's
    /// temporary folder]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Receive and count the bytes but store nothing (no file, no manifest, no hashing): the
    /// server and the network alone
    #[arg(long, conflicts_with = "dir")]
    pub discard: bool,
    /// Use FTP over explicit TLS (AUTH TLS) with an ftp:// URL
    #[arg(long)]
    pub ftps: bool,
    /// Trust the server certificates in this PEM file (FTPS)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the server's certificate (FTPS)
    #[arg(long)]
    pub insecure: bool,
    /// Read credentials from this netrc file [default: ~/.netrc]
    #[arg(long, value_name = "FILE")]
    pub netrc_file: Option<PathBuf>,
    /// Never read a netrc file
    #[arg(long)]
    pub no_netrc: bool,
    /// Connect data connections to the address in the server's PASV reply
    #[arg(long)]
    pub use_pasv_address: bool,
    /// Active mode: the server connects to ftpseg for data (PORT/EPRT)
    #[arg(long, conflicts_with = "use_pasv_address")]
    pub active: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Folder to serve (anonymous, read-write)
    pub root: PathBuf,
    /// Port on 127.0.0.1 (0 picks a free one; the URL is printed)
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Per-connection throttle, bytes per second (K, M, G suffixes)
    #[arg(long, value_parser = parse_size)]
    pub rate: Option<u64>,
    /// Uneven connections: the k-th control connection gets the k-th rate (cycling), bytes per
    /// second, comma-separated (overrides --rate)
    #[arg(long, value_parser = parse_size, value_delimiter = ',', value_name = "RATES")]
    pub session_rates: Vec<u64>,
    /// Control connections allowed at once; more are answered 421
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// A RETR stops sending (forever) after this many bytes (K, M, G suffixes)
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub stall_after: Option<u64>,
    /// --stall-after applies only to the first N RETRs
    #[arg(long, value_name = "N")]
    pub faulty_transfers: Option<usize>,
    /// A long network path: add this round-trip time, in milliseconds, to every exchange on
    /// the control connections (data connections are not delayed)
    #[arg(long, value_name = "MS")]
    pub rtt_ms: Option<u64>,
    /// On SIGINT or SIGTERM, write the server's counters here as JSON before exiting
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// ftp://[user[:password]@]host[:port]/path; ftpes:// for FTP over explicit TLS (AUTH TLS),
    /// ftps:// for implicit TLS (port 990). A password here is visible to other users of this
    /// machine: prefer FTPSEG_PASSWORD
    #[arg(required_unless_present = "input_file")]
    pub url: Option<String>,

    /// Where to save the file [default: the remote file's name, in the current folder]
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Connections to use at once (1-64), or "auto": start with 2 and add connections while
    /// each addition still raises the throughput by more than 5%, up to 16 or the server's limit
    #[arg(short = 'n', long, default_value_t = Connections::Fixed(plan::DEFAULT_CONNECTIONS),
          value_parser = parse_connections_or_auto, value_name = "N|auto")]
    pub connections: Connections,

    /// Download at most RATE bytes per second in all (all connections, and all files of a
    /// batch, together; K, M, G suffixes)
    #[arg(long, value_parser = parse_rate, value_name = "RATE")]
    pub limit_rate: Option<u64>,

    /// Download each file at most at RATE bytes per second (its connections together)
    #[arg(long, value_parser = parse_rate, value_name = "RATE")]
    pub limit_rate_per_file: Option<u64>,

    /// Smallest range given to a connection, and smallest half a connection may take from
    /// another (K, M, G suffixes)
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "SIZE")]
    pub min_range: u64,

    /// Overwrite an existing output file
    #[arg(long)]
    pub force: bool,

    /// Ignore (and delete) an earlier partial download of this output and start over
    #[arg(long)]
    pub restart: bool,

    /// Failed attempts in a row on one range before giving up
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_tries: u32,

    /// Seconds to wait for a TCP connection
    #[arg(long, default_value_t = 15.0, value_name = "SECS", value_parser = parse_secs)]
    pub connect_timeout: f64,

    /// Seconds to wait for any reply from the server
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_secs)]
    pub reply_timeout: f64,

    /// Seconds without a single byte on a data connection before it counts as stalled and is
    /// replaced by a new one
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_secs)]
    pub stall_timeout: f64,

    /// Seconds between checkpoints (flush + manifest save)
    #[arg(long, default_value_t = 1.0, value_name = "SECS", value_parser = parse_secs)]
    pub checkpoint_interval: f64,

    /// Show no progress, only errors
    #[arg(short, long)]
    pub quiet: bool,

    /// Plain progress lines instead of bars, even on a terminal
    #[arg(long)]
    pub plain: bool,

    /// Read credentials from this netrc file [default: ~/.netrc, if it exists]
    #[arg(long, value_name = "FILE", conflicts_with = "no_netrc")]
    pub netrc_file: Option<PathBuf>,

    /// Do not read any netrc file
    #[arg(long)]
    pub no_netrc: bool,

    /// Seconds a connection refused as "too many connections" waits before trying again
    /// (doubling each time it is refused, up to 120)
    #[arg(long, default_value_t = 15.0, value_name = "SECS", value_parser = parse_secs)]
    pub busy_retry: f64,

    /// Seconds without progress after which a free connection takes over a range (a stalled
    /// connection then costs this, not --stall-timeout)
    #[arg(long, default_value_t = 3.0, value_name = "SECS", value_parser = parse_secs)]
    pub straggler_timeout: f64,

    /// Use REST and early stops even where the server offers exact ranges (RANG)
    #[arg(long, hide = true)]
    pub no_rang: bool,

    /// Connect data connections to the address the server names in its PASV reply, instead
    /// of the control connection's address (only for servers behind unusual setups: a hostile
    /// server could point ftpseg at another host)
    #[arg(long)]
    pub use_pasv_address: bool,

    /// Active mode: the server opens each data connection to ftpseg (PORT, or EPRT over IPv6),
    /// to a listener on the control connection's local address that accepts only the server,
    /// instead of ftpseg connecting to it (EPSV/PASV). For servers or firewalls that need it
    #[arg(long, conflicts_with = "use_pasv_address")]
    pub active: bool,

    /// Use explicit TLS (AUTH TLS) with an ftp:// URL, as ftpes:// does. The password and the
    /// data are then encrypted; a server without TLS is refused (no fallback to plain FTP)
    #[arg(long)]
    pub ftps: bool,

    /// Trust only the CA certificates in this PEM file for FTPS, instead of the system's
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca_file: Option<PathBuf>,

    /// FTPS without checking the server's certificate (anyone on the path can then read and
    /// change the transfer and see the password)
    #[arg(long)]
    pub insecure: bool,

    /// Many files: more URLs, -i, -d, -r, -j, budgets, checksums, --json (docs/bulk.md)
    #[command(flatten)]
    pub bulk: crate::batch::BulkArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ftpseg put big.iso ftp://user@host/pub/big.iso\n  \
                  ftpseg put -n 4 a.bin b.bin ftp://user@host/incoming/\n  \
                  ftpseg put -r photos ftp://user@host/backup/"
)]
pub struct PutArgs {
    /// Local files (folders with -r), then the remote URL: a file URL for one file, a folder
    /// URL ending in / for several files or -r
    #[arg(required = true, num_args = 2.., value_name = "LOCAL... URL")]
    pub paths: Vec<String>,

    /// Upload folders with everything in them
    #[arg(short, long)]
    pub recursive: bool,

    /// Connections to use at once, where the server accepts parallel writes into one file
    /// (probed first; otherwise one connection)
    #[arg(short = 'n', long, default_value_t = 4, value_parser = parse_connections)]
    pub connections: usize,

    /// Suffix of the temporary remote name the file is written under before the rename
    #[arg(long, default_value = crate::upload::DEFAULT_TEMP_SUFFIX, value_name = "SUFFIX",
          conflicts_with = "no_temp")]
    pub temp_suffix: String,

    /// Write the final remote name directly (no temporary name, no rename)
    #[arg(long)]
    pub no_temp: bool,

    /// Replace an existing remote file
    #[arg(long)]
    pub force: bool,

    /// Forget an earlier unfinished upload of these files and start over
    #[arg(long)]
    pub restart: bool,

    /// Failed attempts in a row on one piece before giving up
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_tries: u32,

    /// Seconds to wait for a TCP connection
    #[arg(long, default_value_t = 15.0, value_name = "SECS", value_parser = parse_secs)]
    pub connect_timeout: f64,

    /// Seconds to wait for any reply from the server
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_secs)]
    pub reply_timeout: f64,

    /// Seconds in which a data connection accepts not a single byte before it counts as
    /// stalled and is replaced
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_secs)]
    pub stall_timeout: f64,

    /// Seconds a connection refused as "too many connections" waits before trying again
    #[arg(long, default_value_t = 15.0, value_name = "SECS", value_parser = parse_secs)]
    pub busy_retry: f64,

    /// Show no progress, only errors
    #[arg(short, long)]
    pub quiet: bool,

    /// Plain progress lines instead of bars, even on a terminal
    #[arg(long)]
    pub plain: bool,

    /// Read credentials from this netrc file [default: ~/.netrc, if it exists]
    #[arg(long, value_name = "FILE", conflicts_with = "no_netrc")]
    pub netrc_file: Option<PathBuf>,

    /// Do not read any netrc file
    #[arg(long)]
    pub no_netrc: bool,

    /// Connect data connections to the address in the server's PASV reply
    #[arg(long)]
    pub use_pasv_address: bool,

    /// Active mode: the server connects to ftpseg for data (PORT/EPRT)
    #[arg(long, conflicts_with = "use_pasv_address")]
    pub active: bool,

    /// Use explicit TLS (AUTH TLS) with an ftp:// URL
    #[arg(long)]
    pub ftps: bool,

    /// Trust only the CA certificates in this PEM file for FTPS
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca_file: Option<PathBuf>,

    /// FTPS without checking the server's certificate
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the generated test file (K, M, G suffixes)
    #[arg(long, default_value = "48M", value_parser = parse_size)]
    pub size: u64,
    /// Per-connection throttle of the demo server, bytes per second (K, M, G suffixes)
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub rate: u64,
    /// Connections for the parallel run
    #[arg(short = 'n', long, default_value_t = 8,
          value_parser = parse_connections)]
    pub connections: usize,
}

/// "64K", "1M", "1.5G", "1000" -> bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mult: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown unit in '{s}': use K, M, G or T")),
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 512K, 4M or 1G"))?;
    if !v.is_finite() || v < 0.0 || v * mult as f64 > (1u64 << 62) as f64 {
        return Err(format!("'{s}' is out of range"));
    }
    Ok((v * mult as f64) as u64)
}

fn parse_connections_or_auto(s: &str) -> Result<Connections, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Connections::Auto);
    }
    parse_connections(s)
        .map(Connections::Fixed)
        .map_err(|e| format!("{e}, or auto"))
}

/// A rate in bytes per second: a size (K, M, G suffixes) of at least 1 KiB.
fn parse_rate(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    if v < 1024 {
        return Err(format!(
            "'{s}' is below the smallest rate, 1K (bytes per second)"
        ));
    }
    Ok(v)
}

fn parse_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=plan::MAX_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a connection count from 1 to {}",
            plan::MAX_CONNECTIONS
        )),
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.001..=86_400.0).contains(&v) {
        return Err(format!("'{s}' seconds is out of range (0.001 to 86400)"));
    }
    Ok(v)
}

/// Runs what the command line asks for and returns the exit code.
pub fn run(cli: Cli) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ftpseg: error: cannot start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    let result = match cli.command {
        Some(Command::Demo(args)) => runtime.block_on(crate::commands::demo::run(args)),
        Some(Command::Serve(args)) => runtime.block_on(crate::commands::demo::serve(args)),
        Some(Command::Put(args)) => runtime.block_on(put(args)),
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ftpseg", &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Error::io("cannot write", "standard output", e))
        }
        Some(Command::Bench(args)) => runtime.block_on(crate::commands::bench::run(args)),
        None => runtime.block_on(get(cli.get)),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("ftpseg: error: {e}");
            e.exit_code()
        }
    }
}

/// Builds the job from the arguments (pure apart from reading FTPSEG_PASSWORD).
pub fn job_from_args(args: &GetArgs) -> Result<Job, Error> {
    job_for_url(
        args,
        args.url.as_deref().unwrap_or_default(),
        args.output.clone(),
    )
}

/// Builds the job for `raw` (a file URL, or a folder URL ending in `/` for a batch's
/// template) with the options of `args`, saving to `output` [default: the remote name].
pub fn job_for_url(args: &GetArgs, raw: &str, output: Option<PathBuf>) -> Result<Job, Error> {
    let mut url = match raw.strip_suffix('/') {
        Some(folder) => {
            let mut u = FtpUrl::parse(&format!("{folder}/_"))?;
            u.path.pop();
            u
        }
        None => FtpUrl::parse(raw)?,
    };
    let verify = tls_settings(&mut url, args.ftps, args.ca_file.as_ref(), args.insecure)?;
    let output = match output {
        Some(p) => p,
        None => PathBuf::from(url.file_name()?),
    };
    let creds = credentials(&url, args)?;
    Ok(Job {
        url,
        creds,
        output,
        connections: match args.connections {
            Connections::Fixed(n) => n,
            Connections::Auto => crate::download::autotune::MAX,
        },
        auto_connections: args.connections == Connections::Auto,
        min_range: args.min_range.max(64 << 10),
        timeouts: Timeouts {
            connect: Duration::from_secs_f64(args.connect_timeout),
            reply: Duration::from_secs_f64(args.reply_timeout),
            data_idle: Duration::from_secs_f64(args.stall_timeout),
        },
        max_tries: args.max_tries,
        force: args.force,
        restart: args.restart,
        checkpoint_interval: Duration::from_secs_f64(args.checkpoint_interval),
        use_pasv_address: args.use_pasv_address,
        active: args.active,
        busy_retry: Duration::from_secs_f64(args.busy_retry),
        no_rang: args.no_rang,
        straggler_timeout: Duration::from_secs_f64(args.straggler_timeout),
        verify,
        pool: None,
        limit: None,
        rate_limits: args
            .limit_rate
            .map(|r| std::sync::Arc::new(crate::ftp::ratelimit::RateLimit::new(r)))
            .into_iter()
            .collect(),
        per_file_rate: args.limit_rate_per_file,
        digest: None,
        storage: crate::storage::Storage::File,
    })
}

/// The TLS settings from `--ftps`, `--ca-file` and `--insecure`: `--ftps` turns an ftp:// URL
/// into explicit TLS; the certificate options on a plain URL are a usage error.
fn tls_settings(
    url: &mut FtpUrl,
    ftps: bool,
    ca_file: Option<&PathBuf>,
    insecure: bool,
) -> Result<Verify, Error> {
    if ftps && url.tls == crate::ftp::url::Tls::None {
        url.tls = crate::ftp::url::Tls::Explicit;
    }
    let verify = match (ca_file, insecure) {
        (Some(path), _) => Verify::CaFile(path.clone()),
        (None, true) => Verify::Insecure,
        (None, false) => Verify::SystemRoots,
    };
    if verify != Verify::SystemRoots && !url.tls.is_tls() {
        // Never let the user believe a plain connection is protected.
        return Err(Error::Usage(format!(
            "{} applies to FTPS only, and {} is plain FTP; add --ftps, or use an ftpes://              (explicit TLS) or ftps:// (implicit TLS) URL",
            if insecure { "--insecure" } else { "--ca-file" },
            url.redacted()
        )));
    }
    Ok(verify)
}

/// Who to log in as, and the password, from (in this order) the URL, `FTPSEG_PASSWORD`, the
/// netrc file, or a prompt on the terminal. Without a user anywhere: anonymous.
fn credentials(url: &FtpUrl, args: &GetArgs) -> Result<Credentials, Error> {
    credentials_from(url, args.netrc_file.as_ref(), args.no_netrc)
}

/// [`credentials`] from the netrc options alone (shared by `get` and `put`).
fn credentials_from(
    url: &FtpUrl,
    netrc_file: Option<&PathBuf>,
    no_netrc: bool,
) -> Result<Credentials, Error> {
    let host = url.host_for_connect();
    let entries = read_netrc(netrc_file, no_netrc)?;
    let entry = entries
        .as_deref()
        .and_then(|e| crate::ftp::netrc::lookup(e, &host, url.user.as_deref()));
    let user = match (&url.user, entry.and_then(|e| e.login.clone())) {
        (Some(u), _) => u.clone(),
        (None, Some(login)) => login,
        (None, None) => return Ok(Credentials::anonymous()),
    };
    if user == "anonymous" || user == "ftp" {
        let password = url
            .password
            .clone()
            .or_else(|| entry.and_then(|e| e.password.clone()))
            .unwrap_or_else(|| Credentials::anonymous().password);
        return Ok(Credentials { user, password });
    }
    let password = match url.password.clone() {
        Some(p) => p,
        None => match std::env::var("FTPSEG_PASSWORD") {
            Ok(p) => p,
            Err(_) => match entry.and_then(|e| e.password.clone()) {
                Some(p) => p,
                None => prompt_password(&user, &host)?,
            },
        },
    };
    Ok(Credentials { user, password })
}

/// The netrc entries: from `--netrc-file` (which must be readable), else `~/.netrc` if it
/// exists, else none.
fn read_netrc(
    netrc_file: Option<&PathBuf>,
    no_netrc: bool,
) -> Result<Option<Vec<crate::ftp::netrc::Entry>>, Error> {
    if no_netrc {
        return Ok(None);
    }
    let (path, required) = match netrc_file {
        Some(p) => (p.clone(), true),
        None => match std::env::var_os("HOME") {
            Some(home) => (PathBuf::from(home).join(".netrc"), false),
            None => return Ok(None),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Credentials(format!(
                "cannot read the netrc file {}: {e}",
                path.display()
            )));
        }
    };
    crate::ftp::netrc::parse(&text).map(Some).map_err(|e| {
        Error::Credentials(format!(
            "the netrc file {} cannot be read: {e}; fix it, or pass --no-netrc",
            path.display()
        ))
    })
}

/// Asks for the password on the terminal, without echo. Not on a terminal: an error saying
/// where a password can come from instead.
fn prompt_password(user: &str, host: &str) -> Result<String, Error> {
    use std::io::{BufRead, IsTerminal};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Credentials(format!(
            "no password for {user}@{host}: set FTPSEG_PASSWORD, add it to ~/.netrc \
             (or --netrc-file), or run ftpseg in a terminal to be asked"
        )));
    }
    let fd = stdin.as_fd();
    let saved = rustix::termios::tcgetattr(fd).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &quiet);
    }
    eprint!("Password for {user}@{host}: ");
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, t);
    }
    eprintln!();
    read.map_err(|e| Error::Credentials(format!("cannot read the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn get(args: GetArgs) -> Result<(), Error> {
    if args.bulk.wants_batch(args.url.as_deref()) {
        return crate::batch::run(&args, &args.bulk).await;
    }
    let job = job_from_args(&args)?;
    let mode = if args.quiet {
        Mode::Quiet
    } else if args.plain {
        Mode::Plain
    } else {
        Mode::Auto
    };
    let mut progress = Progress::new(mode);
    let outcome = download_with_ctrl_c(&job, &mut progress)
        .await
        .map_err(|e| e.scrub(&job.creds.password))?;
    if !args.quiet {
        println!("{}", outcome.summary());
    }
    Ok(())
}

/// Builds the upload job from `ftpseg put` arguments (pure apart from reading
/// FTPSEG_PASSWORD and netrc).
pub fn put_job_from_args(args: &PutArgs) -> Result<crate::upload::PutJob, Error> {
    let (raw, locals) = args
        .paths
        .split_last()
        .ok_or_else(|| Error::Usage("give the local files, then the remote URL".into()))?;
    let into_dir = raw.ends_with('/') || locals.len() > 1 || args.recursive;
    let mut url = if raw.ends_with('/') {
        // A folder URL: parse it with a placeholder file name, then keep the folder.
        let mut u = FtpUrl::parse(&format!("{raw}_"))?;
        u.path.pop();
        u.path = u.path.trim_end_matches('/').to_owned();
        u
    } else {
        FtpUrl::parse(raw)?
    };
    if into_dir && !raw.ends_with('/') && (locals.len() > 1 || args.recursive) {
        return Err(Error::Usage(format!(
            "several files or -r go into a folder: end the URL with / ({raw}/)"
        )));
    }
    let verify = tls_settings(&mut url, args.ftps, args.ca_file.as_ref(), args.insecure)?;
    let creds = credentials_from(&url, args.netrc_file.as_ref(), args.no_netrc)?;
    Ok(crate::upload::PutJob {
        url,
        creds,
        locals: locals.iter().map(PathBuf::from).collect(),
        into_dir,
        recursive: args.recursive,
        connections: args.connections,
        timeouts: Timeouts {
            connect: Duration::from_secs_f64(args.connect_timeout),
            reply: Duration::from_secs_f64(args.reply_timeout),
            data_idle: Duration::from_secs_f64(args.stall_timeout),
        },
        max_tries: args.max_tries,
        force: args.force,
        restart: args.restart,
        temp_suffix: (!args.no_temp).then(|| args.temp_suffix.clone()),
        use_pasv_address: args.use_pasv_address,
        active: args.active,
        verify,
        busy_retry: Duration::from_secs_f64(args.busy_retry),
    })
}

async fn put(args: PutArgs) -> Result<(), Error> {
    let job = put_job_from_args(&args)?;
    let mode = if args.quiet {
        Mode::Quiet
    } else if args.plain {
        Mode::Plain
    } else {
        Mode::Auto
    };
    let mut progress = Progress::new(mode);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
        }
        let _ = tx.send(true);
    });
    let result = crate::upload::put(&job, &mut progress, rx).await;
    signals.abort();
    progress.finish();
    let outcomes = result.map_err(|e| e.scrub(&job.creds.password))?;
    if !args.quiet {
        for o in outcomes {
            println!("{}", o.summary());
        }
    }
    Ok(())
}

/// Runs a download that Ctrl-C (or SIGTERM) interrupts cleanly, after a final checkpoint.
pub async fn download_with_ctrl_c(job: &Job, progress: &mut Progress) -> Result<Outcome, Error> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = terminated => {},
        }
        let _ = tx.send(true);
        // A second Ctrl-C does not wait for the final checkpoint (what is on disk stays
        // consistent: the manifest only ever records flushed bytes).
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("ftpseg: interrupted again: exiting at once");
        std::process::exit(crate::error::exit::INTERRUPTED);
    });
    let result = download::download(job, progress, rx).await;
    signals.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cli_parses_get_and_demo() {
        let cli = Cli::try_parse_from(["ftpseg", "-n", "4", "ftp://h/f.iso"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.get.connections, Connections::Fixed(4));
        let cli = Cli::try_parse_from(["ftpseg", "-n", "auto", "ftp://h/f.iso"]).unwrap();
        assert_eq!(cli.get.connections, Connections::Auto);
        let cli = Cli::try_parse_from(["ftpseg", "ftp://h/f.iso"]).unwrap();
        assert_eq!(
            cli.get.connections,
            Connections::Fixed(plan::DEFAULT_CONNECTIONS)
        );
        let cli = Cli::try_parse_from(["ftpseg", "demo", "--size", "1M"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Demo(_))));
        assert!(Cli::try_parse_from(["ftpseg", "-n", "65", "ftp://h/f"]).is_err());
        assert!(Cli::try_parse_from(["ftpseg"]).is_err());
    }

    #[test]
    fn ftps_flag_and_schemes_choose_tls() {
        use crate::ftp::url::Tls;
        let job = |args: &[&str]| {
            let mut all = vec!["ftpseg"];
            all.extend_from_slice(args);
            job_from_args(&Cli::try_parse_from(all).unwrap().get)
        };
        assert_eq!(job(&["ftp://h/x"]).unwrap().url.tls, Tls::None);
        let j = job(&["--ftps", "ftp://h/x"]).unwrap();
        assert_eq!(j.url.tls, Tls::Explicit);
        assert_eq!(j.url.redacted(), "ftpes://h/x");
        assert_eq!(j.verify, Verify::SystemRoots);
        assert_eq!(job(&["ftpes://h/x"]).unwrap().url.tls, Tls::Explicit);
        assert_eq!(job(&["ftps://h/x"]).unwrap().url.tls, Tls::Implicit);
        assert_eq!(
            job(&["--ftps", "ftps://h/x"]).unwrap().url.tls,
            Tls::Implicit
        );
        let j = job(&["--ca-file", "/c.pem", "ftpes://h/x"]).unwrap();
        assert_eq!(j.verify, Verify::CaFile(PathBuf::from("/c.pem")));
        assert_eq!(
            job(&["--insecure", "ftps://h/x"]).unwrap().verify,
            Verify::Insecure
        );
        // TLS options on a plain URL are a mistake, not something to ignore.
        for args in [
            &["--insecure", "ftp://h/x"][..],
            &["--ca-file", "c", "ftp://h/x"],
        ] {
            let e = job(args).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE, "{e}");
            assert!(e.to_string().contains("--ftps"), "{e}");
        }
        assert!(
            Cli::try_parse_from(["ftpseg", "--insecure", "--ca-file", "c", "ftpes://h/x"]).is_err()
        );
    }

    #[test]
    fn job_defaults_output_to_remote_name() {
        let cli = Cli::try_parse_from(["ftpseg", "ftp://h/pub/x.iso"]).unwrap();
        let job = job_from_args(&cli.get).unwrap();
        assert_eq!(job.output, PathBuf::from("x.iso"));
        assert_eq!(job.creds.user, "anonymous");
    }
}
