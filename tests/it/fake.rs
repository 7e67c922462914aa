//! A scriptable fake FTP server on 127.0.0.1, for server behaviours no real server has.
//!
//! Each control connection is served in order, one command at a time. A per-test hook sees every
//! command ([`Ctx`]) and may answer it with an [`Action`]; when it returns `None` the default
//! answer is used: `220` greeting, `USER`/`PASS` 331/230, `TYPE` 200, `FEAT` (211, multi-line:
//! SIZE MDTM REST STREAM EPSV PASV), `REST n` 350 (remembered for the next `RETR`), `SIZE` 213,
//! `MDTM` 213 [`MDTM`], `EPSV` 229 and `PASV` 227 (a fresh data listener on 127.0.0.1), `RETR`
//! `150`, the file from the `REST` offset, `226` (or `426` when the client closed the data
//! connection early), `NOOP` 200, `QUIT` 221, anything else 502.
//!
//! The file served is in memory. Connections, transfers and bytes are counted in [`Stats`].
//! Every wait is bounded ([`WAIT`], and [`LIFETIME`] per connection), and dropping the
//! [`FakeServer`] aborts its task and every connection task.
// A toolkit: not every action or counter is used by the tests of today.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout};

/// Longest the server waits for the client at any one point.
pub const WAIT: Duration = Duration::from_secs(30);
/// Longest any one connection is served.
pub const LIFETIME: Duration = Duration::from_secs(90);
/// The modification time the default `MDTM` reports.
pub const MDTM: &str = "20260101000000";
/// Data is written in pieces of this size (so an early close is noticed quickly).
const DATA_CHUNK: usize = 32 << 10;
/// Send buffer of data connections: small, so that the server notices a client that stops
/// reading early instead of finishing into the kernel's buffers.
const DATA_SNDBUF: usize = 64 << 10;

/// Deterministic bytes (xorshift64*), different for each seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `s` as reply bytes, with a CRLF added unless it already ends with a line feed.
pub fn crlf(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if !s.ends_with('\n') {
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// What the hook sees of one command.
pub struct Ctx<'a> {
    /// The command verb, upper case ("RETR").
    pub verb: &'a str,
    /// Everything after the verb and one space.
    pub arg: &'a str,
    /// 0-based index of this control connection.
    pub conn: usize,
    /// 0-based count of earlier commands with this verb, over all connections.
    pub nth: usize,
    /// The pending `REST` offset of this connection.
    pub rest: u64,
    /// The size of the served file.
    pub size: u64,
}

/// An answer to a command (or the greeting).
#[derive(Clone)]
pub enum Action {
    /// One or more reply lines; a CRLF is added unless the text ends with a line feed.
    Reply(String),
    /// Exactly these bytes.
    Raw(Vec<u8>),
    /// These bytes, then the control connection is closed.
    RawThenClose(Vec<u8>),
    /// A huge reply, streamed: `head`, then `line` `count` times, then `tail` (each as given, so
    /// include the CRLFs). Never split into single bytes.
    Huge {
        head: String,
        line: String,
        count: usize,
        tail: String,
    },
    /// Close the control connection without a word.
    Close,
    /// Say nothing (the client waits for its reply timeout).
    Silent,
    /// A `RETR` answered by this script.
    Retr(Retr),
}

/// When a `RETR` closes the control connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseControl {
    /// Never: the final replies are sent.
    Never,
    /// Right after the preliminary reply; the data is still sent.
    AfterPrelim,
    /// After the data, instead of the final replies (a server dying mid-transfer).
    AfterData,
}

/// What a `RETR` sends on its data connection.
#[derive(Clone, Debug)]
pub enum Data {
    /// The file from the `REST` offset to its end.
    File,
    /// The file from the `REST` offset up to this absolute offset (short data).
    UpTo(u64),
    /// At most this many bytes of the file from the `REST` offset.
    Cut(u64),
    /// The file from the `REST` offset to its end, then this many more bytes (the file grew).
    Extra(usize),
    /// Accept the data connection, send nothing, keep it open until the client goes.
    Nothing,
    /// Never accept the data connection (the kernel completes the handshake anyway); keep the
    /// listener open until the client goes.
    NoAccept,
    /// Close the data listener without accepting (a connection already queued is reset).
    DropListener,
}

