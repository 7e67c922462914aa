//! Shared test fixture: an in-process FTP server on loopback serving generated files, a scratch
//! folder for outputs, and a runner for the real `ftpseg` binary with a time limit.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ftpseg::internals::manifest::Manifest;
use ftpseg::testserver::{ServerConfig, TestServer, write_pattern_file};
use tempfile::TempDir;

pub const MIB: u64 = 1 << 20;

/// The stores of `--io` (every value but `auto`, which is one of them). Each crash, resume,
/// disk-full, damaged-chunk and real-server test runs once per store ([`per_store!`]);
/// `stores::every_io_value_but_auto_is_a_tested_store` checks this list against the binary.
pub const STORES: [&str; 3] = ["mmap", "splice", "pwrite"];

/// `per_store!(name);` beside `async fn name(store: &'static str)`: a module `name` with one
/// test per store (`name::mmap`, `name::splice`, `name::pwrite`), each calling `name` with its
/// store's `--io` value, so a failure names the store. Each checks that its store is one of
/// [`STORES`]. `per_store!(one_at_a_time name);` runs them one after the other, for a test that
/// reads what a shared real server logs or does to its sessions.
macro_rules! per_store {
    ($name:ident) => {
        $crate::common::per_store!(@each $name, false: mmap, splice, pwrite);
    };
    (one_at_a_time $name:ident) => {
        $crate::common::per_store!(@each $name, true: mmap, splice, pwrite);
    };
    (@each $name:ident, $one_at_a_time:literal: $($store:ident),+) => {
        mod $name {
            static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $store() {
                    let _turn = if $one_at_a_time {
                        Some(ONE_AT_A_TIME.lock().await)
                    } else {
                        None
                    };
                    let store = stringify!($store);
                    assert!($crate::common::STORES.contains(&store), "{store} is not in STORES");
                    super::$name(store).await
                }
            )+
        }
    };
}
pub(crate) use per_store;

/// The tests that fill a `-limited` real server's per-IP slots (in `interop` and
/// `bulk_interop`) run one at a time: two at once would share the limit.
pub static LIMITED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where `scripts/ftp-servers.sh` keeps the state of the real servers (`$FTPSEG_SERVERS_DIR`).
pub fn servers_json_path() -> PathBuf {
    let dir = std::env::var("FTPSEG_SERVERS_DIR").unwrap_or_else(|_| "/tmp/ftpseg-servers".into());
    PathBuf::from(dir).join("servers.json")
}

/// The real servers' `servers.json`; a panic that says how to start them when it is absent.
pub fn servers_json() -> serde_json::Value {
    let path = servers_json_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the real FTP servers are not running ({}: {e}); start them with \
             `bash scripts/ftp-servers.sh start` (scripts/test.sh does)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The text of a real server's log, or a panic naming it: a log that is missing (or moved)
/// must not read as "nothing happened".
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read the server log {path:?} ({e}): did scripts/ftp-servers.sh change where \
             it logs?"
        )
    })
}

/// A real server's log before a test's transfers: the server creates its transfer log at its
/// first transfer, so a log it has not written yet is empty (read after the transfers with
/// [`read_log_settled`], which insists on it).
pub fn log_before(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("cannot read the server log {path:?} ({e})"),
    }
}

/// A real server's log once the server has written what the test's transfers add: it writes a
/// line after the client has its 226, so wait (at most 5 s) for the file to exist and to stop
/// growing for 300 ms, then read it with [`read_log`].
pub fn read_log_settled(path: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut last: Option<u64> = None;
    while std::time::Instant::now() < deadline {
        let len = std::fs::metadata(path).ok().map(|m| m.len());
        if len.is_some() && len == last {
            break;
        }
        last = len;
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    read_log(path)
}

/// Bytes sent by the transfers a real server's transfer log records: the 8th field of each
/// xferlog line (vsftpd, proftpd, pure-ftpd), or `bytes=N` of pyftpdlib's `RETR` lines.
pub fn sent_in_log(kind: &str, log: &str) -> u64 {
    let sent = |l: &str| -> Option<u64> {
        if kind == "pyftpdlib" {
            if !l.contains(" RETR ") {
                return None;
            }
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("bytes="))?
                .parse()
                .ok()
        } else {
            l.split_whitespace().nth(7)?.parse().ok()
        }
    };
    log.lines().filter_map(sent).sum()
}

pub struct Fixture {
    pub dir: TempDir,
    pub served: PathBuf,
    pub local: PathBuf,
    pub server: TestServer,
}

