//! `ftpseg put` against the real servers of scripts/ftp-servers.sh (vsftpd, proftpd,
//! pure-ftpd, pyftpdlib), found through `$FTPSEG_SERVERS_DIR/servers.json` as `interop.rs`
//! does. The password user may write in the served folder's `upload/`. A missing servers.json,
//! or a pure-ftpd that serves another folder, is a failure, not a skip.
//!
//! Measured behaviour these tests pin down (docs/upload.md):
//! * parallel pieces only on vsftpd (REST+STOR in place, past the end too); proftpd and
//!   pyftpdlib refuse REST past the end of the file, pure-ftpd truncates at the REST offset:
//!   the probe sees it and one connection does the job;
//! * server hash: proftpd (mod_digest: HASH SHA-256); the others verify by SIZE only;
//! * after SIGKILL every server keeps the partial temporary file, and the resume sends exactly
//!   the bytes past its SIZE.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use ftpseg::testserver::write_pattern_file;

#[derive(Clone, Debug)]
struct Server {
    kind: String,
    variant: String,
    port: u16,
}

struct Servers {
    upload: PathBuf,
    user: String,
    password: String,
    list: Vec<Server>,
}

/// The servers; a panic that says how to start them when they are not running.
fn servers() -> Servers {
    let v = servers_json();
    let list = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Server {
            kind: s["kind"].as_str().unwrap().into(),
            variant: s["variant"].as_str().unwrap().into(),
            port: s["port"].as_u64().unwrap() as u16,
        })
        .collect();
    let upload = PathBuf::from(v["served"].as_str().unwrap()).join("upload");
    assert!(
        upload.is_dir(),
        "{} is missing: restart the servers with the current scripts/ftp-servers.sh",
        upload.display()
    );
    Servers {
        upload,
        user: v["user"].as_str().unwrap().into(),
        password: v["password"].as_str().unwrap().into(),
        list,
    }
}

const KINDS: [&str; 4] = ["vsftpd", "proftpd", "pure-ftpd", "pyftpdlib"];

/// The kinds to test: all four. pure-ftpd serves the password user's home folder from
/// /etc/passwd, which the latest `scripts/ftp-servers.sh start` of any instance (another
/// FTPSEG_SERVERS_DIR on the same machine) points at its own served folder: when that is not
/// ours, pure-ftpd would write elsewhere, and that is a failure saying what to do.
fn kinds(sv: &Servers) -> Vec<&'static str> {
    let served = sv.upload.parent().unwrap().to_string_lossy().into_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let home = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[0] == sv.user)
        .map(|f| f[5].to_owned());
    assert!(
        home.as_deref() == Some(served.as_str()),
        "pure-ftpd would not write where this test looks: user {}'s home is {home:?}, not \
         {served} (another server instance was started since; restart this one with \
         `bash scripts/ftp-servers.sh start`)",
        sv.user
    );
    KINDS.to_vec()
}

impl Servers {
    fn get(&self, kind: &str, variant: &str) -> Server {
        self.list
            .iter()
            .find(|s| s.kind == kind && s.variant == variant)
            .unwrap_or_else(|| panic!("{kind} ({variant}) missing from servers.json"))
            .clone()
    }

    fn url(&self, s: &Server, name: &str) -> String {
        format!("ftp://{}@127.0.0.1:{}/upload/{name}", self.user, s.port)
    }
}

