//! Hostile servers: the real binary against a scripted fake server (`fake.rs`) that does what
//! no real server does. Every run must end well within its time limit with either the exact
//! bytes or one clear error line and the exit code documented in README.md.
//!
//! Each test runs its cases at once and reports every case that went wrong. Set
//! `HOSTILE_VERBOSE=1` (with `--nocapture`) to see each case's exit, message and server counters.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{code, ftpseg, stderr};
use crate::fake::*;
use ftpseg::internals::manifest::Manifest;
use ftpseg::part_path;

const MIB: usize = 1 << 20;
/// A run that takes longer than this hangs.
const RUN_LIMIT: Duration = Duration::from_secs(45);
/// A failing run (max-tries 2, 3 s timeouts) must have ended within this.
const FAIL_WITHIN: Duration = Duration::from_secs(20);
/// Short limits, so failures come quickly.
const TIMEOUTS: [&str; 8] = [
    "--reply-timeout",
    "3",
    "--stall-timeout",
    "3",
    "--connect-timeout",
    "3",
    "--max-tries",
    "2",
];

/// One finished run of the binary.
struct Run {
    out: Output,
    elapsed: Duration,
    /// Peak resident memory of the process, KiB.
    peak_rss_kib: u64,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn describe(&self) -> String {
        format!(
            "exit {} after {:.1} s, peak RSS {} KiB, stderr {:?}",
            code(&self.out),
            self.elapsed.as_secs_f64(),
            self.peak_rss_kib,
            stderr(&self.out)
        )
    }
}

/// Runs `ftpseg [TIMEOUTS] [args] -o <tmp>/f.bin url`; panics if it does not end in time.
/// Samples the process's peak resident memory (`VmHWM`) while it runs.
async fn fetch(url: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.bin");
    let mut all: Vec<&str> = TIMEOUTS.to_vec();
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", path.to_str().unwrap(), url]);
    let started = Instant::now();
    let child = ftpseg().args(&all).current_dir(dir.path()).spawn().unwrap();
    let pid = child.id().expect("running");
    let wait = child.wait_with_output();
    tokio::pin!(wait);
    let deadline = tokio::time::sleep(RUN_LIMIT);
    tokio::pin!(deadline);
    // Sampled from the start (so /proc is known to be readable), then every millisecond: a
    // client that kept a huge reply would hold it for as long as it takes to read it.
    let mut peak_rss_kib = vm_hwm_kib(pid).unwrap_or(0);
    let out = loop {
        tokio::select! {
            out = &mut wait => break out.unwrap(),
            _ = &mut deadline => panic!("ftpseg hung: no exit within {RUN_LIMIT:?}: {all:?}"),
            _ = tokio::time::sleep(Duration::from_millis(1)) => {
                peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(pid).unwrap_or(0));
            }
        }
    };
    Run {
        out,
        elapsed: started.elapsed(),
        peak_rss_kib,
        path,
        _dir: dir,
    }
}

/// The peak resident memory of process `pid` so far (`VmHWM` in /proc/<pid>/status, KiB);
/// `None` once it has exited.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The error line, if stderr is exactly one `ftpseg: error: ...` line.
fn one_line(run: &Run) -> Result<String, String> {
    let s = stderr(&run.out);
    let line = s.trim_end();
    if line.lines().count() != 1 || !line.starts_with("ftpseg: error: ") {
        return Err(format!("not one error line: {}", run.describe()));
    }
    Ok(line.to_owned())
}

/// Exit 0 and exactly `expected` saved, nothing left beside it.
fn exact(run: &Run, expected: &[u8]) -> Result<(), String> {
    if code(&run.out) != 0 {
        return Err(format!("failed: {}", run.describe()));
    }
    let got = std::fs::read(&run.path).map_err(|e| format!("no output: {e}"))?;
    if got.len() != expected.len() {
        return Err(format!(
            "exit 0 but {} bytes saved, {} expected",
            got.len(),
            expected.len()
        ));
    }
    if let Some(at) = got.iter().zip(expected).position(|(a, b)| a != b) {
        return Err(format!("exit 0 but the bytes differ first at offset {at}"));
    }
    if Manifest::path_for(&run.path).exists() || part_path(&run.path).exists() {
        return Err("manifest or .part left behind".into());
    }
    Ok(())
}

/// Exit `want`, one error line containing every needle (any case), no output file, quickly.
fn fails(run: &Run, want: i32, needles: &[&str]) -> Result<(), String> {
    if code(&run.out) != want {
        return Err(format!("exit {want} expected: {}", run.describe()));
    }
    let line = one_line(run)?;
    for needle in needles {
        if !line.to_lowercase().contains(&needle.to_lowercase()) {
            return Err(format!("{needle:?} not in {line:?}"));
        }
    }
    if run.path.exists() {
        return Err(format!("{} exists after a failure", run.path.display()));
    }
    if run.elapsed > FAIL_WITHIN {
        return Err(format!("took too long to fail: {}", run.describe()));
    }
    Ok(())
}