/// A scripted `RETR`.
#[derive(Clone)]
pub struct Retr {
    /// The preliminary reply (bytes as sent), or none at all.
    pub prelim: Option<Vec<u8>>,
    pub data: Data,
    /// Replies after all the data was sent and the data connection closed.
    pub done: Vec<Vec<u8>>,
    /// Replies when the client closed the data connection before the end.
    pub aborted: Vec<Vec<u8>>,
    /// Pause between two final replies.
    pub gap: Duration,
    pub close_control: CloseControl,
}

impl Retr {
    /// The default: `150`, the file, `226` (or `426` after an early close).
    pub fn normal() -> Retr {
        Retr {
            prelim: Some(crlf("150 Opening BINARY mode data connection")),
            data: Data::File,
            done: vec![crlf("226 Transfer complete")],
            aborted: vec![crlf("426 Connection closed; transfer aborted")],
            gap: Duration::from_millis(100),
            close_control: CloseControl::Never,
        }
    }

    pub fn prelim(mut self, reply: Option<&str>) -> Retr {
        self.prelim = reply.map(crlf);
        self
    }

    pub fn prelim_raw(mut self, bytes: &[u8]) -> Retr {
        self.prelim = Some(bytes.to_vec());
        self
    }

    pub fn data(mut self, data: Data) -> Retr {
        self.data = data;
        self
    }

    pub fn done(mut self, replies: &[&str]) -> Retr {
        self.done = replies.iter().map(|r| crlf(r)).collect();
        self
    }

    pub fn aborted(mut self, replies: &[&str]) -> Retr {
        self.aborted = replies.iter().map(|r| crlf(r)).collect();
        self
    }

    pub fn close_control(mut self, when: CloseControl) -> Retr {
        self.close_control = when;
        self
    }
}

