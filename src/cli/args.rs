//! What was typed: the commands and their flags, as clap parses them (the first stage; the
//! second, [`super::jobs`], turns them into checked jobs). The flags several commands share
//! come from the groups in [`super::groups`].

use std::path::PathBuf;

use clap::{Arg, Args, Parser, Subcommand};

use super::config::Hosts;
use super::groups::{CredentialOpts, DataConnOpts, NetworkOpts, OutputOpts, TlsOpts};
use super::parse::{
    parse_connections, parse_connections_or_auto, parse_rate, parse_secs, parse_size,
};
use crate::download::{Connections, plan};
use crate::integrity::checksum::Expected;
use crate::storage::Io;

/// The shared flags `ftpseg URL` words at more length than the groups do.
pub(crate) const GET_WORDING: &[(&str, &str)] = &[
    (
        "use_pasv_address",
        "Connect data connections to the address the server names in its PASV reply, instead \
         of the control connection's address (only for servers behind unusual setups: a \
         hostile server could point ftpseg at another host)",
    ),
    (
        "active",
        "Active mode: the server opens each data connection to ftpseg (PORT, or EPRT over \
         IPv6), to a listener on the control connection's local address that accepts only the \
         server, instead of ftpseg connecting to it (EPSV/PASV). For servers or firewalls that \
         need it",
    ),
];

/// The shared flags `ftpseg put` words for an upload.
pub(crate) const PUT_WORDING: &[(&str, &str)] = &[
    (
        "stall_timeout",
        "Seconds in which a data connection accepts not a single byte before it counts as \
         stalled and is replaced",
    ),
    ("ftps", "Use explicit TLS (AUTH TLS) with an ftp:// URL"),
    (
        "ca_file",
        "Trust only the CA certificates in this PEM file for FTPS",
    ),
    ("insecure", "FTPS without checking the server's certificate"),
];

/// The shared flags `ftpseg bench` words its own way.
pub(crate) const BENCH_WORDING: &[(&str, &str)] = &[
    (
        "ftps",
        "Use FTP over explicit TLS (AUTH TLS) with an ftp:// URL",
    ),
    (
        "ca_file",
        "Trust the server certificates in this PEM file (FTPS)",
    ),
    ("insecure", "Do not verify the server's certificate (FTPS)"),
    (
        "netrc_file",
        "Read credentials from this netrc file [default: ~/.netrc]",
    ),
    ("no_netrc", "Never read a netrc file"),
];

/// Gives the flags named in `wording` (by id) a command's own help text; the others, and
/// everything else about a flag (name, default, parser, conflicts, place in the help), stay.
fn reword(wording: &'static [(&'static str, &'static str)]) -> impl FnMut(Arg) -> Arg {
    move |arg| match wording.iter().find(|(id, _)| arg.get_id() == *id) {
        Some((_, help)) => arg.help(*help),
        None => arg,
    }
}

/// The config file, for `--help` and the man page.
const CONFIG_HELP: &str = "\
CONFIG FILE
  $XDG_CONFIG_HOME/ftpseg/config.toml (else ~/.config/ftpseg/config.toml), or --config FILE,
  or FTPSEG_CONFIG=FILE; --no-config reads none. TOML; the keys are the long options without
  the leading --, with the same values:

    connections = 16
    limit-rate = \"20M\"
    stall-timeout = 60
    ca-file = \"~/corp-ca.pem\"     # for ftpes:// and ftps:// URLs only

    [put]                          # ftpseg put's own options
    connections = 2

    [bench]
    connections = [1, 4, 8]

    [hosts.\"mirror.example.org\"]  # one server: connections, max-connections-per-host,
    connections = 3                # ftps, active, use-pasv-address, ca-file, insecure
    ftps = true

  Top-level keys are the options of `ftpseg URL`; put and bench take from them the options
  they share (timeouts, output, netrc, data connection, TLS). A flag on the command line
  overrides the file, a host table the rest of the file. force, restart, output and checksum
  are for one run and refused in the file; so are passwords (use a netrc file or
  FTPSEG_PASSWORD). A bad key or value stops ftpseg with its file and line (exit 2).
  `ftpseg config show [ARGS...]` prints the settings in effect and where each comes from.";

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
    subcommand_negates_reqs = true,
    after_long_help = CONFIG_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub get: GetArgs,

    /// Read settings from this TOML file [default: $XDG_CONFIG_HOME/ftpseg/config.toml, else
    /// ~/.config/ftpseg/config.toml; also FTPSEG_CONFIG=FILE]. Flags override it
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "no_config")]
    pub config: Option<PathBuf>,

    /// Read no config file
    #[arg(long, global = true)]
    pub no_config: bool,
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
    /// The config file: what it sets and where each setting in effect comes from
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `ftpseg config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the settings a command would run with and where each comes from (command line,
    /// config file and line, or default): `ftpseg config show -n 4 URL`, `ftpseg config show
    /// put`. Passwords are never shown
    Show {
        /// The command's arguments, as they would follow `ftpseg` (a URL applies its host's
        /// table)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Print the path of the config file ftpseg reads, and whether it exists
    Path,
}

