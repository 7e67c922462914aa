//! The fault harness of the `netns` tests: a network namespace of the test's own, its loopback
//! cut and restored at will, with the built-in server (`ftpseg serve`) and the client
//! (`ftpseg ...`) both running inside it, so that "the network is gone" can be staged on one
//! machine without touching anyone else's loopback.
//!
//! * [`Netns`]: the namespace, held open by an `unshare -n sleep` child (killed and reaped on
//!   drop); every command enters it with `nsenter -t PID -n`, and only after checking that the
//!   holder still is the process that made it. [`Netns::lo_down`] / [`Netns::lo_up`] cut and
//!   restore 127.0.0.0/8 (what they do, and why a bare `ip link set lo down` is not enough, is
//!   on [`Netns::lo_down`]). [`Netns::or_skip`] returns `None` (and says why on stderr) where
//!   namespaces are not allowed.
//! * [`Served`]: `ftpseg serve` inside the namespace, killed on drop.
//! * [`Client`]: `ftpseg` inside the namespace, its stdout and stderr read line by line as they
//!   come (each line with the `Instant` it arrived), finished within a hard time limit (killed
//!   at the limit); [`Finished`] turns its `FTPSEG_TRACE` stamps back into `Instant`s.
//! * [`DurableWatch`]: the durable progress of a download's manifest, sampled every 50 ms,
//!   the other witness (with the trace's first bytes) of when bytes flowed again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

/// A network namespace of its own, held by a child process.
pub struct Netns {
    holder: std::process::Child,
    pid: u32,
    /// `net:[inode]` of the namespace, as `/proc/PID/ns/net` read when it was made.
    ns: PathBuf,
    ups: Mutex<Vec<Instant>>,
}

/// The prefix of every rule that cuts the namespace's loopback (see [`Netns::lo_down`]).
const CUT: &str = "\
link set lo down
rule add prio 1 to 127.0.0.0/8 unreachable
rule add prio 100 lookup local
rule del prio 0
";

/// Undoes [`CUT`] in the reverse order.
const UNCUT: &str = "\
rule add prio 0 lookup local
rule del prio 100
rule del prio 1
link set lo up
";