type Hook = Arc<dyn Fn(&Ctx<'_>) -> Option<Action> + Send + Sync>;

/// How the fake server behaves.
#[derive(Clone)]
pub struct Behavior {
    pub file: Arc<Vec<u8>>,
    pub greeting: Action,
    /// Write every control reply one byte at a time, with this pause between bytes.
    pub split: Option<Duration>,
    hook: Hook,
}

impl Behavior {
    /// Default behaviour serving `file`.
    pub fn new(file: Vec<u8>) -> Behavior {
        Behavior {
            file: Arc::new(file),
            greeting: Action::Reply("220 fake FTP server ready".into()),
            split: None,
            hook: Arc::new(|_| None),
        }
    }

    /// Answers commands with `hook` where it returns `Some`.
    pub fn on(mut self, hook: impl Fn(&Ctx<'_>) -> Option<Action> + Send + Sync + 'static) -> Self {
        self.hook = Arc::new(hook);
        self
    }

    pub fn greeting(mut self, greeting: Action) -> Self {
        self.greeting = greeting;
        self
    }

    pub fn split(mut self, pause: Duration) -> Self {
        self.split = Some(pause);
        self
    }
}

/// What happened on the server.
#[derive(Default)]
pub struct Stats {
    /// Control connections accepted.
    pub connections: AtomicUsize,
    /// `RETR` commands answered by a transfer script (default or custom).
    pub retrs: AtomicUsize,
    /// Transfers whose data was all written.
    pub completed: AtomicUsize,
    /// Transfers the client closed before the end of their data.
    pub aborted: AtomicUsize,
    /// Bytes written on data connections.
    pub data_bytes: AtomicU64,
    /// Bytes written on control connections.
    pub control_bytes: AtomicU64,
    commands: Mutex<Vec<String>>,
}

impl Stats {
    /// Every command received, in order of arrival.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }

    pub fn get(&self, counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

struct Shared {
    behavior: Behavior,
    stats: Arc<Stats>,
    counts: Mutex<HashMap<String, usize>>,
}

/// A running fake server; dropping it stops it and every connection.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(behavior: Behavior) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            behavior,
            stats: stats.clone(),
            counts: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(async move {
            // Dropped (and so aborted) with this task.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let index = shared.stats.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                conns.spawn(async move {
                    let _ = timeout(LIFETIME, serve(stream, index, shared)).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        FakeServer { addr, stats, task }
    }

    /// `ftp://127.0.0.1:port/path`.
    pub fn url(&self, path: &str) -> String {
        format!("ftp://{}/{}", self.addr, path)
    }

    /// `ftp://userinfo@127.0.0.1:port/path`.
    pub fn url_as(&self, userinfo: &str, path: &str) -> String {
        format!("ftp://{userinfo}@{}/{}", self.addr, path)
    }
}

struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    index: usize,
    rest: u64,
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
}

async fn serve(stream: TcpStream, index: usize, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut conn = Conn {
        rd: BufReader::new(rd),
        wr,
        index,
        rest: 0,
        listener: None,
        shared: shared.clone(),
    };
    if !conn.act(shared.behavior.greeting.clone()).await {
        return;
    }
    loop {
        let mut line = Vec::new();
        let read = timeout(WAIT, (&mut conn.rd).take(4096).read_until(b'\n', &mut line)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.to_owned()),
            None => (text.to_ascii_uppercase(), String::new()),
        };
        shared.stats.commands.lock().unwrap().push(text.clone());
        let nth = {
            let mut counts = shared.counts.lock().unwrap();
            let n = counts.entry(verb.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let ctx = Ctx {
            verb: &verb,
            arg: &arg,
            conn: index,
            nth,
            rest: conn.rest,
            size: shared.behavior.file.len() as u64,
        };
        let action = (shared.behavior.hook)(&ctx);
        let action = match action {
            Some(a) => a,
            None => conn.default_action(&verb, &arg).await,
        };
        if !conn.act(action).await {
            return;
        }
    }
}

impl Conn {
    async fn default_action(&mut self, verb: &str, arg: &str) -> Action {
        let reply = |s: &str| Action::Reply(s.to_owned());
        match verb {
            "USER" => reply("331 Password required"),
            "PASS" => reply("230 Logged in"),
            "TYPE" => reply("200 Type set"),
            "FEAT" => reply(
                "211-Features:\r\n SIZE\r\n MDTM\r\n REST STREAM\r\n EPSV\r\n PASV\r\n211 End",
            ),
            "REST" => match arg.trim().parse::<u64>() {
                Ok(n) => {
                    self.rest = n;
                    Action::Reply(format!("350 Restarting at {n}"))
                }
                Err(_) => reply("501 Bad offset"),
            },
            "SIZE" => Action::Reply(format!("213 {}", self.shared.behavior.file.len())),
            "MDTM" => Action::Reply(format!("213 {MDTM}")),
            "EPSV" | "PASV" => {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                self.listener = Some(listener);
                if verb == "EPSV" {
                    Action::Reply(format!("229 Entering Extended Passive Mode (|||{port}|)"))
                } else {
                    Action::Reply(format!(
                        "227 Entering Passive Mode (127,0,0,1,{},{})",
                        port >> 8,
                        port & 0xff
                    ))
                }
            }
            "RETR" => Action::Retr(Retr::normal()),
            "NOOP" => reply("200 NOOP ok"),
            "QUIT" => Action::RawThenClose(crlf("221 Goodbye")),
            _ => reply("502 Command not implemented"),
        }
    }

    /// Carries out `action`; false when the control connection is to be closed.
    async fn act(&mut self, action: Action) -> bool {
        match action {
            Action::Reply(text) => self.write(&crlf(&text)).await,
            Action::Raw(bytes) => self.write(&bytes).await,
            Action::RawThenClose(bytes) => {
                self.write(&bytes).await;
                false
            }
            Action::Huge {
                head,
                line,
                count,
                tail,
            } => self.huge(&head, &line, count, &tail).await,
            Action::Close => false,
            Action::Silent => true,
            Action::Retr(retr) => self.retr(retr).await,
        }
    }

    /// Writes control bytes (one at a time when the behaviour says so); false on failure.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        let stats = &self.shared.stats;
        match self.shared.behavior.split {
            Some(pause) => {
                for b in bytes {
                    if !matches!(
                        timeout(WAIT, self.wr.write_all(std::slice::from_ref(b))).await,
                        Ok(Ok(()))
                    ) {
                        return false;
                    }
                    stats.control_bytes.fetch_add(1, Ordering::SeqCst);
                    sleep(pause).await;
                }
                true
            }
            None => self.write_whole(bytes).await,
        }
    }

    /// Writes control bytes at once, never split; false on failure.
    async fn write_whole(&mut self, bytes: &[u8]) -> bool {
        let ok = matches!(timeout(WAIT, self.wr.write_all(bytes)).await, Ok(Ok(())));
        if ok {
            self.shared
                .stats
                .control_bytes
                .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        ok
    }

    async fn huge(&mut self, head: &str, line: &str, count: usize, tail: &str) -> bool {
        if !self.write_whole(head.as_bytes()).await {
            return false;
        }
        let per_chunk = (64 << 10) / line.len().max(1) + 1;
        let chunk = line.repeat(per_chunk).into_bytes();
        let mut left = count;
        while left > 0 {
            let n = left.min(per_chunk);
            if !self.write_whole(&chunk[..n * line.len()]).await {
                return false;
            }
            left -= n;
        }
        self.write_whole(tail.as_bytes()).await
    }

    /// Waits (bounded) until the client closes the control connection or sends something.
    async fn wait_for_client(&mut self) {
        let _ = timeout(WAIT, self.rd.fill_buf()).await;
    }

    async fn retr(&mut self, retr: Retr) -> bool {
        let stats = self.shared.stats.clone();
        stats.retrs.fetch_add(1, Ordering::SeqCst);
        let file = self.shared.behavior.file.clone();
        let len = file.len() as u64;
        let start = std::mem::take(&mut self.rest).min(len);
        let Some(listener) = self.listener.take() else {
            return self.write(&crlf("425 Use EPSV or PASV first")).await;
        };
        if let Some(prelim) = &retr.prelim
            && !self.write(prelim).await
        {
            return false;
        }
        if retr.close_control == CloseControl::AfterPrelim {
            let _ = self.wr.shutdown().await;
        }
        match retr.data {
            Data::DropListener => {
                drop(listener);
                sleep(Duration::from_millis(50)).await;
                stats.aborted.fetch_add(1, Ordering::SeqCst);
                return self.final_replies(&retr, true).await;
            }
            Data::NoAccept => {
                self.wait_for_client().await;
                drop(listener);
                return false;
            }
            _ => {}
        }
        let Ok(Ok((mut data, _))) = timeout(WAIT, listener.accept()).await else {
            return self.write(&crlf("425 No data connection")).await;
        };
        drop(listener);
        let _ = socket2::SockRef::from(&data).set_send_buffer_size(DATA_SNDBUF);
        let aborted = match retr.data {
            Data::Nothing => {
                // Until the client closes the data connection, or the control connection.
                let mut buf = [0u8; 64];
                tokio::select! {
                    _ = timeout(WAIT, data.read(&mut buf)) => {}
                    _ = timeout(WAIT, self.rd.fill_buf()) => {}
                }
                true
            }
            ref d => {
                let end = match *d {
                    Data::UpTo(e) => e.clamp(start, len),
                    Data::Cut(n) => start.saturating_add(n).min(len),
                    _ => len,
                };
                let mut payload = file[start as usize..end as usize].to_vec();
                if let Data::Extra(n) = *d {
                    payload.extend_from_slice(&pattern(n, 0xE87A));
                }
                let mut aborted = false;
                for chunk in payload.chunks(DATA_CHUNK) {
                    match timeout(WAIT, data.write_all(chunk)).await {
                        Ok(Ok(())) => {
                            stats
                                .data_bytes
                                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        }
                        _ => {
                            aborted = true;
                            break;
                        }
                    }
                }
                let _ = timeout(WAIT, data.shutdown()).await;
                aborted
            }
        };
        drop(data);
        if aborted {
            stats.aborted.fetch_add(1, Ordering::SeqCst);
        } else {
            stats.completed.fetch_add(1, Ordering::SeqCst);
        }
        if retr.close_control != CloseControl::Never {
            return false;
        }
        self.final_replies(&retr, aborted).await
    }

    async fn final_replies(&mut self, retr: &Retr, aborted: bool) -> bool {
        let replies = if aborted { &retr.aborted } else { &retr.done };
        for (i, reply) in replies.iter().enumerate() {
            if i > 0 {
                sleep(retr.gap).await;
            }
            if !self.write(reply).await {
                return false;
            }
        }
        true
    }
}
