//! Many files in one run: several URLs, `-i FILE` (one URL a line), globs in the last path
//! component, `-r` folders (MLSD, with LIST and NLST as fallbacks), all downloaded into `-d DIR`
//! with safe local names, `-j` files at once, one connection budget per server shared by every
//! file in flight (`--max-connections-per-host`, [`crate::ftp::pool`]), logged-in sessions reused
//! across files, checksums (`--checksum`, `--checksum-file FILE|auto`, `--verify-remote`), and
//! one summary at the end (`--json` for scripts, [`crate::ui::events`]).
//!
//! Pure parts (input file lines, the skip decision, MDTM to a time, the exit code of a batch)
//! are plain functions with tests; the run calls [`download::download`] once per file. A file
//! that fails is reported with its reason and the others go on; the exit code is non-zero when
//! any file failed. Design: docs/bulk.md.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use serde_json::json;
use tokio::sync::watch;

use crate::cli::GetArgs;
use crate::download::{self, Job, Outcome};
use crate::error::{Error, SessionContext, exit};
use crate::ftp::dir::ListCommand;
use crate::ftp::listing::{self, Entry, Kind};
use crate::ftp::pool::{HostPool, Permit};
use crate::ftp::upload::{HashCommand, hash_commands};
use crate::ftp::url::FtpUrl;
use crate::ftp::{Session, SessionError};
use crate::integrity::checksum::{self, Algo, Expected, SumLine};
use crate::integrity::digest::PrefixDigest;
use crate::ui::events::Events;
use crate::ui::human_bytes;
use crate::ui::progress::{Mode, Progress};

/// The options of batches (flattened into the download arguments).
#[derive(Debug, Clone, Default, Args)]
pub struct BulkArgs {
    /// More URLs to download (each may end in a glob such as *.iso; quote it for the shell)
    #[arg(value_name = "MORE_URLS")]
    pub more_urls: Vec<String>,

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
}

impl BulkArgs {
    /// Whether these options ask for a batch rather than the classic single download.
    pub fn wants_batch(&self, url: Option<&str>) -> bool {
        !self.more_urls.is_empty()
            || self.input_file.is_some()
            || self.dir.is_some()
            || self.recursive
            || self.checksum.is_some()
            || self.checksum_file.is_some()
            || self.verify_remote
            || self.json
            || self.max_connections_per_host.is_some()
            || url.is_some_and(|u| listing::has_glob(last_component(u)))
    }
}

fn last_component(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// One line of an input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputLine {
    /// 1-based line number.
    pub line: usize,
    pub url: String,
    /// Output name (relative to `-d`), if the line gives one.
    pub output: Option<String>,
}

/// Parses an input file: one URL a line, an optional output name after whitespace, `#`
/// comments and blank lines skipped. Lines are never rejected here: the URL is checked later,
/// so a bad line fails alone.
pub fn parse_input(text: &str) -> Vec<InputLine> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (url, rest) = match line.split_once(char::is_whitespace) {
            Some((u, r)) => (u, r.trim()),
            None => (line, ""),
        };
        out.push(InputLine {
            line: i + 1,
            url: url.to_owned(),
            output: (!rest.is_empty()).then(|| rest.to_owned()),
        });
    }
    out
}