/// `ftpseg [OPTIONS] <URL>`: one file, or a batch with the options of [`BulkArgs`].
#[derive(Debug, Args)]
pub struct GetArgs {
    // The help is an attribute, not a doc comment: rustdoc would read `[:password]` as a link.
    #[arg(
        required_unless_present_any = ["input_file", "metalink"],
        help = "ftp://[user[:password]@]host[:port]/path; ftpes:// for FTP over explicit TLS \
                (AUTH TLS), ftps:// for implicit TLS (port 990). A password here is visible to \
                other users of this machine: prefer FTPSEG_PASSWORD"
    )]
    pub url: Option<String>,

    /// Where to save the file [default: the remote file's name, in the current folder]
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Another server of the same file (repeat for more): all are used at once, each within
    /// --max-connections-per-host, -n connections in all; a mirror whose SIZE differs is left
    /// out, one that fails for good is dropped while the others take its ranges over
    #[arg(long, value_name = "URL")]
    pub mirror: Vec<String>,

    #[command(flatten)]
    pub download: DownloadOpts,

    /// Many files: more URLs, -i, -d, -r, -j, budgets, checksums, --json (docs/bulk.md)
    #[command(flatten)]
    pub bulk: BulkArgs,
}

/// The options of every download (one file, each file of a batch, bench's and demo's runs).
#[derive(Clone, Debug, Args)]
#[command(mut_args = reword(GET_WORDING))]
pub struct DownloadOpts {
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

    #[command(flatten)]
    pub network: NetworkOpts,

    /// How bytes get into the file: received straight into a memory map of it (mmap), spliced
    /// from the socket (splice), or written from a buffer (pwrite); auto picks the measured
    /// best for the case
    #[arg(long, value_enum, default_value_t = Io::Auto, value_name = "HOW")]
    pub io: Io,

    /// Seconds between checkpoints (flush + manifest save)
    #[arg(long, default_value_t = 1.0, value_name = "SECS", value_parser = parse_secs)]
    pub checkpoint_interval: f64,

    #[command(flatten)]
    pub output: OutputOpts,

    #[command(flatten)]
    pub credentials: CredentialOpts,

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

    #[command(flatten)]
    pub data: DataConnOpts,

    #[command(flatten)]
    pub tls: TlsOpts,

    /// The config file's `[hosts."NAME"]` tables (not a flag).
    #[arg(skip)]
    pub hosts: Hosts,
}

/// The options of batches (flattened into the download arguments).
#[derive(Debug, Clone, Default, Args)]
pub struct BulkArgs {
    /// More URLs to download (each may end in a glob such as *.iso; quote it for the shell)
    #[arg(value_name = "MORE_URLS")]
    pub more_urls: Vec<String>,

    /// Download the files of a Metalink 4 file (.meta4): each from all its ftp:// mirrors at
    /// once, checked against its hash (also: give FILE.meta4 as the URL)
    #[arg(long, value_name = "FILE")]
    pub metalink: Option<PathBuf>,

    /// Read URLs from FILE, one a line (`#` comments; an optional output name after the URL);
    /// `-` reads standard input
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input_file: Option<String>,

    /// Save files into DIR (created if missing) [default: the current folder]
    #[arg(short = 'd', long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Download folders (URLs ending in /) with everything in them, recreating the tree
    #[arg(short = 'r', long)]
    pub recursive: bool,

    /// Files downloaded at once
    #[arg(short = 'j', long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Connections to one server at once, across all the files in flight (listings included)
    /// [default: the larger of -n and -j]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_connections_per_host: Option<u16>,

    /// Expected checksum of the (single) file: ALGO=HEX with sha256, sha512, sha1, md5 or
    /// blake3
    #[arg(long, value_name = "ALGO=HEX", value_parser = Expected::parse)]
    pub checksum: Option<Expected>,