enum Expect {
    /// Exit 0, exact bytes.
    Exact,
    /// This exit code and one error line containing these words.
    Fail(i32, &'static [&'static str]),
    /// Either exact bytes with exit 0, or that failure (never wrong bytes with exit 0).
    ExactOr(i32, &'static [&'static str]),
}

type Check = Box<dyn Fn(&Stats, &Run) -> Result<(), String> + Send + Sync>;

struct Case {
    name: &'static str,
    behavior: Behavior,
    args: Vec<&'static str>,
    expect: Expect,
    check: Option<Check>,
}

fn case(name: &'static str, behavior: Behavior, expect: Expect) -> Case {
    Case {
        name,
        behavior,
        args: vec!["-q"],
        expect,
        check: None,
    }
}

impl Case {
    fn args(mut self, args: &[&'static str]) -> Case {
        self.args = args.to_vec();
        self
    }

    fn check(
        mut self,
        f: impl Fn(&Stats, &Run) -> Result<(), String> + Send + Sync + 'static,
    ) -> Case {
        self.check = Some(Box::new(f));
        self
    }

    async fn run(self) -> Result<(), String> {
        let data = self.behavior.file.clone();
        let server = FakeServer::start(self.behavior).await;
        let run = fetch(&server.url("f.bin"), &self.args).await;
        let verdict = match self.expect {
            Expect::Exact => exact(&run, &data),
            Expect::Fail(c, needles) => fails(&run, c, needles),
            Expect::ExactOr(c, needles) => {
                if code(&run.out) == 0 {
                    exact(&run, &data)
                } else {
                    fails(&run, c, needles)
                }
            }
        };
        if std::env::var_os("HOSTILE_VERBOSE").is_some() {
            let st = &server.stats;
            eprintln!(
                "[{}] {}; server: {} connections, {} RETRs ({} completed, {} stopped early), {} data bytes",
                self.name,
                run.describe(),
                st.get(&st.connections),
                st.get(&st.retrs),
                st.get(&st.completed),
                st.get(&st.aborted),
                st.data_bytes.load(std::sync::atomic::Ordering::SeqCst)
            );
        }
        let checked = match &self.check {
            Some(f) => f(&server.stats, &run),
            None => Ok(()),
        };
        match (verdict, checked) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(format!("{}: {e}", self.name)),
            (Err(e), Err(c)) => Err(format!("{}: {e}; and {c}", self.name)),
        }
    }
}

/// Runs the cases at once; fails listing every case that went wrong.
async fn run_cases(cases: Vec<Case>) {
    let results = futures::future::join_all(cases.into_iter().map(Case::run)).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A 3 MiB (and a bit) file: 3 ranges with the default -n 8 and --min-range 1M.
fn file(seed: u64) -> Vec<u8> {
    pattern(3 * MIB + 4321, seed)
}

/// A check that the server received `verb` at least once (so the case tested something).
fn saw(verb: &'static str) -> impl Fn(&Stats, &Run) -> Result<(), String> + Send + Sync {
    move |s, _| {
        let seen = s
            .commands()
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with(verb));
        if seen {
            Ok(())
        } else {
            Err(format!(
                "the client never sent {verb}: the case tested nothing"
            ))
        }
    }
}