/// `YYYYMMDDHHMMSS` (UTC, from MDTM) as a time; `None` when malformed.
pub fn mdtm_to_time(mdtm: &str) -> Option<SystemTime> {
    let d = mdtm.get(..14)?;
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |a: usize, b: usize| d[a..b].parse::<i64>().ok();
    let (y, mo, day, h, mi, s) = (
        n(0, 4)?,
        n(4, 6)?,
        n(6, 8)?,
        n(8, 10)?,
        n(10, 12)?,
        n(12, 14)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from 1970-01-01 to y-mo-day (proleptic Gregorian).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// What to do with a local file before downloading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    /// Nothing there (or a partial download with its manifest): download (or resume).
    Fetch,
    /// Already complete: same size and same modification time as the server's.
    Complete,
    /// Same size, and the server gives no modification time to compare.
    SameSizeNoTime,
    /// Something else is there: leave it alone (the download refuses without --force).
    Different,
}

/// The skip decision from the local file's (size, mtime) and the server's.
pub fn local_state(
    local: Option<(u64, SystemTime)>,
    remote_size: Option<u64>,
    remote_mtime: Option<SystemTime>,
) -> Local {
    let Some((size, mtime)) = local else {
        return Local::Fetch;
    };
    match (remote_size, remote_mtime) {
        (Some(rs), Some(rt)) if rs == size && same_second(rt, mtime) => Local::Complete,
        (Some(rs), None) if rs == size => Local::SameSizeNoTime,
        _ => Local::Different,
    }
}

fn same_second(a: SystemTime, b: SystemTime) -> bool {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    secs(a) == secs(b)
}

/// The exit code of a whole batch from the codes of its failed files: 0 when none failed;
/// 130 if any was interrupted; a checksum mismatch (15) before anything else, since it means
/// corrupt data; otherwise the first failure's code.
pub fn batch_exit_code(failed: &[i32]) -> i32 {
    if failed.is_empty() {
        exit::OK
    } else if failed.contains(&exit::INTERRUPTED) {
        exit::INTERRUPTED
    } else if failed.contains(&exit::CHECKSUM) {
        exit::CHECKSUM
    } else {
        failed[0]
    }
}

/// A checksum file: its name and its lines.
type SumsFile = (String, Vec<SumLine>);

/// One file to download.
#[derive(Clone, Debug)]
struct FileJob {
    /// Index of the server ([`Ctx::hosts`]).
    host: usize,
    url: FtpUrl,
    output: PathBuf,
    /// The remote folder (relative to the login folder, `""` for it) and the file's name.
    folder: String,
    name: String,
    /// From the listing, when it said.
    size: Option<u64>,
    mdtm: Option<String>,
}

/// A server of the batch: its job template (credentials, options) and its budget.
struct Host {
    template: Job,
    pool: Arc<HostPool>,
    /// The login folder (PWD of the first session), to come back to after a listing.
    home: tokio::sync::Mutex<Option<String>>,
}

struct Ctx {
    hosts: Vec<Host>,
    events: Events,
    mode: Mode,
    quiet: bool,
    verbose: bool,
    checksum: Option<Expected>,
    /// `--checksum-file FILE`: its name and lines.
    sums: Option<SumsFile>,
    sums_auto: bool,
    /// `--checksum-file auto`: per (host, folder), the checksum files found there.
    auto_sums: tokio::sync::Mutex<HashMap<(usize, String), Vec<SumsFile>>>,
    verify_remote: bool,
    stop: watch::Receiver<bool>,
}

/// How one file ended.
enum FileEnd {
    Done {
        outcome: Outcome,
        checks: Vec<String>,
    },
    Skipped(String),
    Failed(Error),
}

/// Runs a batch. The summary is printed (or emitted as JSON); the error, if any, says how
/// many files failed and carries the batch's exit code.
pub async fn run(get: &GetArgs, bulk: &BulkArgs) -> Result<(), Error> {
    let started = Instant::now();
    let events = Events::new(bulk.json);
    let quiet = get.quiet;
    let say = |msg: &str| {
        if !quiet {
            eprintln!("ftpseg: {msg}");
        }
    };

    // 1. The inputs: command-line URLs, then the input file's lines.
    let mut inputs: Vec<(String, String, Option<String>)> = Vec::new(); // (label, url, output)
    if let Some(u) = &get.url {
        inputs.push((u.clone(), u.clone(), None));
    }
    for u in &bulk.more_urls {
        inputs.push((u.clone(), u.clone(), None));
    }
    if let Some(path) = &bulk.input_file {
        let text = if path == "-" {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| Error::io("cannot read", "standard input", e))?
        } else {
            std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?
        };
        for l in parse_input(&text) {
            inputs.push((format!("{path}:{}", l.line), l.url, l.output));
        }
    }
    if inputs.is_empty() {
        return Err(Error::Usage(
            "no URL to download (give URLs, or -i FILE)".into(),
        ));
    }
    if get.output.is_some() && (inputs.len() > 1 || bulk.recursive) {
        return Err(Error::Usage(
            "-o names one file; with several files use -d DIR".into(),
        ));
    }
    let sums = match bulk.checksum_file.as_deref() {
        None | Some("auto") => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
            let (lines, bad) = checksum::parse_sums(&text);
            if lines.is_empty() {
                return Err(Error::Usage(format!(
                    "{path} has no checksum line (expected `HEX  NAME` or `SHA256 (NAME) = HEX`)"
                )));
            }
            if !bad.is_empty() {
                say(&format!("{path}: ignoring unreadable line(s) {bad:?}"));
            }
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some((name, lines))
        }
    };
    let base = bulk.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&base).map_err(|e| Error::io("cannot create the folder", &base, e))?;

    // Ctrl-C or SIGTERM: every download saves its progress and stops.
    let (tx, stop) = watch::channel(false);
    let signals = tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
        }
        let _ = tx.send(true);
    });

    let mode = if quiet {
        Mode::Quiet
    } else if bulk.verbose {
        Mode::Plain
    } else if bulk.no_progress || bulk.json || bulk.jobs > 1 {
        Mode::Quiet
    } else if get.plain {
        Mode::Plain
    } else {
        Mode::Auto
    };
    let budget = bulk
        .max_connections_per_host
        .map(usize::from)
        .unwrap_or_else(|| {
            let n = match get.connections {
                crate::download::Connections::Fixed(n) => n,
                // -n auto may grow to this many.
                crate::download::Connections::Auto => crate::download::autotune::MAX,
            };
            n.max(usize::from(bulk.jobs))
        });
    let mut ctx = Ctx {
        hosts: Vec::new(),
        events,
        mode,
        quiet,
        verbose: bulk.verbose,
        checksum: bulk.checksum.clone(),
        sums,
        sums_auto: bulk.checksum_file.as_deref() == Some("auto"),
        auto_sums: tokio::sync::Mutex::new(HashMap::new()),
        verify_remote: bulk.verify_remote,
        stop,
    };

    // 2. Expand every input into files (listing folders and globs on the server).
    let mut results: Vec<(String, Option<PathBuf>, FileEnd)> = Vec::new();
    let mut files: Vec<FileJob> = Vec::new();
    let mut host_keys: HashMap<String, usize> = HashMap::new();
    for (label, raw, output) in &inputs {
        match expand(
            &mut ctx,
            &mut host_keys,
            get,
            bulk,
            &base,
            raw,
            output.as_deref(),
            budget,
        )
        .await
        {
            Ok(found) => files.extend(found),
            Err(e) => results.push((label.clone(), None, FileEnd::Failed(e))),
        }
    }
    // Two inputs writing the same local file: the second fails (nothing is clobbered).
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    for f in files {
        if seen.insert(f.output.clone()) {
            unique.push(f);
        } else {
            let e = Error::Usage(format!(
                "{} is the output of another file of this batch; give this one another name",
                f.output.display()
            ));
            results.push((f.url.redacted(), Some(f.output.clone()), FileEnd::Failed(e)));
        }
    }
    if ctx.checksum.is_some() && unique.len() + results.len() > 1 {
        return Err(Error::Usage(
            "--checksum is for one file; for several use --checksum-file".into(),
        ));
    }
    for (label, path, end) in &results {
        report(&ctx, label, path.as_deref(), end);
    }

    // 3. Download, -j at a time.
    let ctx = Arc::new(ctx);
    let jobs = Arc::new(tokio::sync::Semaphore::new(usize::from(bulk.jobs)));
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in unique.into_iter().enumerate() {
        let ctx = ctx.clone();
        // Turns are taken here, in the list's order: tasks waiting for one would start in
        // whatever order the runtime first polled them (with -j 1, the second file could come
        // first; tests/bulk.rs `killed_batch_...` failed 2 times in 12 under load that way).
        let Ok(turn) = jobs.clone().acquire_owned().await else {
            break;
        };
        set.spawn(async move {
            let _turn = turn;
            let label = f.url.redacted();
            let path = f.output.clone();
            let end = one_file(&ctx, f).await;
            report(&ctx, &label, Some(&path), &end);
            (i, label, path, end)
        });
    }
    let mut done: Vec<(usize, String, PathBuf, FileEnd)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => done.push(r),
            Err(e) => results.push((
                "?".into(),
                None,
                FileEnd::Failed(Error::Internal(format!("a download task failed: {e}"))),
            )),
        }
    }
    signals.abort();
    done.sort_by_key(|d| d.0);
    results.extend(done.into_iter().map(|(_, l, p, e)| (l, Some(p), e)));
    let reused: u64 = ctx.hosts.iter().map(|h| h.pool.reused()).sum();
    for h in &ctx.hosts {
        h.pool.close_idle().await;
    }

    // 4. The summary.
    let elapsed = started.elapsed();
    let (mut n_done, mut n_skipped, mut bytes) = (0usize, 0usize, 0u64);
    let mut failed_codes = Vec::new();
    let mut failures = Vec::new();
    for (label, _, end) in &results {
        match end {
            FileEnd::Done { outcome, .. } => {
                n_done += 1;
                bytes += outcome.fetched;
            }
            FileEnd::Skipped(_) => n_skipped += 1,
            FileEnd::Failed(e) => {
                failed_codes.push(e.exit_code());
                failures.push(format!("  {label}: {e} (exit {})", e.exit_code()));
            }
        }
    }
    let code = batch_exit_code(&failed_codes);
    let secs = elapsed.as_secs_f64().max(1e-6);
    let rate = (bytes as f64 / secs) as u64;
    ctx.events.emit(
        "summary",
        json!({
            "done": n_done, "skipped": n_skipped, "failed": failed_codes.len(),
            "bytes": bytes, "seconds": secs, "bytes_per_second": rate,
            "exit_code": code, "sessions_reused": reused,
        }),
    );
    if !quiet && !bulk.json {
        println!(
            "{} file(s): {n_done} done, {n_skipped} skipped, {} failed; {} in {secs:.2} s, {}/s mean",
            results.len(),
            failed_codes.len(),
            human_bytes(bytes),
            human_bytes(rate)
        );
        for f in &failures {
            println!("{f}");
        }
    }
    if code == exit::OK {
        Ok(())
    } else {
        Err(Error::BatchFailed {
            failed: failed_codes.len(),
            total: results.len(),
            code,
        })
    }
}

