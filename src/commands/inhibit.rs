//! `--inhibit-sleep`: a systemd-logind sleep inhibitor held while a download or upload runs,
//! so the laptop does not suspend under it ("ftpseg: downloading big.iso" in `systemd-inhibit
//! --list`).
//!
//! The lock is taken by logind's own tool, `systemd-inhibit --what=sleep --mode=block`, running
//! a `cat` on a pipe from ftpseg: logind holds the lock while that command runs, and the
//! command ends when ftpseg closes the pipe, at the end of the run or when ftpseg dies in any
//! way (`kill -9` included), so a lock never outlives ftpseg. Where there is no logind (no
//! systemd, a container, no system bus) the run goes on without it and says so once: a sleep
//! is survived anyway (the download resumes on waking, `retry::clock`).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long logind gets to grant the lock.
const GRANT_WAIT: Duration = Duration::from_secs(3);

/// A held sleep inhibitor; dropping it releases the lock.
#[derive(Debug)]
pub struct SleepInhibitor {
    child: Child,
}

impl SleepInhibitor {
    /// Takes the lock, with `why` shown to the user by logind ("downloading big.iso"). `Err`
    /// says why it could not be held, in a phrase.
    pub async fn hold(why: &str) -> Result<SleepInhibitor, String> {
        let mut child = Command::new("systemd-inhibit")
            .args(["--what=sleep", "--who=ftpseg", "--mode=block"])
            .arg(format!("--why={why}"))
            .args(["sh", "-c", "echo held && exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "systemd-inhibit is not installed (no systemd-logind here)".to_owned()
                }
                _ => format!("cannot run systemd-inhibit: {e}"),
            })?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        match tokio::time::timeout(GRANT_WAIT, read).await {
            Ok(Ok(_)) if line.trim() == "held" => Ok(SleepInhibitor { child }),
            Ok(_) => Err(refusal(&mut child).await),
            Err(_) => Err(format!(
                "systemd-logind did not grant the lock within {} s",
                GRANT_WAIT.as_secs()
            )),
        }
    }
}

/// Why `systemd-inhibit` ended without running the command: the last line it wrote.
async fn refusal(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = tokio::time::timeout(GRANT_WAIT, err.read_to_string(&mut text)).await;
    }
    let _ = tokio::time::timeout(GRANT_WAIT, child.wait()).await;
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => format!("systemd-inhibit: {}", last.trim()),
        None => "systemd-inhibit ended without taking the lock".to_owned(),
    }
}

impl SleepInhibitor {
    /// Releases the lock and waits (a moment at most) until logind has it back.
    pub async fn release(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
    }
}

impl Drop for SleepInhibitor {
    fn drop(&mut self) {
        // Closing the pipe ends `cat`, then systemd-inhibit, which releases the lock (never a
        // kill: systemd-inhibit ends as it should). tokio reaps the child.
        drop(self.child.stdin.take());
    }
}

/// Holds the lock for a run when asked (`--inhibit-sleep`), saying on standard error what
/// happened unless `quiet`; `None` when not asked or not available.
pub async fn maybe_hold(asked: bool, why: &str, quiet: bool) -> Option<SleepInhibitor> {
    if !asked {
        return None;
    }
    match SleepInhibitor::hold(why).await {
        Ok(held) => {
            if !quiet {
                eprintln!("ftpseg: the machine will not sleep until this ends (--inhibit-sleep)");
            }
            Some(held)
        }
        Err(why_not) => {
            eprintln!(
                "ftpseg: warning: --inhibit-sleep: {why_not}; the machine may sleep, and the \
                 run then resumes when it wakes"
            );
            None
        }
    }
}