/// Answers `verb` (every time, or only its first time) with `action`.
fn when(
    verb: &'static str,
    first_only: bool,
    action: Action,
) -> impl Fn(&Ctx<'_>) -> Option<Action> + Send + Sync + 'static {
    move |c| (c.verb == verb && (!first_only || c.nth == 0)).then(|| action.clone())
}

// 1. Huge replies.

/// Peak resident memory allowed to a run given a huge reply. A run of ftpseg (debug build)
/// peaks at 16-22 MiB here; with a reply cap of 24 MiB instead of 256 KiB, at 36-41 MiB.
const MEMORY_LIMIT_KIB: u64 = 32 << 10;

/// The process's peak resident memory stayed under [`MEMORY_LIMIT_KIB`].
fn peak_memory_bounded(_: &Stats, run: &Run) -> Result<(), String> {
    if run.peak_rss_kib == 0 {
        return Err("no memory sample was taken (is /proc mounted?)".into());
    }
    if run.peak_rss_kib > MEMORY_LIMIT_KIB {
        return Err(format!(
            "the client's memory peaked at {} KiB, more than {MEMORY_LIMIT_KIB} KiB",
            run.peak_rss_kib
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_replies_are_refused_with_bounded_memory() {
    // About 64 MB of reply: the client must stop reading at its cap (256 KiB), not buffer it.
    const LINES: usize = 1_000_000;
    let long_line = format!("220-{}\r\n", "x".repeat(60));
    let feat_line = format!(" {}\r\n", "FEATURE".repeat(9));
    let total = (LINES * 64) as u64;
    let bounded = move |s: &Stats, run: &Run| {
        let sent = s.control_bytes.load(std::sync::atomic::Ordering::SeqCst);
        if sent >= total / 2 {
            Err(format!(
                "the client read {sent} bytes of a {total}-byte reply"
            ))
        } else {
            peak_memory_bounded(s, run)
        }
    };
    run_cases(vec![
        case(
            "greeting of a million lines",
            Behavior::new(file(1)).greeting(Action::Huge {
                head: "220-Welcome\r\n".into(),
                line: long_line.clone(),
                count: LINES,
                tail: "220 ready\r\n".into(),
            }),
            Expect::Fail(12, &["larger than"]),
        )
        .check(bounded),
        case(
            "FEAT of a million lines",
            Behavior::new(file(2)).on(when(
                "FEAT",
                false,
                Action::Huge {
                    head: "211-Features:\r\n".into(),
                    line: feat_line.clone(),
                    count: LINES,
                    tail: "211 End\r\n".into(),
                },
            )),
            Expect::Fail(12, &["larger than"]),
        )
        .check(bounded),
        case(
            "greeting that is one endless line",
            Behavior::new(file(3)).greeting(Action::Huge {
                head: "220 ".into(),
                line: "y".repeat(64),
                count: LINES,
                tail: "\r\n".into(),
            }),
            Expect::Fail(12, &["larger than"]),
        )
        .check(bounded),
        case(
            "first RETR answered by a 16 MB 150",
            Behavior::new(file(4)).on(move |c| {
                (c.verb == "RETR" && c.nth == 0).then(|| {
                    let mut huge = b"150-Here it comes\r\n".to_vec();
                    huge.extend(long_line.replace("220", "150").repeat(250_000).bytes());
                    huge.extend_from_slice(b"150 Opening\r\n");
                    Action::Retr(Retr::normal().prelim_raw(&huge))
                })
            }),
            Expect::Exact,
        )
        .check(peak_memory_bounded),
    ])
    .await;
}

// 2. SIZE replies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_replies_that_are_not_a_size_exit_12() {
    let size_case = |name, text: &'static str, seed| {
        case(
            name,
            Behavior::new(file(seed)).on(when("SIZE", false, Action::Reply(text.into()))),
            Expect::Fail(12, &["SIZE"]),
        )
    };
    run_cases(vec![
        size_case("negative", "213 -5", 1),
        size_case("too big for 64 bits", "213 99999999999999999999", 2),
        size_case("above 2^60", "213 1152921504606846977", 3),
        size_case("words", "213 lots", 4),
        size_case("nothing", "213 ", 5),
        // Exactly 2^60 is believed; the disk cannot hold it: "need X, have Y", exit 8.
        case(
            "2^60 exactly",
            Behavior::new(file(6)).on(when(
                "SIZE",
                false,
                Action::Reply("213 1152921504606846976".into()),
            )),
            Expect::Fail(8, &["need", "have"]),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_zero_for_a_non_empty_file_is_never_saved_as_empty() {
    // SIZE says 0 but RETR has 3 MiB: like "more data than SIZE" (exit 11), or the real bytes;
    // never an empty file with exit 0.
    run_cases(vec![case(
        "213 0 for a 3 MiB file",
        Behavior::new(file(7)).on(when("SIZE", false, Action::Reply("213 0".into()))),
        Expect::ExactOr(11, &["SIZE"]),
    )])
    .await;
}

// 3. A 150 without a usable data connection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_silent_data_connection_ends_by_the_timeouts() {
    let always = |data: Data| when("RETR", false, Action::Retr(Retr::normal().data(data)));
    run_cases(vec![
        case(
            "150, never accepted",
            Behavior::new(file(1)).on(always(Data::NoAccept)),
            Expect::Fail(7, &["after 2 tries", "no byte for 3 s"]),
        ),
        case(
            "150, accepted, nothing sent, never closed",
            Behavior::new(file(2)).on(always(Data::Nothing)),
            Expect::Fail(7, &["after 2 tries", "no byte for 3 s"]),
        ),
        case(
            "150, then the data listener closed",
            Behavior::new(file(3)).on(always(Data::DropListener)),
            Expect::Fail(7, &["after 2 tries"]),
        ),
        case(
            "EPSV names a port where nothing listens",
            Behavior::new(file(4)).on(|c| {
                (c.verb == "EPSV").then(|| {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let port = l.local_addr().unwrap().port();
                    drop(l);
                    Action::Reply(format!("229 Entering Extended Passive Mode (|||{port}|)"))
                })
            }),
            Expect::Fail(7, &["after 2 tries"]),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_silent_data_connection_once_is_retried() {
    let once = |data: Data| when("RETR", true, Action::Retr(Retr::normal().data(data)));
    let retried = |s: &Stats, _: &Run| {
        if s.get(&s.connections) < 2 {
            return Err("the failed session was not replaced".into());
        }
        Ok(())
    };
    run_cases(vec![
        case(
            "first RETR never accepted",
            Behavior::new(file(5)).on(once(Data::NoAccept)),
            Expect::Exact,
        )
        .check(retried),
        case(
            "first RETR silent",
            Behavior::new(file(6)).on(once(Data::Nothing)),
            Expect::Exact,
        )
        .check(retried),
        case(
            "first RETR's listener closed",
            Behavior::new(file(7)).on(once(Data::DropListener)),
            Expect::Exact,
        )
        .check(retried),
    ])
    .await;
}

// 4. Data without a preliminary reply; 125 instead of 150.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_without_a_preliminary_reply() {
    let no_prelim = Action::Retr(Retr::normal().prelim(None));
    run_cases(vec![
        // 3 MiB do not fit in the socket buffers: the server blocks before its 226.
        case(
            "every RETR: data and 226, no 150",
            Behavior::new(file(1)).on(when("RETR", false, no_prelim.clone())),
            Expect::Fail(7, &["after 2 tries", "RETR"]),
        ),
        // 100 KB do: the 226 arrives where the 150 should be.
        case(
            "every RETR: 100 KB and 226, no 150",
            Behavior::new(file(4)).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().prelim(None).data(Data::Cut(100_000))),
            )),
            Expect::Fail(7, &["after 2 tries", "226"]),
        ),
        case(
            "first RETR: data and 226, no 150",
            Behavior::new(file(2)).on(when("RETR", true, no_prelim)),
            Expect::Exact,
        ),
        case(
            "125 instead of 150",
            Behavior::new(file(3)).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().prelim(Some("125 Data connection already open"))),
            )),
            Expect::Exact,
        )
        .args(&["-q", "-n", "4"]),
    ])
    .await;
}

// 5. Replies split across TCP packets.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_sent_one_byte_at_a_time_are_byte_exact() {
    run_cases(vec![
        case(
            "every reply byte by byte",
            Behavior::new(pattern(4 * MIB + 77, 5)).split(Duration::from_millis(1)),
            Expect::Exact,
        )
        .args(&["-q", "-n", "4"])
        .check(|s, _| {
            if s.get(&s.retrs) < 4 {
                return Err(format!("only {} transfers", s.get(&s.retrs)));
            }
            Ok(())
        }),
        case(
            "every reply byte by byte, PASV only",
            Behavior::new(pattern(4 * MIB + 78, 6))
                .split(Duration::from_millis(1))
                .on(|c| match c.verb {
                    "FEAT" => Some(Action::Reply(
                        "211-Features:\r\n SIZE\r\n MDTM\r\n REST STREAM\r\n PASV\r\n211 End"
                            .into(),
                    )),
                    "EPSV" => Some(Action::Reply("500 EPSV not understood".into())),
                    _ => None,
                }),
            Expect::Exact,
        )
        .args(&["-q", "-n", "4"])
        .check(saw("PASV")),
    ])
    .await;
}

// 6. Fewer bytes than SIZE, claimed complete.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_data_claimed_complete_is_never_accepted() {
    let data = file(1);
    let cut = data.len() as u64 / 2 + 12_345;
    let tail = data.len() as u64 - 1000;
    let kept = |_: &Stats, run: &Run| {
        if !part_path(&run.path).exists() || !Manifest::path_for(&run.path).exists() {
            return Err("the .part and manifest were not kept".into());
        }
        Ok(())
    };
    run_cases(vec![
        case(
            "every RETR ends mid-file with 226",
            Behavior::new(data).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().data(Data::UpTo(cut))),
            )),
            Expect::Fail(7, &["after 2 tries", "data ended at byte"]),
        )
        .check(kept),
        case(
            "every RETR ends 1000 bytes early with 226",
            Behavior::new(file(2)).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().data(Data::UpTo(tail))),
            )),
            Expect::Fail(7, &["after 2 tries", "data ended at byte"]),
        )
        .check(kept),
        case(
            "every RETR ends 1000 bytes early with 226, one connection",
            Behavior::new(file(3)).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().data(Data::UpTo(tail))),
            )),
            Expect::Fail(7, &["after 2 tries", "data ended at byte"]),
        )
        .args(&["-q", "-n", "1"])
        .check(kept),
        case(
            "first RETR short with 226",
            Behavior::new(file(4)).on(when(
                "RETR",
                true,
                Action::Retr(Retr::normal().data(Data::Cut(300_000))),
            )),
            Expect::Exact,
        ),
    ])
    .await;
}