    /// Verify each file against a SHA256SUMS-style list: a local FILE, or `auto` to find one
    /// (SHA256SUMS, SHA512SUMS, MD5SUMS...) in each file's folder on the server
    #[arg(long, value_name = "FILE|auto")]
    pub checksum_file: Option<String>,

    /// Ask the server for its own hash of each file (HASH, XSHA256, XMD5, SITE MD5, where it
    /// offers them) and compare it with the downloaded bytes
    #[arg(long)]
    pub verify_remote: bool,

    /// Print one JSON object per event on standard output (and no human summary there)
    #[arg(long)]
    pub json: bool,

    /// Show no progress bars or lines (messages and the summary still appear)
    #[arg(long)]
    pub no_progress: bool,

    /// Say more: each file's notes and plain progress lines
    #[arg(short = 'v', long, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Whether `dir` came from the config file (not a flag): there it is where downloads go,
    /// without making a single download a batch.
    #[arg(skip)]
    pub dir_from_file: bool,
}

impl BulkArgs {
    /// Whether these options ask for a batch rather than the classic single download.
    pub fn wants_batch(&self, url: Option<&str>) -> bool {
        !self.more_urls.is_empty()
            || self.input_file.is_some()
            || self.metalink.is_some()
            || (self.dir.is_some() && !self.dir_from_file)
            || self.recursive
            || self.checksum.is_some()
            || self.checksum_file.is_some()
            || self.verify_remote
            || self.json
            || url.is_some_and(|u| crate::ftp::listing::has_glob(u.rsplit('/').next().unwrap_or(u)))
    }
}

/// `ftpseg put LOCAL... URL`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ftpseg put big.iso ftp://user@host/pub/big.iso\n  \
                  ftpseg put -n 4 a.bin b.bin ftp://user@host/incoming/\n  \
                  ftpseg put -r photos ftp://user@host/backup/",
    mut_args = reword(PUT_WORDING)
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

    #[command(flatten)]
    pub network: NetworkOpts,

    /// Seconds a connection refused as "too many connections" waits before trying again
    #[arg(long, default_value_t = 15.0, value_name = "SECS", value_parser = parse_secs)]
    pub busy_retry: f64,

    #[command(flatten)]
    pub output: OutputOpts,

    /// Say more: where each file went, the bytes sent and every check it passed
    #[arg(short = 'v', long, conflicts_with = "quiet")]
    pub verbose: bool,

    #[command(flatten)]
    pub credentials: CredentialOpts,

    #[command(flatten)]
    pub data: DataConnOpts,

    #[command(flatten)]
    pub tls: TlsOpts,

    /// The config file's `[hosts."NAME"]` tables (not a flag).
    #[arg(skip)]
    pub hosts: Hosts,
}

/// `ftpseg bench URL`.
#[derive(Debug, Args)]
#[command(mut_args = reword(BENCH_WORDING))]
pub struct BenchArgs {
    // The help is an attribute, not a doc comment: rustdoc would read `[:password]` as a link.
    #[arg(
        required = true,
        value_name = "URL",
        help = "ftp://[user[:password]@]host[:port]/path of a large file (ftpes:// or ftps:// \
                for TLS); several URLs (mirrors of one file) are measured in turn and ranked"
    )]
    pub urls: Vec<String>,
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
    /// How bytes get into the file (as for get: mmap, splice, pwrite or auto)
    #[arg(long, value_enum, default_value_t = Io::Auto, value_name = "HOW", conflicts_with = "discard")]
    pub io: Io,
    #[command(flatten)]
    pub tls: TlsOpts,
    #[command(flatten)]
    pub credentials: CredentialOpts,
    #[command(flatten)]
    pub data: DataConnOpts,
    /// The config file's `[hosts."NAME"]` tables (not a flag).
    #[arg(skip)]
    pub hosts: Hosts,
}

/// `ftpseg demo`.
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

/// `ftpseg serve ROOT` (hidden).
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
    /// Per-connection throttle of uploads (STOR, APPE), bytes per second (K, M, G suffixes)
    #[arg(long, value_parser = parse_size, value_name = "RATE")]
    pub upload_rate: Option<u64>,
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
    /// Close sessions whose control connection is idle this many seconds (as vsftpd's
    /// idle_session_timeout)
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// On SIGINT or SIGTERM, write the server's counters here as JSON before exiting
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
}