impl Fixture {
    /// A server with the default config (anonymous, user "alice"/"s3cret"), adjusted by `f`.
    pub async fn new(f: impl FnOnce(ServerConfig) -> ServerConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served");
        let local = dir.path().join("local");
        std::fs::create_dir_all(&served).unwrap();
        std::fs::create_dir_all(&local).unwrap();
        let cfg = f(ServerConfig::new(&served).with_user("alice", "s3cret"));
        let server = TestServer::start(cfg).await.unwrap();
        Fixture {
            dir,
            served,
            local,
            server,
        }
    }

    /// Writes a generated file of `len` bytes to the served folder; returns its bytes.
    pub fn serve(&self, name: &str, len: u64, seed: u64) -> Vec<u8> {
        let p = self.served.join(name);
        write_pattern_file(&p, len, seed).unwrap();
        std::fs::read(p).unwrap()
    }

    pub fn url(&self, name: &str) -> String {
        self.server.url(name)
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.local.join(name)
    }
}

/// The real binary, with a clean environment for the things it reads.
pub fn ftpseg() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_ftpseg"));
    // Hermetic: no password from the environment, no ~/.netrc or config file of whoever runs
    // the tests.
    c.env_remove("FTPSEG_PASSWORD")
        .env_remove("FTPSEG_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", "/nonexistent/ftpseg-test-home")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs the binary to completion (at most 120 s) in `cwd`.
pub async fn run(args: &[&str], cwd: &Path) -> Output {
    let mut cmd = ftpseg();
    cmd.args(args).current_dir(cwd);
    run_command(cmd).await
}