// 7. More bytes than SIZE.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_data_than_size_exits_11() {
    let grown = Action::Retr(Retr::normal().data(Data::Extra(100)));
    let kept = |_: &Stats, run: &Run| {
        if !part_path(&run.path).exists() {
            return Err("the .part was not kept".into());
        }
        Ok(())
    };
    run_cases(vec![
        case(
            "100 bytes more than SIZE",
            Behavior::new(file(1)).on(when("RETR", false, grown.clone())),
            Expect::Fail(11, &["SIZE", "--restart"]),
        )
        .check(kept),
        case(
            "100 bytes more than SIZE, one connection",
            Behavior::new(file(2)).on(when("RETR", false, grown)),
            Expect::Fail(11, &["SIZE", "--restart"]),
        )
        .args(&["-q", "-n", "1"])
        .check(kept),
    ])
    .await;
}

// 8. Extra replies after an early stop.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_replies_after_an_early_stop_keep_the_channel_in_step() {
    let stopped_early = |s: &Stats, _: &Run| {
        if s.get(&s.aborted) == 0 {
            return Err("no transfer was stopped early: the case tested nothing".into());
        }
        Ok(())
    };
    let four = pattern(4 * MIB + 999, 8);
    run_cases(vec![
        case(
            "426 then 226",
            Behavior::new(four.clone()).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().aborted(&[
                    "426 Connection closed; transfer aborted",
                    "226 Transfer complete",
                ])),
            )),
            Expect::Exact,
        )
        .args(&["-q", "-n", "4"])
        .check(stopped_early),
        case(
            "pure-ftpd: 150 instead of 426",
            Behavior::new(four.clone()).on(when(
                "RETR",
                false,
                Action::Retr(
                    Retr::normal()
                        .prelim_raw(b"150-Accepted data connection\r\n150 4096.9 kbytes to download\r\n")
                        .aborted(&["150 0.003 seconds (measured here), 311.54 Mbytes per second"])
                        .done(&[
                            "226-File successfully transferred\r\n226 0.013 seconds (measured here), 307.11 Mbytes per second",
                        ]),
                ),
            )),
            Expect::Exact,
        )
        .args(&["-q", "-n", "4"])
        .check(stopped_early),
        case(
            "three replies, then 226 again",
            Behavior::new(four.clone()).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().aborted(&[
                    "451 Transfer aborted",
                    "426 Data connection closed",
                    "150 0.003 seconds",
                    "226 Done anyway",
                ])),
            )),
            Expect::Exact,
        )
        .args(&["-q", "-n", "4"])
        .check(stopped_early),
        case(
            "no reply at all after an early stop",
            Behavior::new(four).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().aborted(&[])),
            )),
            Expect::Exact,
        )
        .args(&["-q", "-n", "4"])
        .check(stopped_early),
    ])
    .await;
}