/// Prints (or emits) how one file ended.
fn report(ctx: &Ctx, label: &str, path: Option<&Path>, end: &FileEnd) {
    let shown = path.map(|p| p.display().to_string()).unwrap_or_default();
    match end {
        FileEnd::Done { outcome, checks } => {
            ctx.events.emit(
                "file_done",
                json!({
                    "url": label, "path": shown, "bytes": outcome.size,
                    "fetched": outcome.fetched, "resumed": outcome.resumed,
                    "seconds": outcome.elapsed.as_secs_f64(),
                    "blake3": outcome.blake3.map(|h| h.to_hex().to_string()), "checks": checks,
                }),
            );
            if !ctx.quiet && !ctx.events.enabled() {
                let extra = if checks.is_empty() {
                    String::new()
                } else {
                    format!("; {}", checks.join("; "))
                };
                println!("{}{extra}", outcome.summary());
            }
        }
        FileEnd::Skipped(why) => {
            ctx.events.emit(
                "file_skipped",
                json!({"url": label, "path": shown, "reason": why}),
            );
            if !ctx.quiet && !ctx.events.enabled() {
                println!("skipped {shown}: {why}");
            }
        }
        FileEnd::Failed(e) => {
            ctx.events.emit(
                "file_failed",
                json!({"url": label, "path": shown, "error": e.to_string(), "exit_code": e.exit_code()}),
            );
            eprintln!("ftpseg: error: {label}: {e}");
        }
    }
}