/// Runs a command made from [`ftpseg`] (with its own environment or folder) to completion,
/// at most 120 s.
pub async fn run_command(mut cmd: tokio::process::Command) -> Output {
    let child = cmd.spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("ftpseg did not finish within 120 s")
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Asserts a successful run and identical bytes.
pub fn assert_ok_and_equal(o: &Output, out: &Path, expected: &[u8]) {
    assert_eq!(
        code(o),
        0,
        "ftpseg failed: {}\n{}",
        stderr(o),
        String::from_utf8_lossy(&o.stdout)
    );
    let got = std::fs::read(out).unwrap();
    assert_eq!(got.len(), expected.len(), "length differs");
    if got != expected {
        let at = got.iter().zip(expected).position(|(a, b)| a != b).unwrap();
        panic!("bytes differ first at offset {at}");
    }
    assert!(!Manifest::path_for(out).exists(), "manifest left behind");
    assert!(!ftpseg::part_path(out).exists(), ".part left behind");
}

/// Checks every claim of the manifest against the source bytes.
pub fn claims_hold(m: &Manifest, part: &[u8], source: &[u8]) -> Result<(), String> {
    if m.size.is_none() {
        // Streamed (size unknown): the first `streamed` bytes are claimed.
        let n = m.streamed.unwrap_or(0) as usize;
        if part.get(..n) != source.get(..n) {
            return Err(format!("{n} streamed bytes claimed done, but they differ"));
        }
    }
    for r in &m.ranges {
        let (a, b) = (r.start as usize, r.done as usize);
        if part.get(a..b) != source.get(a..b) {
            let at = (a..b).find(|&i| part.get(i) != source.get(i)).unwrap_or(a);
            return Err(format!("range {r:?}: byte {at} claimed done but differs"));
        }
    }
    for (k, h) in m.chunks.iter().enumerate() {
        let Some(h) = h else { continue };
        let (from, to) =
            ftpseg::internals::verify::chunk_range(k as u64, m.chunk_size, source.len() as u64);
        let cv = ftpseg::internals::verify::chunk_cv(from, &source[from as usize..to as usize]);
        if *h != ftpseg::internals::verify::to_hex(&cv) {
            return Err(format!("chunk {k}: recorded hash is not the source's"));
        }
    }
    Ok(())
}

/// After a kill: the manifest beside `out` loads and every claim it makes about the `.part`
/// holds (see [`claims_hold`]). Resume would repair a false claim in a hashed chunk, so the
/// final file alone cannot show one. Returns the manifest.
pub fn assert_claims_hold(out: &Path, source: &[u8]) -> Manifest {
    let m = Manifest::load(&Manifest::path_for(out))
        .unwrap_or_else(|e| panic!("manifest of {} unreadable after a kill: {e}", out.display()))
        .unwrap_or_else(|| panic!("no manifest beside {} after a kill", out.display()));
    let part = std::fs::read(ftpseg::part_path(out))
        .unwrap_or_else(|e| panic!(".part of {} unreadable after a kill: {e}", out.display()));
    if let Err(e) = claims_hold(&m, &part, source) {
        panic!("{} after a kill: {e}", out.display());
    }
    m
}

/// Waits (bounded) until the manifest beside `out` records at least `bytes` done.
pub async fn wait_for_durable(out: &Path, bytes: u64, limit: Duration) -> u64 {
    let path = Manifest::path_for(out);
    let started = Instant::now();
    loop {
        if let Ok(Some(m)) = Manifest::load(&path) {
            let done = m.bytes_done();
            if done >= bytes {
                return done;
            }
        }
        assert!(
            started.elapsed() < limit,
            "manifest did not reach {bytes} bytes within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A control-connection proxy in front of a test server, for server behaviours libunftp does
/// not have: it answers `refuse`d commands with 502 itself, and can append "(N bytes)" to 150
/// replies. Data connections bypass it (EPSV names only a port; PORT/EPRT name the client's
/// listener; all is on one loopback address).
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(
        server: std::net::SocketAddr,
        refuse: &'static [&'static str],
        announce_size: Option<u64>,
    ) -> Proxy {
        Self::start_with(server, refuse, announce_size, None).await
    }

    /// Like [`Proxy::start`], and when `pasv_host` is given, the address in every 227 reply
    /// is replaced by it (e.g. "127,0,0,2": an address where nothing listens).
    pub async fn start_with(
        server: std::net::SocketAddr,
        refuse: &'static [&'static str],
        announce_size: Option<u64>,
        pasv_host: Option<&'static str>,
    ) -> Proxy {
        Self::spawn(server, refuse, announce_size, pasv_host, false).await
    }

    /// A proxy that closes a control connection when the client uses it for a second RETR
    /// (as a server or NAT that dropped the session while its first transfer ran): each
    /// session carries one transfer, and every reuse fails before any byte.
    pub async fn dropping_reused_sessions(server: std::net::SocketAddr) -> Proxy {
        Self::spawn(server, &[], None, None, true).await
    }

    async fn spawn(
        server: std::net::SocketAddr,
        refuse: &'static [&'static str],
        announce_size: Option<u64>,
        pasv_host: Option<&'static str>,
        drop_reused: bool,
    ) -> Proxy {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        // On the server's loopback address (127.0.0.1 or ::1), so its URL has the same family.
        let listener = tokio::net::TcpListener::bind((server.ip(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                conns.spawn(async move {
                    let Ok(upstream) = tokio::net::TcpStream::connect(server).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (ur, mut uw) = upstream.into_split();
                    let cw = std::sync::Arc::new(tokio::sync::Mutex::new(cw));
                    let cw2 = cw.clone();
                    let down = tokio::spawn(async move {
                        let mut lines = BufReader::new(ur).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            let line = match announce_size {
                                Some(n) if line.starts_with("150 ") => {
                                    format!("{line} ({n} bytes)")
                                }
                                _ => line,
                            };
                            let line = match pasv_host {
                                Some(h) if line.starts_with("227 ") => rewrite_pasv(&line, h),
                                _ => line,
                            };
                            let mut w = cw2.lock().await;
                            if w.write_all(format!("{line}\r\n").as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut lines = BufReader::new(cr).lines();
                    let mut retrs = 0;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                        if verb == "RETR" {
                            retrs += 1;
                            if drop_reused && retrs > 1 {
                                break;
                            }
                        }
                        if refuse.contains(&verb.as_str()) {
                            let mut w = cw.lock().await;
                            let _ = w.write_all(b"502 Command not implemented.\r\n").await;
                            continue;
                        }
                        if uw
                            .write_all(format!("{line}\r\n").as_bytes())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    down.abort();
                    // Both halves go: the client sees its session end.
                    let _ = cw.lock().await.shutdown().await;
                });
            }
        });
        Proxy { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ftp://{}/{}", self.addr, path)
    }
}

/// "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)" with the host part replaced by `host`.
fn rewrite_pasv(line: &str, host: &str) -> String {
    let (Some(open), Some(close)) = (line.find('('), line.rfind(')')) else {
        return line.to_owned();
    };
    let fields: Vec<&str> = line[open + 1..close].split(',').collect();
    if fields.len() != 6 {
        return line.to_owned();
    }
    format!(
        "{}({},{},{}){}",
        &line[..open],
        host,
        fields[4],
        fields[5],
        &line[close + 1..]
    )
}