impl Netns {
    /// A new namespace with its loopback up, or why one cannot be made here.
    pub fn new() -> Result<Netns, String> {
        let own = std::fs::read_link("/proc/self/ns/net").map_err(|e| format!("/proc: {e}"))?;
        let mut holder = std::process::Command::new("unshare")
            .args(["-n", "sleep", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let pid = holder.id();
        // Until unshare has called unshare(2) and exec'd sleep, /proc/PID/ns/net is still ours:
        // entering it then would cut the loopback of the whole machine. Wait (at most 5 s) for
        // a namespace that is not ours, in a process that is sleep.
        let deadline = Instant::now() + Duration::from_secs(5);
        let ns = loop {
            if let Ok(Some(status)) = holder.try_wait() {
                let mut why = String::new();
                if let Some(mut e) = holder.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut why);
                }
                return Err(format!("unshare -n exited with {status}: {}", why.trim()));
            }
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match ns {
                Some(ns) if ns != own && comm.trim() == "sleep" => break ns,
                _ if Instant::now() > deadline => {
                    let _ = holder.kill();
                    let _ = holder.wait();
                    return Err("unshare -n did not make a namespace within 5 s".into());
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let netns = Netns {
            holder,
            pid,
            ns,
            ups: Mutex::new(Vec::new()),
        };
        // Dropped on failure: the holder is killed.
        let up = netns
            .std_command("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .map_err(|e| format!("cannot run nsenter: {e}"))?;
        if !up.status.success() {
            return Err(format!(
                "nsenter -n ip link set lo up: {}",
                String::from_utf8_lossy(&up.stderr).trim()
            ));
        }
        Ok(netns)
    }

    /// A new namespace, or `None` after one line on stderr saying why there is none (the test
    /// then returns: it is skipped, not failed).
    pub fn or_skip() -> Option<Netns> {
        match Netns::new() {
            Ok(ns) => Some(ns),
            Err(why) => {
                eprintln!("skipped: network namespaces not allowed here ({why})");
                None
            }
        }
    }

    /// Panics unless the holder still holds the namespace it made: a command must never enter
    /// another process's namespace (a recycled PID).
    fn check_held(&self) {
        let now = std::fs::read_link(format!("/proc/{}/ns/net", self.pid)).ok();
        assert_eq!(
            now.as_deref(),
            Some(self.ns.as_path()),
            "the namespace holder (pid {}) is gone",
            self.pid
        );
    }

    fn nsenter_args(&self) -> [String; 3] {
        ["-t".into(), self.pid.to_string(), "-n".into()]
    }

    fn std_command(&self, program: &str) -> std::process::Command {
        self.check_held();
        let mut c = std::process::Command::new("nsenter");
        c.args(self.nsenter_args()).arg(program);
        c
    }

    /// `program` inside the namespace (nsenter execs it: the child's PID is the program's),
    /// with a hermetic environment as `common::ftpseg` has, stdout and stderr piped, killed
    /// if dropped.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        self.check_held();
        let mut c = tokio::process::Command::new("nsenter");
        c.args(self.nsenter_args())
            .arg(program)
            .env_remove("FTPSEG_PASSWORD")
            .env_remove("FTPSEG_TRACE")
            .env_remove("FTPSEG_TEST_SLEEP")
            .env_remove("FTPSEG_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", "/nonexistent/ftpseg-test-home")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs `ip -batch -` inside the namespace with `script`; panics if it fails.
    async fn ip_batch(&self, script: &str) {
        use tokio::io::AsyncWriteExt;
        let mut c = self.command("ip");
        c.args(["-batch", "-"]).stdin(Stdio::piped());
        let mut child = c.spawn().expect("nsenter ip");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).await.unwrap();
        drop(stdin);
        let o = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .expect("ip did not finish within 10 s")
            .unwrap();
        assert!(
            o.status.success(),
            "ip -batch failed ({}): {}\n{script}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// The network is gone: loopback down, and 127.0.0.0/8 unreachable. Returns when it is.
    ///
    /// `ip link set lo down` alone is not what a lost network looks like: the local routes of
    /// 127.0.0.0/8 stay, so a connect() sends its SYNs into a down device and waits for the
    /// connect timeout (ETIMEDOUT after ~2 min without one), and ::1, whose address goes away
    /// with the link, fails at once with EADDRNOTAVAIL. So the local table is moved behind an
    /// `unreachable` rule for 127.0.0.0/8: connect() then fails at once with ENETUNREACH, as
    /// when a laptop's Wi-Fi drops its default route, while established connections go
    /// silent (their send() still succeeds into the buffer, nothing is delivered, no RST, no
    /// error on the socket) and resume when the loopback comes back.
    pub async fn lo_down(&self) -> Instant {
        self.ip_batch(CUT).await;
        Instant::now()
    }

    /// The network is back (undoes [`Netns::lo_down`]); returns, and records, the `Instant`
    /// just before `ip` was started. The network is certainly down until then and certainly
    /// down from the `Instant` [`Netns::lo_down`] returns (taken once `ip` has returned), so a
    /// delay measured from these two never comes out shorter than it was.
    pub async fn lo_up(&self) -> Instant {
        let at = Instant::now();
        self.ip_batch(UNCUT).await;
        self.ups.lock().unwrap().push(at);
        at
    }

    /// The `Instant` of each [`Netns::lo_up`], in order.
    pub fn ups(&self) -> Vec<Instant> {
        self.ups.lock().unwrap().clone()
    }

    /// connect() to `addr` from inside the namespace (a thread of the test made for it enters
    /// the namespace with setns(2), which moves only that thread, connects, and ends), with a
    /// 3 s timeout: what a client sees there, errno and all.
    pub async fn connect_inside(&self, addr: std::net::SocketAddr) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        self.check_held();
        let path = format!("/proc/{}/ns/net", self.pid);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = (|| {
                let ns = std::fs::File::open(path)?;
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(drop)
            })();
            let _ = tx.send(r);
        });
        rx.await
            .expect("the connecting thread ended without an answer")
    }

    /// `ftpseg serve root ...extra` inside the namespace, once it has printed its URL.
    pub async fn serve(&self, root: &Path, extra: &[&str]) -> Served {
        let mut c = self.command(env!("CARGO_BIN_EXE_ftpseg"));
        c.arg("serve").arg(root).args(extra);
        let mut child = c.spawn().expect("ftpseg serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("ftpseg serve printed no URL within 20 s")
            .unwrap()
            .expect("ftpseg serve exited before printing its URL");
        assert!(url.starts_with("ftp://127.0.0.1:"), "{url}");
        Served { _child: child, url }
    }

    /// `ftpseg ...args` inside the namespace, in `cwd`, with `env` added; started now.
    pub fn client(&self, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Client {
        let mut c = self.command(env!("CARGO_BIN_EXE_ftpseg"));
        c.args(args).current_dir(cwd).envs(env.iter().copied());
        let spawned = Instant::now();
        let mut child = c.spawn().expect("ftpseg");
        let pid = child.id().expect("a pid") as i32;
        let stderr = Lines::default();
        let stdout = Lines::default();
        let readers = [
            stderr.read_from(child.stderr.take().unwrap()),
            stdout.read_from(child.stdout.take().unwrap()),
        ];
        Client {
            child,
            pid,
            spawned,
            stderr,
            stdout,
            readers,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// `ftpseg serve` running inside a [`Netns`]; killed when dropped.
pub struct Served {
    _child: tokio::process::Child,
    url: String,
}

impl Served {
    /// The server's control address.
    pub fn addr(&self) -> std::net::SocketAddr {
        let host_port = self.url.trim_start_matches("ftp://").trim_end_matches('/');
        host_port
            .parse()
            .expect("ftpseg serve's URL names an address")
    }

    /// The URL of `name` in the served folder.
    pub fn url(&self, name: &str) -> String {
        format!("{}{name}", self.url)
    }
}

/// The lines a child wrote so far, each with the `Instant` the test read it.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<(Instant, String)>>>);

impl Lines {
    fn read_from(
        &self,
        pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let lines = self.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.0.lock().unwrap().push((Instant::now(), line));
            }
        })
    }

    pub fn snapshot(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        let lines = self.0.lock().unwrap();
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
}

/// The last `n` lines of `text`, for a failure message.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `ftpseg` client inside a [`Netns`].
pub struct Client {
    child: tokio::process::Child,
    pub pid: i32,
    /// Just before the spawn: the origin that [`Finished::trace`] puts the stamps on.
    pub spawned: Instant,
    pub stderr: Lines,
    pub stdout: Lines,
    readers: [tokio::task::JoinHandle<()>; 2],
}

impl Client {
    /// Freezes the process (SIGSTOP), as a laptop lid closing freezes every process at once.
    pub fn freeze(&self) {
        assert_eq!(unsafe { libc::kill(self.pid, libc::SIGSTOP) }, 0, "SIGSTOP");
    }

    /// Thaws it (SIGCONT).
    pub fn thaw(&self) {
        assert_eq!(unsafe { libc::kill(self.pid, libc::SIGCONT) }, 0, "SIGCONT");
    }

    /// The exit code if the process has ended (-1 for a signal), without waiting.
    pub fn exited(&mut self) -> Option<i32> {
        let status = self.child.try_wait().expect("try_wait")?;
        Some(status.code().unwrap_or(-1))
    }

    /// Waits (at most `limit`) for the process to end; kills it at the limit and panics with
    /// the end of its stderr.
    pub async fn finish(mut self, limit: Duration) -> Finished {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                panic!(
                    "ftpseg did not finish within {limit:?}; the end of its stderr:\n{}",
                    tail(&self.stderr.text(), 40)
                );
            }
        };
        let ended = Instant::now();
        for r in self.readers {
            // The pipes close with the process (nothing else holds them): EOF comes at once.
            let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
        }
        Finished {
            code: status.code().unwrap_or(-1),
            spawned: self.spawned,
            ended,
            stderr: self.stderr.snapshot(),
            stdout: self.stdout.text(),
        }
    }
}

/// What a [`Client`] did, once it ended.
pub struct Finished {
    /// The exit code (-1 for a signal).
    pub code: i32,
    pub spawned: Instant,
    /// When the test saw it end.
    pub ended: Instant,
    pub stderr: Vec<(Instant, String)>,
    pub stdout: String,
}

/// One `FTPSEG_TRACE` line: `[   12.345] text`.
pub fn trace_stamp(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (stamp, text) = rest.split_once("] ")?;
    Some((stamp.trim().parse().ok()?, text))
}

impl Finished {
    pub fn stderr_text(&self) -> String {
        self.stderr.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// The lines of stderr that are not trace lines.
    pub fn messages(&self) -> Vec<&str> {
        self.stderr
            .iter()
            .map(|(_, l)| l.as_str())
            .filter(|l| trace_stamp(l).is_none() && !l.trim().is_empty())
            .collect()
    }

    /// For the failure messages: exit code, the last messages and trace lines of stderr
    /// apart (a trace has a checkpoint line a second that would hide the messages), the end
    /// of stdout.
    pub fn describe(&self) -> String {
        let lines = |trace: bool| -> String {
            let picked: Vec<&str> = self
                .stderr
                .iter()
                .map(|(_, l)| l.as_str())
                .filter(|l| trace_stamp(l).is_some() == trace)
                .collect();
            tail(&picked.join("\n"), 20)
        };
        format!(
            "exit code {}\n--- stderr messages (end) ---\n{}\n--- stderr trace (end) ---\n{}\n\
             --- stdout (end) ---\n{}",
            self.code,
            lines(false),
            lines(true),
            tail(&self.stdout, 10)
        )
    }

    /// The trace lines, each with the `Instant` its event happened at the latest.
    ///
    /// A stamp counts seconds from the trace's origin t0, which the client takes at its first
    /// trace call: after the spawn by the process start (nsenter's exec, ftpseg's exec and its
    /// runtime), a few ms, more on a loaded machine. So `spawned + stamp` is the earliest the
    /// event can have happened. The latest: every line arrives after its event, so for each
    /// line `arrived - (spawned + stamp)` is at least `t0 - spawned`; the smallest over all
    /// lines bounds that offset from above (the test's reader is late on some lines, rarely
    /// on all). `spawned + stamp + that bound` is returned, the late end of the interval: a
    /// check that something happened within a time of another instant is then never
    /// flattered by the approximation.
    pub fn trace(&self) -> Vec<(Instant, &str)> {
        let stamped: Vec<(Instant, f64, &str)> = self
            .stderr
            .iter()
            .filter_map(|(arrived, l)| trace_stamp(l).map(|(s, t)| (*arrived, s, t)))
            .collect();
        let offset = stamped
            .iter()
            .map(|(arrived, s, _)| {
                arrived.saturating_duration_since(self.spawned + Duration::from_secs_f64(*s))
            })
            .min()
            .unwrap_or_default();
        stamped
            .into_iter()
            .map(|(_, s, t)| (self.spawned + Duration::from_secs_f64(s) + offset, t))
            .collect()
    }

    /// The (late end of the) `Instant` of each connection's first byte (traced as "conn N
    /// first byte at ..."; each reconnection starts with one) in `from..to`.
    pub fn first_bytes(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.trace()
            .into_iter()
            .filter(|(at, t)| (from..to).contains(at) && t.contains(" first byte at "))
            .map(|(at, _)| at)
            .collect()
    }

    /// The JSON objects of stdout (`--json`), or a panic naming a line that is not one.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// The durable bytes of the manifest beside an output, sampled every 50 ms (for at most 10
/// minutes) until dropped. A connection that resumes on its old TCP connection (the kernel's
/// retransmission reaching the other side again) traces no "first byte"; its bytes show here,
/// within a checkpoint interval of their arrival.
pub struct DurableWatch {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DurableWatch {
    pub fn start(out: &Path) -> DurableWatch {
        let path = ftpseg::internals::manifest::Manifest::path_for(out);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let into = samples.clone();
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            while Instant::now() < deadline {
                if let Ok(Some(m)) = ftpseg::internals::manifest::Manifest::load(&path) {
                    into.lock().unwrap().push((Instant::now(), m.bytes_done()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        DurableWatch { samples, task }
    }

    /// The most bytes recorded durable by `at`.
    pub fn durable_at(&self, at: Instant) -> u64 {
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .filter(|(t, _)| *t <= at)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0)
    }

    /// The first sample after `at` with more bytes durable than any sample up to `at`: bytes
    /// flowed after `at`, before that sample was taken (the late end, again).
    pub fn grew_after(&self, at: Instant) -> Option<Instant> {
        let base = self.durable_at(at);
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .find(|(t, b)| *t > at && *b > base)
            .map(|(t, _)| *t)
    }
}

impl Drop for DurableWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