// 9. Unknown codes and lines without a code.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_reply_codes_before_the_transfer_exit_12() {
    let at = |name, verb: &'static str, text: &'static str, seed| {
        case(
            name,
            Behavior::new(file(seed)).on(when(verb, false, Action::Reply(text.into()))),
            Expect::Fail(12, &[]),
        )
    };
    run_cases(vec![
        case(
            "greeting 999",
            Behavior::new(file(1)).greeting(Action::Reply("999 what".into())),
            Expect::Fail(12, &["999 what"]),
        ),
        case(
            "greeting without a code",
            Behavior::new(file(2)).greeting(Action::Reply("hello, no code here".into())),
            Expect::Fail(12, &[]),
        ),
        at("USER 999", "USER", "999 what", 3),
        at("PASS 999", "PASS", "999 what", 4),
        at("TYPE 999", "TYPE", "999 what", 5),
        at("REST 0 probe 999", "REST", "999 what", 6),
        at("SIZE 999", "SIZE", "999 what", 7),
        at("SIZE without a code", "SIZE", "what is this", 8),
        // Not a reply line at all: the client waits for one, within the reply timeout.
        case(
            "SIZE 2130",
            Behavior::new(file(9)).on(when("SIZE", false, Action::Reply("2130 4321".into()))),
            Expect::Fail(4, &["SIZE", "no answer within 3 s"]),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_reply_codes_during_the_transfer_are_survived() {
    let once =
        |verb: &'static str, text: &'static str| when(verb, true, Action::Reply(text.into()));
    run_cases(vec![
        case(
            "FEAT 999",
            Behavior::new(file(1)).on(when("FEAT", false, Action::Reply("999 what".into()))),
            Expect::Exact,
        )
        .check(saw("FEAT")),
        case(
            "MDTM 999",
            Behavior::new(file(2)).on(when("MDTM", false, Action::Reply("999 what".into()))),
            Expect::Exact,
        )
        .check(saw("MDTM")),
        case(
            "first EPSV 999",
            Behavior::new(file(3)).on(once("EPSV", "999 what")),
            Expect::Exact,
        )
        .check(saw("EPSV")),
        case(
            "first RETR 999",
            Behavior::new(file(4)).on(once("RETR", "999 what")),
            Expect::Exact,
        ),
        case(
            "first RETR without a code",
            Behavior::new(file(5)).on(once("RETR", "opening, promise")),
            Expect::Exact,
        ),
        case(
            "999 instead of the first 226",
            Behavior::new(file(6)).on(when(
                "RETR",
                true,
                Action::Retr(Retr::normal().done(&["999 what"]).aborted(&["999 what"])),
            )),
            Expect::Exact,
        )
        .args(&["-q", "-n", "1"]),
        case(
            "a codeless line instead of the first 226",
            Behavior::new(file(7)).on(when(
                "RETR",
                true,
                Action::Retr(Retr::normal().done(&["all good"]).aborted(&["all good"])),
            )),
            Expect::Exact,
        )
        .args(&["-q", "-n", "1"]),
        case(
            "first NOOP 999",
            noop_while_a_range_is_missing(),
            Expect::Exact,
        )
        .args(&["-q", "-n", "2"])
        .check(saw("NOOP")),
    ])
    .await;
}

/// The first `NOOP` is answered 999. A range stopped early is followed by `NOOP` only while
/// other bytes are still missing (the session may be needed again; at the very end it is not),
/// so the range that ends at the end of the file is cut short once: it is fetched again after a
/// backoff, and the other range stops early meanwhile.
fn noop_while_a_range_is_missing() -> Behavior {
    let cut = std::sync::atomic::AtomicBool::new(false);
    Behavior::new(file(8)).on(move |c| match c.verb {
        "NOOP" if c.nth == 0 => Some(Action::Reply("999 what".into())),
        "RETR" if c.rest > 0 && !cut.swap(true, std::sync::atomic::Ordering::SeqCst) => {
            Some(Action::Retr(Retr::normal().data(Data::Cut(100_000))))
        }
        _ => None,
    })
}

// 10. The control connection closed mid-reply and mid-transfer.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_connection_closed_mid_reply() {
    let cut = |verb: &'static str, bytes: &'static [u8]| {
        when(verb, false, Action::RawThenClose(bytes.to_vec()))
    };
    run_cases(vec![
        case(
            "mid-greeting",
            Behavior::new(file(1))
                .greeting(Action::RawThenClose(b"220-Welcome\r\n220-to th".to_vec())),
            Expect::Fail(4, &[]),
        ),
        case(
            "mid-FEAT",
            Behavior::new(file(2)).on(cut("FEAT", b"211-Features:\r\n SIZE\r\n RE")),
            Expect::Fail(4, &["FEAT"]),
        ),
        case(
            "mid-SIZE",
            Behavior::new(file(3)).on(cut("SIZE", b"213 31")),
            Expect::Fail(4, &[]),
        ),
        case(
            "right after PASS",
            Behavior::new(file(4)).on(cut("PASS", b"")),
            Expect::Fail(4, &["login"]),
        ),
        case(
            "mid-150 of the first RETR",
            Behavior::new(file(5)).on(when(
                "RETR",
                true,
                Action::Retr(
                    Retr::normal()
                        .prelim_raw(b"150 Open")
                        .close_control(CloseControl::AfterPrelim),
                ),
            )),
            Expect::Exact,
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_connection_closed_mid_transfer() {
    run_cases(vec![
        case(
            "first RETR: server dies after 300 KB",
            Behavior::new(file(1)).on(when(
                "RETR",
                true,
                Action::Retr(
                    Retr::normal()
                        .data(Data::Cut(300_000))
                        .close_control(CloseControl::AfterData),
                ),
            )),
            Expect::Exact,
        ),
        case(
            "every RETR that has more than 256 KiB to send dies after 256 KiB",
            Behavior::new(file(2)).on(|c| {
                (c.verb == "RETR" && c.rest + (256 << 10) < c.size).then(|| {
                    Action::Retr(
                        Retr::normal()
                            .data(Data::Cut(256 << 10))
                            .close_control(CloseControl::AfterData),
                    )
                })
            }),
            Expect::Exact,
        )
        .check(|s, _| {
            if s.get(&s.connections) < 10 {
                return Err(format!("only {} connections", s.get(&s.connections)));
            }
            Ok(())
        }),
        // The end of the file is never confirmed by a 226: it cannot be trusted, ever.
        case(
            "every RETR: all data, then the control connection closed",
            Behavior::new(file(4)).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().close_control(CloseControl::AfterData)),
            )),
            Expect::Fail(7, &["after 2 tries", "end of transfer"]),
        ),
        case(
            "control closed after 150, all data sent, one connection",
            Behavior::new(file(3)).on(when(
                "RETR",
                true,
                Action::Retr(Retr::normal().close_control(CloseControl::AfterPrelim)),
            )),
            Expect::Exact,
        )
        .args(&["-q", "-n", "1"])
        .check(|s, _| {
            // The bytes of the attempt whose end was never confirmed are fetched again.
            if s.get(&s.retrs) < 2 {
                return Err("the unconfirmed transfer was trusted".into());
            }
            Ok(())
        }),
    ])
    .await;
}

// 12. MDTM garbage.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdtm_garbage_is_ignored() {
    let mdtm = |name, text: &'static str, seed| {
        case(
            name,
            Behavior::new(file(seed)).on(when("MDTM", false, Action::Reply(text.into()))),
            Expect::Exact,
        )
        .check(saw("MDTM"))
    };
    run_cases(vec![
        mdtm("not a date", "213 notadate", 1),
        mdtm("month 13", "213 20261399999999", 2),
        mdtm("empty", "213 ", 3),
        mdtm("huge number", "213 99999999999999999999999999999999", 4),
        mdtm("not implemented", "502 MDTM not implemented", 5),
    ])
    .await;
}

// More hostile behaviours.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_accepted_but_ignored_is_never_saved() {
    // Every transfer starts at byte 0 whatever REST said, so every range but the first gets the
    // wrong bytes. The range that ends at the end of the file then sees more data than SIZE
    // allows: the run must stop, never save the mix.
    run_cases(vec![
        case(
            "350 to REST, data from byte 0",
            Behavior::new(file(1)).on(when(
                "REST",
                false,
                Action::Reply("350 Restarting (not really)".into()),
            )),
            Expect::Fail(11, &["SIZE", "--restart"]),
        )
        .args(&["-q", "-n", "2"]),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_size_and_a_wrong_size_in_the_150() {
    let announcing = |data: Vec<u8>, announced: u64| {
        Behavior::new(data).on(move |c| match c.verb {
            "SIZE" => Some(Action::Reply("502 SIZE not implemented".into())),
            "RETR" => Some(Action::Retr(Retr::normal().prelim(Some(&format!(
                "150 Opening BINARY mode data connection for f.bin ({announced} bytes)"
            ))))),
            _ => None,
        })
    };
    let len = file(1).len() as u64;
    run_cases(vec![
        case(
            "150 announces half the size",
            announcing(file(1), len / 2),
            Expect::Fail(11, &["--restart"]),
        ),
        case(
            "150 announces twice the size",
            announcing(file(2), len * 2),
            Expect::Fail(7, &["after 2 tries", "data ended at byte"]),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_text_with_control_characters_is_one_printable_line() {
    // Escape sequences, a bell, a NUL, a lone CR and invalid UTF-8 in a 550: the message is
    // still one line, and nothing reaches the terminal that could drive it.
    let nasty =
        b"550-No such\r\n\x1b[31mfile\x07 \x00here\rX\xff\xfe\r\n550 \x1b]0;pwned\x07end\r\n";
    run_cases(vec![
        case(
            "550 full of control characters",
            Behavior::new(file(1)).on(when("SIZE", false, Action::Raw(nasty.to_vec()))),
            Expect::Fail(6, &["f.bin", "no such"]),
        )
        .check(|_, run| {
            let err = &run.out.stderr;
            let body = err.strip_suffix(b"\n").unwrap_or(err);
            match body.iter().find(|&&b| b < 0x20 || b == 0x7f) {
                Some(b) => Err(format!("control byte {b:#04x} in {:?}", stderr(&run.out))),
                None => Ok(()),
            }
        }),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_or_broken_replies_are_bounded_by_the_reply_timeout() {
    run_cases(vec![
        // One byte of greeting every 400 ms: each byte is in time, the whole reply is not.
        case(
            "greeting trickled over 10 s",
            Behavior::new(file(1)).split(Duration::from_millis(400)),
            Expect::Fail(4, &["greeting", "no answer within 3 s"]),
        )
        .check(|_, run| {
            if run.elapsed > Duration::from_secs(6) {
                return Err(format!(
                    "the reply timeout did not bound the greeting: {}",
                    run.describe()
                ));
            }
            Ok(())
        }),
        case(
            "EPSV port out of range",
            Behavior::new(file(2)).on(when(
                "EPSV",
                false,
                Action::Reply("229 Entering Extended Passive Mode (|||99999|)".into()),
            )),
            Expect::Fail(7, &["after 2 tries"]),
        ),
        case(
            "EPSV without a port",
            Behavior::new(file(3)).on(when(
                "EPSV",
                false,
                Action::Reply("229 Entering Extended Passive Mode".into()),
            )),
            Expect::Fail(7, &["after 2 tries"]),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_connection_failures_are_not_blamed_on_the_control_connection() {
    // The control connection stays up in all three cases; only the data connection fails.
    // A message saying "control connection lost" sends the user looking in the wrong place.
    let blames_control = |_: &Stats, run: &Run| {
        let err = stderr(&run.out);
        if err.contains("control connection lost") {
            Err(format!(
                "a data connection failure blamed on the control connection: {err:?}"
            ))
        } else {
            Ok(())
        }
    };
    let half = file(1).len() as u64 / 2;
    run_cases(vec![
        case(
            "data ends early, 226",
            Behavior::new(file(1)).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().data(Data::UpTo(half))),
            )),
            Expect::Fail(7, &["after 2 tries", "data ended at byte"]),
        )
        .check(blames_control),
        case(
            "data connection reset",
            Behavior::new(file(2)).on(when(
                "RETR",
                false,
                Action::Retr(Retr::normal().data(Data::DropListener)),
            )),
            Expect::Fail(7, &["after 2 tries", "reset"]),
        )
        .check(blames_control),
        case(
            "data connection refused",
            Behavior::new(file(3)).on(|c| {
                (c.verb == "EPSV").then(|| {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let port = l.local_addr().unwrap().port();
                    drop(l);
                    Action::Reply(format!("229 Entering Extended Passive Mode (|||{port}|)"))
                })
            }),
            Expect::Fail(7, &["after 2 tries", "refused"]),
        )
        .check(blames_control),
    ])
    .await;
}

// 13. The password never appears.

const MARKER: &str = "S3cr3t-Marker";

fn no_marker(run: &Run) -> Result<(), String> {
    for (what, text) in [("stdout", run.stdout()), ("stderr", stderr(&run.out))] {
        if text.contains(MARKER) {
            return Err(format!("the password is in {what}: {text:?}"));
        }
    }
    Ok(())
}

async fn with_password(behavior: Behavior) -> Run {
    let server = FakeServer::start(behavior).await;
    let url = server.url_as(&format!("user:{MARKER}"), "f.bin");
    fetch(&url, &["--plain", "--checkpoint-interval", "1"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_never_appears_when_login_is_refused() {
    let run = with_password(Behavior::new(file(1)).on(when(
        "PASS",
        false,
        Action::Reply("530 Login incorrect".into()),
    )))
    .await;
    assert_eq!(code(&run.out), 5, "{}", run.describe());
    let line = one_line(&run).unwrap();
    assert!(line.contains("'user'"), "{line}");
    no_marker(&run).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_never_appears_when_the_transfer_fails() {
    let data = file(2);
    let half = data.len() as u64 / 2;
    let run = with_password(Behavior::new(data).on(when(
        "RETR",
        false,
        Action::Retr(Retr::normal().data(Data::UpTo(half))),
    )))
    .await;
    assert_eq!(code(&run.out), 7, "{}", run.describe());
    no_marker(&run).unwrap();
    let manifest = std::fs::read_to_string(Manifest::path_for(&run.path))
        .expect("the manifest is kept after a failure");
    assert!(manifest.contains("user@"), "{manifest}");
    assert!(
        !manifest.contains(MARKER),
        "password in the manifest: {manifest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_echoed_by_the_server_is_not_printed() {
    // A hostile server quotes the password back; the README promises it never appears in
    // messages, so the reply text must not carry it to the terminal.
    let run = with_password(Behavior::new(file(3)).on(|c| {
        (c.verb == "PASS").then(|| Action::Reply(format!("530 Wrong password '{}'", c.arg)))
    }))
    .await;
    assert_eq!(code(&run.out), 5, "{}", run.describe());
    one_line(&run).unwrap();
    no_marker(&run).unwrap();
}