async fn put(pw: &str, args: &[&str], cwd: &Path) -> std::process::Output {
    let child = ftpseg()
        .env("FTPSEG_PASSWORD", pw)
        .args(["put", "--plain"])
        .args(args)
        .current_dir(cwd)
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("ftpseg put did not finish within 120 s")
        .unwrap()
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn same(path: &Path, expected: &[u8]) -> Result<(), String> {
    let got = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if got.len() != expected.len() {
        return Err(format!(
            "{}: {} bytes, expected {}",
            path.display(),
            got.len(),
            expected.len()
        ));
    }
    match got.iter().zip(expected).position(|(a, b)| a != b) {
        Some(at) => Err(format!("{}: bytes differ first at {at}", path.display())),
        None => Ok(()),
    }
}

/// Removes what a test left in the upload folder.
fn clean(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Upload with -n 4 to each plain server: byte-exact; parallel on vsftpd, one connection with
/// a note elsewhere; proftpd verified by its SHA-256.
async fn upload_one(sv: &Servers, kind: &str, tmp: &Path) -> Result<(), String> {
    let s = sv.get(kind, "plain");
    let name = format!("put-{kind}-{}.bin", std::process::id());
    let local = tmp.join(&name);
    write_pattern_file(&local, 5 * MIB + 17, 21).unwrap();
    let data = std::fs::read(&local).unwrap();
    let remote = sv.upload.join(&name);
    clean(std::slice::from_ref(&remote));
    let o = put(&sv.password, &["-n", "4", &name, &sv.url(&s, &name)], tmp).await;
    let result = (|| {
        if code(&o) != 0 {
            return Err(format!("{kind}: exit {}: {}", code(&o), stderr(&o)));
        }
        same(&remote, &data).map_err(|e| format!("{kind}: {e}"))?;
        let (so, se) = (out(&o), stderr(&o));
        if kind == "vsftpd" {
            if !so.contains("4 connections") {
                return Err(format!("{kind}: expected a parallel upload: {so}{se}"));
            }
        } else if !(se.contains("parallel upload is not possible") && so.contains("1 connection,"))
        {
            return Err(format!(
                "{kind}: expected the one-connection fallback: {so}{se}"
            ));
        }
        if kind == "proftpd" && !so.contains("HASH (SHA-256)") {
            return Err(format!("{kind}: expected a SHA-256 verify: {so}"));
        }
        if sv.upload.join(format!("{name}.ftpseg-part")).exists()
            || sv.upload.join(format!("{name}.ftpseg-probe")).exists()
        {
            return Err(format!("{kind}: temporary or probe file left behind"));
        }
        Ok(())
    })();
    clean(&[remote, local]);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_servers_upload_byte_exact_parallel_where_supported() {
    let sv = servers();
    let tmp = tempfile::tempdir().unwrap();
    let results = futures::future::join_all(
        kinds(&sv)
            .into_iter()
            .map(|k| upload_one(&sv, k, tmp.path())),
    )
    .await;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// On a capped server (4 MiB/s): SIGKILL mid-upload (the final name never visible), a local
/// file changed meanwhile refused, then the resume sends exactly the missing bytes.
async fn kill_and_resume(sv: &Servers, kind: &str, tmp: &Path) -> Result<(), String> {
    let s = sv.get(kind, "capped");
    let name = format!("kill-{kind}-{}.bin", std::process::id());
    let local = tmp.join(&name);
    write_pattern_file(&local, 24 * MIB + 5, 22).unwrap();
    let mut data = std::fs::read(&local).unwrap();
    let fin = sv.upload.join(&name);
    let temp = sv.upload.join(format!("{name}.ftpseg-part"));
    clean(&[fin.clone(), temp.clone()]);
    let url = sv.url(&s, &name);
    let args = ["-n", "1", name.as_str(), url.as_str()];
    let result = async {
        let mut child = ftpseg()
            .env("FTPSEG_PASSWORD", &sv.password)
            .args(["put", "--quiet"])
            .args(args)
            .current_dir(tmp)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while file_len(&temp) < 2 * MIB {
            if fin.exists() {
                return Err(format!("{kind}: final name visible before completion"));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{kind}: upload did not reach 2 MiB in 30 s"));
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("{kind}: ftpseg ended before the kill: {st}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        // The server drains what the dead client had written into its socket: wait until the
        // temporary file stops growing.
        let mut had = file_len(&temp);
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let now = file_len(&temp);
            if now == had {
                break;
            }
            had = now;
        }
        if fin.exists() {
            return Err(format!("{kind}: final name visible after the kill"));
        }
        if had >= data.len() as u64 {
            return Err(format!(
                "{kind}: everything arrived before the kill ({had})"
            ));
        }
        // A byte already uploaded changes: refused.
        data[500] ^= 0x55;
        std::fs::write(&local, &data).unwrap();
        let o = put(&sv.password, &args, tmp).await;
        if code(&o) != 10 || !stderr(&o).contains("changed since the upload started") {
            return Err(format!(
                "{kind}: changed file not refused: {} {}",
                code(&o),
                stderr(&o)
            ));
        }
        if file_len(&temp) != had || fin.exists() {
            return Err(format!("{kind}: the refused run touched the remote files"));
        }
        // Back as it was: resumes, sending only what is missing (-v says how much).
        data[500] ^= 0x55;
        std::fs::write(&local, &data).unwrap();
        let verbose: Vec<&str> = std::iter::once("-v").chain(args.iter().copied()).collect();
        let o = put(&sv.password, &verbose, tmp).await;
        if code(&o) != 0 {
            return Err(format!("{kind}: resume failed: {}", stderr(&o)));
        }
        same(&fin, &data).map_err(|e| format!("{kind}: {e}"))?;
        let want = format!("{} bytes sent in this run", data.len() as u64 - had);
        if !out(&o).contains(&want) || !out(&o).contains(" resumed,") {
            return Err(format!(
                "{kind}: expected '{want}' after resuming at {had}: {}",
                out(&o)
            ));
        }
        if temp.exists() {
            return Err(format!("{kind}: temporary file left behind"));
        }
        Ok(())
    }
    .await;
    clean(&[
        fin,
        temp,
        local.clone(),
        ftpseg::internals::manifest_path(&local),
    ]);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_servers_sigkill_resume_sends_only_missing_bytes_and_refuses_changed_file() {
    let sv = servers();
    let tmp = tempfile::tempdir().unwrap();
    let results = futures::future::join_all(
        kinds(&sv)
            .into_iter()
            .map(|k| kill_and_resume(&sv, k, tmp.path())),
    )
    .await;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_upload_over_ftps_with_session_reuse() {
    let sv = servers();
    let s = sv.get("vsftpd", "tls");
    let ca = sv
        .upload
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("pki/ca.pem");
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("tls-{}.bin", std::process::id());
    let local = tmp.path().join(&name);
    write_pattern_file(&local, 3 * MIB + 3, 23).unwrap();
    let data = std::fs::read(&local).unwrap();
    let remote = sv.upload.join(&name);
    let url = format!("ftpes://{}@127.0.0.1:{}/upload/{name}", sv.user, s.port);
    // vsftpd requires every data connection to resume the control connection's TLS session.
    let o = put(
        &sv.password,
        &["-n", "4", "--ca-file", ca.to_str().unwrap(), &name, &url],
        tmp.path(),
    )
    .await;
    let result = same(&remote, &data);
    clean(&[remote]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    result.unwrap();
    // 4 pieces: the first alone, then the other 3 in parallel.
    assert!(out(&o).contains("3 connections"), "{}", out(&o));
}