/// The server of `url` in the batch (created on first use): its job template and budget.
fn host_index(
    ctx: &mut Ctx,
    keys: &mut HashMap<String, usize>,
    get: &GetArgs,
    url: &FtpUrl,
    raw: &str,
    budget: usize,
) -> Result<usize, Error> {
    let key = format!(
        "{}://{}@{}:{}",
        url.tls.scheme(),
        url.user.as_deref().unwrap_or(""),
        url.host_for_connect(),
        url.port
    );
    if let Some(&i) = keys.get(&key) {
        return Ok(i);
    }
    // Credentials (netrc, FTPSEG_PASSWORD or a prompt) are looked up once per server.
    let template = crate::cli::job_for_url(get, raw, Some(PathBuf::from("unused")))?;
    let pool = HostPool::new(budget);
    ctx.hosts.push(Host {
        template,
        pool,
        home: tokio::sync::Mutex::new(None),
    });
    keys.insert(key, ctx.hosts.len() - 1);
    Ok(ctx.hosts.len() - 1)
}

/// A URL that may name a folder (ending in `/`) or the root: parsed, with its path as given.
fn parse_url(raw: &str) -> Result<(FtpUrl, bool), Error> {
    if raw.ends_with('/') {
        let mut u = FtpUrl::parse(&format!("{raw}_"))?;
        u.path.pop();
        u.path = u.path.trim_end_matches('/').to_owned();
        Ok((u, true))
    } else {
        Ok((FtpUrl::parse(raw)?, false))
    }
}

/// The files an input stands for: itself, the matches of its glob, or (with `-r`) the tree of
/// its folder.
#[allow(clippy::too_many_arguments)]
async fn expand(
    ctx: &mut Ctx,
    keys: &mut HashMap<String, usize>,
    get: &GetArgs,
    bulk: &BulkArgs,
    base: &Path,
    raw: &str,
    output: Option<&str>,
    budget: usize,
) -> Result<Vec<FileJob>, Error> {
    let (mut url, is_folder) = parse_url(raw)?;
    let host = host_index(ctx, keys, get, &url, raw, budget)?;
    // --ftps turns ftp:// into explicit TLS, as for single downloads.
    url.tls = ctx.hosts[host].template.url.tls;
    let (folder, last) = match url.path.rsplit_once('/') {
        Some((f, l)) => (f.to_owned(), l.to_owned()),
        None => (String::new(), url.path.clone()),
    };
    let file_url = |path: &str| {
        let mut u = url.clone();
        u.path = path.to_owned();
        u
    };
    if is_folder {
        if !bulk.recursive {
            // The same error (exit 3) as for a single folder URL, which says to add -r.
            return Err(FtpUrl::parse(raw)
                .err()
                .map(Error::from)
                .unwrap_or_else(|| {
                    Error::Usage(format!("{} is a folder: add -r", url.redacted()))
                }));
        }
        // The folder itself is recreated under -d (as cp -r does), unless it is the login one.
        let top = url.path.rsplit('/').next().unwrap_or("").to_owned();
        let mut local_base = base.to_path_buf();
        if !top.is_empty() {
            local_base = listing::local_path(base, std::slice::from_ref(&top))
                .map_err(|e| Error::Usage(format!("{}: {e}", url.redacted())))?;
        }
        return walk(ctx, host, &url, &url.path, &local_base).await;
    }
    if listing::has_glob(&last) {
        let entries = list_folder(ctx, host, &folder).await?;
        let mut out = Vec::new();
        for e in entries {
            if !listing::glob_match(&last, &e.name) {
                continue;
            }
            let path = join(&folder, &e.name);
            match e.kind {
                Kind::File => out.push(FileJob {
                    host,
                    url: file_url(&path),
                    output: listing::local_path(base, std::slice::from_ref(&e.name))
                        .map_err(|m| Error::Usage(format!("{}: {m}", url.redacted())))?,
                    folder: folder.clone(),
                    name: e.name.clone(),
                    size: e.size,
                    mdtm: e.modify.clone(),
                }),
                Kind::Dir if bulk.recursive => {
                    let local = listing::local_path(base, std::slice::from_ref(&e.name))
                        .map_err(|m| Error::Usage(format!("{}: {m}", url.redacted())))?;
                    out.extend(walk(ctx, host, &url, &path, &local).await?);
                }
                _ => {}
            }
        }
        if out.is_empty() {
            return Err(Error::NotFound {
                path: url.path.clone(),
                reply: "no file matches the pattern".into(),
            });
        }
        return Ok(out);
    }
    // One file.
    let output = match (output, &get.output) {
        (Some(name), _) => {
            let parts: Vec<String> = name.split('/').map(str::to_owned).collect();
            listing::local_path(base, &parts).map_err(|m| Error::Usage(format!("output {m}")))?
        }
        (None, Some(o)) if bulk.dir.is_some() => base.join(o),
        (None, Some(o)) => o.clone(),
        (None, None) => base.join(url.file_name()?),
    };
    Ok(vec![FileJob {
        host,
        url: url.clone(),
        output,
        folder,
        name: last,
        size: None,
        mdtm: None,
    }])
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else if folder.ends_with('/') {
        format!("{folder}{name}")
    } else {
        format!("{folder}/{name}")
    }
}

