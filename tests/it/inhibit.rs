//! `--inhibit-sleep` with the real binary. This machine has no systemd-logind (no system bus),
//! so the lock itself is taken by a stand-in `systemd-inhibit` first on `PATH` that behaves as
//! the real one does towards its caller: it runs the command it is given and ends with it, and
//! writes down its arguments and when it ended. What is checked is ftpseg's side: the arguments
//! (sleep, block, who, why), the lock held during the download and released at its end and when
//! ftpseg is killed, and a refusal that becomes one warning while the download goes on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use ftpseg::testserver::Faults;

const MIB: u64 = 1 << 20;

/// A folder with a `systemd-inhibit` running `script` (sh), and `PATH` with it first.
fn stand_in(dir: &Path, script: &str) -> (PathBuf, String) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join("systemd-inhibit");
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (bin, path)
}

/// Like logind's tool: note the options, run the command after them, note the end.
const HOLDS: &str = r#"log="$(dirname "$0")/log"
echo "$@" > "$log.args"
while [ "${1#--}" != "$1" ]; do shift; done
"$@"
echo released > "$log.done""#;

/// Waits up to `limit` for `p` to exist.
async fn appears(p: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if p.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_held_during_the_download_and_released_at_its_end_and_on_kill() {
    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(MIB),
            ..Faults::default()
        })
    })
    .await;
    let data = fx.serve("f.bin", 4 * MIB, 1);
    let (bin, path) = stand_in(fx.dir.path(), HOLDS);
    let (args_log, done) = (bin.join("log.args"), bin.join("log.done"));
    let mut cmd = ftpseg();
    cmd.args(["--inhibit-sleep", "-n", "2", &fx.url("f.bin")])
        .env("PATH", &path)
        .current_dir(&fx.local);
    let child = cmd.spawn().unwrap();
    assert!(
        appears(&args_log, Duration::from_secs(10)).await,
        "no lock taken"
    );
    let args = std::fs::read_to_string(&args_log).unwrap();
    assert!(
        args.starts_with("--what=sleep --who=ftpseg --mode=block --why=downloading f.bin sh -c"),
        "{args}"
    );
    assert!(!done.exists(), "released before the download ended");
    let o = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert!(
        stderr(&o).contains("the machine will not sleep until this ends"),
        "{}",
        stderr(&o)
    );
    assert!(
        appears(&done, Duration::from_secs(5)).await,
        "lock kept after the end"
    );

    // kill -9 in the middle: the lock goes with ftpseg.
    std::fs::remove_file(&done).unwrap();
    std::fs::remove_file(&args_log).unwrap();
    let mut cmd = ftpseg();
    cmd.args([
        "--inhibit-sleep",
        "-n",
        "2",
        "-o",
        "g.bin",
        &fx.url("f.bin"),
    ])
    .env("PATH", &path)
    .current_dir(&fx.local);
    let mut child = cmd.spawn().unwrap();
    assert!(
        appears(&args_log, Duration::from_secs(10)).await,
        "no lock taken"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!done.exists(), "released before the kill");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(
        appears(&done, Duration::from_secs(5)).await,
        "lock outlived a killed ftpseg"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_logind_one_warning_and_the_download_goes_on() {
    let fx = Fixture::new(|c| c).await;
    let data = fx.serve("f.bin", 2 * MIB, 2);
    // What systemd-inhibit says on a machine without a system bus (this one).
    let (_, path) = stand_in(
        fx.dir.path(),
        "echo 'Failed to connect to bus: No such file or directory' >&2\nexit 1",
    );
    let mut cmd = ftpseg();
    cmd.args(["--inhibit-sleep", &fx.url("f.bin")])
        .env("PATH", &path)
        .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    let err = stderr(&o);
    assert_eq!(
        err.trim_end(),
        "ftpseg: warning: --inhibit-sleep: systemd-inhibit: Failed to connect to bus: No such \
         file or directory; the machine may sleep, and the run then resumes when it wakes",
    );
    // No systemd-inhibit at all.
    let empty = fx.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = ftpseg();
    cmd.args(["--inhibit-sleep", "--force", &fx.url("f.bin")])
        .env("PATH", &empty)
        .current_dir(&fx.local);
    let o = run_command(cmd).await;
    assert_ok_and_equal(&o, &fx.out("f.bin"), &data);
    assert!(
        stderr(&o).contains("--inhibit-sleep: systemd-inhibit is not installed"),
        "{}",
        stderr(&o)
    );
}