/// Deepest folder nesting `-r` follows.
const MAX_DEPTH: usize = 64;
/// Most entries one `-r` walk takes.
const MAX_ENTRIES: usize = 1_000_000;

/// Every file under `folder` (breadth first), mapped under `local`. Links are not followed;
/// a folder seen twice (same MLSD `unique` fact) is listed once.
async fn walk(
    ctx: &Ctx,
    host: usize,
    url: &FtpUrl,
    folder: &str,
    local: &Path,
) -> Result<Vec<FileJob>, Error> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([(folder.to_owned(), Vec::<String>::new())]);
    let mut seen = HashSet::new();
    let mut count = 0usize;
    while let Some((dir, rel)) = queue.pop_front() {
        for e in list_folder(ctx, host, &dir).await? {
            count += 1;
            if count > MAX_ENTRIES {
                return Err(Error::Usage(format!(
                    "{} has more than {MAX_ENTRIES} entries: download parts of it",
                    url.redacted()
                )));
            }
            let mut parts = rel.clone();
            parts.push(e.name.clone());
            let path = join(&dir, &e.name);
            match e.kind {
                Kind::File => {
                    let output = listing::local_path(local, &parts)
                        .map_err(|m| Error::Usage(format!("{}: {m}", url.redacted())))?;
                    let mut u = url.clone();
                    u.path = path;
                    out.push(FileJob {
                        host,
                        url: u,
                        output,
                        folder: dir.clone(),
                        name: e.name.clone(),
                        size: e.size,
                        mdtm: e.modify.clone(),
                    });
                }
                Kind::Dir => {
                    if listing::unsafe_name(&e.name).is_some() || parts.len() > MAX_DEPTH {
                        continue;
                    }
                    if let Some(u) = &e.unique
                        && !seen.insert(u.clone())
                    {
                        continue;
                    }
                    queue.push_back((path, parts));
                }
                Kind::Link | Kind::Other => {
                    if ctx.verbose {
                        eprintln!("ftpseg: not following {path} (a link or special file)");
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A logged-in session to server `host`, within its budget: an idle one, or a new one.
async fn session(ctx: &Ctx, host: usize) -> Result<(Permit, Session), Error> {
    let h = &ctx.hosts[host];
    let (permit, idle) = h.pool.acquire().await;
    let t = &h.template;
    let fresh = idle.is_none();
    let addrs = match fresh {
        true => crate::retry::resolve(&t.url, t.timeouts.connect).await?,
        false => Vec::new(),
    };
    let tls = match fresh && t.url.tls.is_tls() {
        true => Some(Arc::new(crate::ftp::TlsClient::new(&t.url, &t.verify)?)),
        false => None,
    };
    let connect = || Session::connect_with(&addrs, &t.creds, t.timeouts, tls.as_ref());
    let (permit, mut s) = h
        .pool
        .connect_or_wait(permit, idle, connect)
        .await
        .map_err(|e| Error::from_session(SessionContext::startup(&t.url, &t.creds), e))?;
    // A download's worker session never asked FEAT (hash commands, MLSD); a new one neither.
    if s.features().raw.is_empty() {
        s.set_use_pasv_address(t.use_pasv_address);
        s.set_active(t.active);
        s.probe()
            .await
            .map_err(|e| Error::from_session(SessionContext::startup(&t.url, &t.creds), e))?;
    }
    Ok((permit, s))
}

/// The entries of a remote folder (relative to the login folder): `MLSD`, else `LIST`, else
/// `NLST` (names only: each is then taken for a file). The session goes back to the login
/// folder and into the pool.
async fn list_folder(ctx: &Ctx, host: usize, folder: &str) -> Result<Vec<Entry>, Error> {
    let h = &ctx.hosts[host];
    let (permit, mut s) = session(ctx, host).await?;
    let t = &h.template;
    let fail = |e: SessionError| match e {
        SessionError::Reply {
            code: 550, text, ..
        } => Error::NotFound {
            path: folder.to_owned(),
            reply: format!("{text} (listing the folder)"),
        },
        e => Error::from_session(SessionContext::startup(&t.url, &t.creds), e),
    };
    let home = {
        let mut home = h.home.lock().await;
        if home.is_none() {
            *home = Some(s.pwd().await.map_err(fail)?);
        }
        home.clone().unwrap_or_default()
    };
    let target = if folder.starts_with('/') {
        folder.to_owned()
    } else if folder.is_empty() {
        home.clone()
    } else {
        join(&home, folder)
    };
    s.cwd(&target).await.map_err(fail)?;
    let mut entries = None;
    for command in [ListCommand::Mlsd, ListCommand::List, ListCommand::Nlst] {
        match s.list_lines(command).await {
            Ok(lines) => {
                let parsed: Vec<Entry> = match command {
                    ListCommand::Mlsd => lines
                        .iter()
                        .filter_map(|l| listing::parse_mlsd_line(l))
                        .collect(),
                    ListCommand::List => lines
                        .iter()
                        .filter_map(|l| listing::parse_list_line(l))
                        .collect(),
                    ListCommand::Nlst => lines
                        .iter()
                        .filter_map(|l| listing::parse_nlst_line(l))
                        .map(|name| Entry {
                            name,
                            kind: Kind::File,
                            size: None,
                            modify: None,
                            unique: None,
                        })
                        .collect(),
                };
                // A LIST whose lines we cannot read at all: try NLST.
                if command == ListCommand::List && parsed.is_empty() && !lines.is_empty() {
                    continue;
                }
                entries = Some(parsed);
                break;
            }
            Err(SessionError::Reply { code, .. }) if code >= 500 => continue,
            Err(e) => return Err(fail(e)),
        }
    }
    s.cwd(&home).await.map_err(fail)?;
    h.pool.give_back(Some(s), permit);
    entries.ok_or_else(|| Error::Protocol {
        host: t.url.host_for_connect(),
        command: "MLSD/LIST/NLST".into(),
        reply: format!("the server lists {folder:?} with none of them"),
    })
}

/// Downloads one file (or skips it), then checks it.
async fn one_file(ctx: &Ctx, f: FileJob) -> FileEnd {
    match fetch_and_check(ctx, &f).await {
        Ok(end) => end,
        Err(e) => FileEnd::Failed(e.scrub(&ctx.hosts[f.host].template.creds.password)),
    }
}

async fn fetch_and_check(ctx: &Ctx, f: &FileJob) -> Result<FileEnd, Error> {
    let h = &ctx.hosts[f.host];
    // Already there? Compare with the server's size and modification time.
    if let Ok(meta) = std::fs::metadata(&f.output)
        && meta.is_file()
        && !crate::storage::manifest::Manifest::path_for(&f.output).exists()
    {
        let (size, mdtm) = match (f.size, &f.mdtm) {
            (Some(s), Some(m)) => (Some(s), Some(m.clone())),
            _ => remote_size_mdtm(ctx, f).await?,
        };
        let local = meta.modified().ok().map(|t| (meta.len(), t));
        match local_state(local, size, mdtm.as_deref().and_then(mdtm_to_time)) {
            Local::Complete => {
                return Ok(FileEnd::Skipped(
                    "complete already (same size and modification time as on the server)".into(),
                ));
            }
            Local::SameSizeNoTime => {
                return Ok(FileEnd::Skipped(
                    "complete already (same size; the server gives no modification time)".into(),
                ));
            }
            Local::Fetch | Local::Different => {}
        }
    }
    if let Some(parent) = f.output.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io("cannot create the folder", parent, e))?;
    }
    ctx.events.emit(
        "file_start",
        json!({"url": f.url.redacted(), "path": f.output.display().to_string()}),
    );
    // Known before the download, so the sequential digests can follow it (crate::integrity::digest).
    let expected = expected_for(ctx, f).await?;
    let stream = streamed_algos(expected.as_ref().map(|(e, _)| e.algo), ctx.verify_remote);
    let digest = (!stream.is_empty()).then(|| Arc::new(PrefixDigest::new(&stream)));
    let mut job = h.template.clone();
    job.url = f.url.clone();
    job.output = f.output.clone();
    job.pool = Some(h.pool.clone());
    job.digest = digest.clone();
    let mut progress = Progress::new(ctx.mode);
    let outcome = download::download(&job, &mut progress, ctx.stop.clone()).await?;
    crate::trace!("{}: downloaded", f.output.display());
    let remote_time = outcome.remote_mtime.as_deref().and_then(mdtm_to_time);
    let set_time = |t: SystemTime| {
        let _ = std::fs::File::options()
            .write(true)
            .open(&f.output)
            .and_then(|file| file.set_modified(t));
    };
    let checks = match verify(ctx, f, &outcome, expected, digest).await {
        Ok(checks) => checks,
        Err(e) => {
            // Kept, but never taken for complete by a later run: its time differs from the
            // server's (the download may have finished within the second the file was made).
            if let Some(t) = remote_time {
                set_time(t + Duration::from_secs(1));
            }
            return Err(e);
        }
    };
    // The server's time on the file, so the next run sees it is complete.
    if let Some(t) = remote_time {
        set_time(t);
    }
    Ok(FileEnd::Done { outcome, checks })
}

/// `SIZE` and `MDTM` of a file, on a session of the pool.
async fn remote_size_mdtm(ctx: &Ctx, f: &FileJob) -> Result<(Option<u64>, Option<String>), Error> {
    let h = &ctx.hosts[f.host];
    let (permit, mut s) = session(ctx, f.host).await?;
    let t = &h.template;
    let size = s
        .size(&f.url.path)
        .await
        .map_err(|e| Error::from_session(SessionContext::startup(&f.url, &t.creds), e))?;
    let mdtm = s
        .mdtm(&f.url.path)
        .await
        .map_err(|e| Error::from_session(SessionContext::startup(&f.url, &t.creds), e))?;
    h.pool.give_back(Some(s), permit);
    Ok((size, mdtm.map(|m| m.0)))
}

/// The expected digest of a file: `--checksum`, the `--checksum-file`, or (auto) a checksum
/// file in its folder on the server. With its source, for messages.
async fn expected_for(ctx: &Ctx, f: &FileJob) -> Result<Option<(Expected, String)>, Error> {
    if let Some(e) = &ctx.checksum {
        return Ok(Some((e.clone(), "--checksum".into())));
    }
    if let Some((name, lines)) = &ctx.sums {
        return Ok(checksum::lookup(lines, name, &f.name).map(|e| (e, name.clone())));
    }
    if !ctx.sums_auto {
        return Ok(None);
    }
    let key = (f.host, f.folder.clone());
    let mut cache = ctx.auto_sums.lock().await;
    if !cache.contains_key(&key) {
        let mut found = Vec::new();
        let entries = list_folder(ctx, f.host, &f.folder).await?;
        let mut names: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.kind == Kind::File && checksum::is_sums_file_name(&e.name))
            .collect();
        // Strongest first: SHA512SUMS, SHA256SUMS, SHA1SUMS, MD5SUMS.
        names.sort_by_key(|e| match checksum::Algo::from_file_name(&e.name) {
            Some(Algo::Sha512) => 0,
            Some(Algo::Sha256) => 1,
            Some(Algo::Blake3) => 2,
            Some(Algo::Sha1) => 3,
            Some(Algo::Md5) => 4,
            None => 5,
        });
        for e in names {
            let (permit, mut s) = session(ctx, f.host).await?;
            let path = join(&f.folder, &e.name);
            match s.read_small_file(&path).await {
                Ok(bytes) => {
                    ctx.hosts[f.host].pool.give_back(Some(s), permit);
                    let (lines, _) = checksum::parse_sums(&String::from_utf8_lossy(&bytes));
                    found.push((e.name.clone(), lines));
                }
                Err(_) => drop(s),
            }
        }
        cache.insert(key.clone(), found);
    }
    let found = &cache[&key];
    Ok(found.iter().find_map(|(name, lines)| {
        checksum::lookup(lines, name, &f.name).map(|e| (e, format!("{name} on the server")))
    }))
}

/// The digests worth taking during the download: the expected one's algorithm (BLAKE3 comes
/// free from the engine), and SHA-256 with `--verify-remote` (the hash most servers offer;
/// one that answers with MD5 gets its digest from a read of the file at the end).
fn streamed_algos(expected: Option<Algo>, verify_remote: bool) -> Vec<Algo> {
    let mut algos: Vec<Algo> = expected
        .into_iter()
        .filter(|&a| a != Algo::Blake3)
        .collect();
    if verify_remote && !algos.contains(&Algo::Sha256) {
        algos.push(Algo::Sha256);
    }
    algos
}

/// Checks a downloaded file: its expected digest (`expected`, found before the download) and
/// the server's own hash. Returns one line per check that passed; a mismatch is an error (the
/// file is kept). `digest` has followed the download; what it lacks is read from the file.
async fn verify(
    ctx: &Ctx,
    f: &FileJob,
    outcome: &Outcome,
    expected: Option<(Expected, String)>,
    digest: Option<Arc<PrefixDigest>>,
) -> Result<Vec<String>, Error> {
    let remote = if ctx.verify_remote {
        let (permit, mut s) = session(ctx, f.host).await?;
        let commands: Vec<HashCommand> =
            hash_commands(s.features().hash.as_deref(), &s.features().raw);
        let r = s.remote_hash(&f.url.path, &commands).await;
        match r {
            Ok(r) => {
                ctx.hosts[f.host].pool.give_back(Some(s), permit);
                if r.is_none() && !ctx.quiet {
                    eprintln!(
                        "ftpseg: {}: the server offers no file hash (HASH, XSHA256, XMD5, SITE MD5): \
                         not verified against the server",
                        f.output.display()
                    );
                }
                r
            }
            Err(e) => {
                return Err(Error::from_session(
                    SessionContext::startup(&f.url, &ctx.hosts[f.host].template.creds),
                    e,
                ));
            }
        }
    } else {
        None
    };
    let mut algos: Vec<Algo> = Vec::new();
    if let Some((e, _)) = &expected
        && e.algo != Algo::Blake3
    {
        algos.push(e.algo);
    }
    let remote_algo = remote.as_ref().map(|r| match r.command.algo() {
        crate::ftp::upload::HashAlgo::Sha256 => Algo::Sha256,
        crate::ftp::upload::HashAlgo::Md5 => Algo::Md5,
    });
    if let Some(a) = remote_algo
        && !algos.contains(&a)
    {
        algos.push(a);
    }
    let path = f.output.clone();
    let digests = if algos.is_empty() {
        Vec::new()
    } else {
        let a = algos.clone();
        let digest = digest.filter(|d| a.iter().all(|x| d.algos().contains(x)));
        let digests = tokio::task::spawn_blocking(move || match digest {
            Some(d) => {
                let done = d.finish(&path)?;
                crate::trace!(
                    "{}: digests: {} bytes hashed during the download, {} after",
                    path.display(),
                    done.during,
                    done.after
                );
                Ok(a.iter()
                    .map(|x| {
                        let i = d.algos().iter().position(|y| y == x).unwrap_or(0);
                        done.hex[i].clone()
                    })
                    .collect())
            }
            None => checksum::hash_file(&path, &a),
        })
        .await
        .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
        .map_err(|e| Error::io("cannot read back", &f.output, e))?;
        crate::trace!("{}: checked", f.output.display());
        digests
    };
    let local = |algo: Algo| -> String {
        if algo == Algo::Blake3 {
            return outcome
                .blake3
                .map(|h| h.to_hex().to_string())
                .unwrap_or_default();
        }
        algos
            .iter()
            .position(|&a| a == algo)
            .map(|i| digests[i].clone())
            .unwrap_or_default()
    };
    let mut checks = Vec::new();
    if let Some((e, source)) = expected {
        let got = local(e.algo);
        if got != e.hex {
            return Err(Error::ChecksumMismatch {
                path: f.output.clone(),
                detail: format!("{} is {got}, but {source} says {}", e.algo.name(), e.hex),
            });
        }
        checks.push(format!("{} matches {source}", e.algo.name()));
    }
    if let (Some(r), Some(a)) = (remote, remote_algo) {
        let got = local(a);
        if got != r.hex {
            return Err(Error::ChecksumMismatch {
                path: f.output.clone(),
                detail: format!(
                    "{} is {got}, but the server's {} says {}",
                    a.name(),
                    r.command.label(),
                    r.hex
                ),
            });
        }
        checks.push(format!(
            "{} matches the server's {}",
            a.name(),
            r.command.label()
        ));
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn input_files() {
        let text = "# isos\n\nftp://h/a.iso\n  ftp://h/b.iso   my b.iso \nnot a url\n";
        let lines = parse_input(text);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            InputLine {
                line: 3,
                url: "ftp://h/a.iso".into(),
                output: None
            }
        );
        assert_eq!(lines[1].output.as_deref(), Some("my b.iso"));
        assert_eq!(lines[2].line, 5);
    }

    #[test]
    fn mdtm_times() {
        let t = mdtm_to_time("20240102030405").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_704_164_645
        );
        assert_eq!(mdtm_to_time("19700101000000"), Some(SystemTime::UNIX_EPOCH));
        assert!(mdtm_to_time("20241301000000").is_none());
        assert!(mdtm_to_time("2024").is_none());
        assert!(mdtm_to_time("2024010203040x").is_none());
    }

    #[test]
    fn skip_decisions() {
        let t = mdtm_to_time("20240102030405").unwrap();
        assert_eq!(local_state(None, Some(1), Some(t)), Local::Fetch);
        assert_eq!(local_state(Some((5, t)), Some(5), Some(t)), Local::Complete);
        assert_eq!(
            local_state(Some((5, t + Duration::from_secs(1))), Some(5), Some(t)),
            Local::Different
        );
        assert_eq!(
            local_state(Some((4, t)), Some(5), Some(t)),
            Local::Different
        );
        assert_eq!(
            local_state(Some((5, t)), Some(5), None),
            Local::SameSizeNoTime
        );
        assert_eq!(local_state(Some((5, t)), None, None), Local::Different);
    }

    #[test]
    fn exit_codes_of_batches() {
        assert_eq!(batch_exit_code(&[]), 0);
        assert_eq!(batch_exit_code(&[6, 4]), 6);
        assert_eq!(batch_exit_code(&[6, exit::CHECKSUM]), exit::CHECKSUM);
        assert_eq!(batch_exit_code(&[exit::CHECKSUM, 130]), 130);
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

    proptest! {
        #[test]
        fn input_lines_keep_url_and_name(url in "ftp://[a-z]{1,8}/[a-z0-9%._-]{1,20}", name in "[a-z0-9._-][a-z0-9 ._-]{0,15}") {
            let name = name.trim().to_owned();
            let text = format!("{url}\t{name}\n# {url}\n");
            let lines = parse_input(&text);
            prop_assert_eq!(lines.len(), 1);
            prop_assert_eq!(&lines[0].url, &url);
            prop_assert_eq!(lines[0].output.as_deref(), (!name.is_empty()).then_some(name.as_str()));
        }

        #[test]
        fn mdtm_is_monotonic(a in 0u64..4_000_000_000, b in 0u64..4_000_000_000) {
            // Format two times and compare: later text, later time.
            let fmt = |s: u64| {
                let days = (s / 86400) as i64;
                // civil from days (inverse of the formula under test).
                let z = days + 719468;
                let era = z.div_euclid(146097);
                let doe = z - era * 146097;
                let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
                let y = yoe + era * 400;
                let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
                let mp = (5 * doy + 2) / 153;
                let d = doy - (153 * mp + 2) / 5 + 1;
                let m = if mp < 10 { mp + 3 } else { mp - 9 };
                let y = if m <= 2 { y + 1 } else { y };
                let r = s % 86400;
                format!("{y:04}{m:02}{d:02}{:02}{:02}{:02}", r / 3600, r / 60 % 60, r % 60)
            };
            let ta = mdtm_to_time(&fmt(a)).unwrap();
            let tb = mdtm_to_time(&fmt(b)).unwrap();
            prop_assert_eq!(ta.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), a);
            prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
        }
    }
}
