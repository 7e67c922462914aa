//! What the server holds: the remote size of a path, whether a name exists, and the check of
//! the remote copy before the rename (its `SIZE`, and the server's hash where it offers one).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::local::blocking;
use crate::error::Error;
use crate::ftp::upload::{HashAlgo, HashCommand, RemoteHash, hash_commands};
use crate::ftp::{Session, SessionError};

/// The remote size of `path`: `None` when it does not exist (550) or the server has no SIZE.
pub(super) async fn remote_size(s: &mut Session, path: &str) -> Result<Option<u64>, SessionError> {
    match s.size(path).await {
        Ok(n) => Ok(n),
        Err(SessionError::Reply { code: 550, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the remote final name exists: SIZE, and for servers without SIZE, nothing known.
pub(super) async fn remote_exists(s: &mut Session, path: &str) -> Result<bool, SessionError> {
    Ok(remote_size(s, path).await?.is_some())
}

/// Why the remote copy could not be checked or failed the check.
pub(super) enum VerifyError {
    Session(SessionError),
    Local(Error),
}

/// Checks the remote copy `target` of `local` (`size` bytes, open as `file`) before the
/// rename: its SIZE, and the server's hash where offered. Returns the checks it passed
/// ("SIZE", "XSHA256"; none when the server offers neither).
pub(super) async fn verify_remote(
    s: &mut Session,
    file: &Arc<File>,
    size: u64,
    local: &Path,
    target: &str,
) -> Result<Vec<String>, VerifyError> {
    let mut how = Vec::new();
    match s.size(target).await.map_err(VerifyError::Session)? {
        Some(n) if n == size => how.push("SIZE".to_string()),
        Some(n) => {
            return Err(VerifyError::Local(Error::VerifyFailed {
                detail: format!(
                    "the server holds {n} bytes of {target}, the local file {} has {}",
                    local.display(),
                    size
                ),
                temp: target.to_owned(),
            }));
        }
        None => {}
    }
    let f = s.features();
    let commands: Vec<HashCommand> = hash_commands(f.hash.as_deref(), &f.raw);
    // The server reads the whole file before it answers; `--reply-timeout`
    // applies as to any command.
    let remote: Option<RemoteHash> = s
        .remote_hash(target, &commands)
        .await
        .map_err(VerifyError::Session)?;
    if let Some(r) = remote {
        let algo = r.command.algo();
        let file = file.clone();
        let ours = blocking(move || local_digest(&file, algo))
            .await
            .map_err(VerifyError::Local)?
            .map_err(|e| VerifyError::Local(Error::io("cannot read", local, e)))?;
        if ours != r.hex {
            return Err(VerifyError::Local(Error::VerifyFailed {
                detail: format!(
                    "the server's {} of {target} is {}, the local file's is {ours}",
                    r.command.label(),
                    r.hex
                ),
                temp: target.to_owned(),
            }));
        }
        how.push(r.command.label());
    }
    Ok(how)
}

/// The local file's digest with `algo` (blocking).
fn local_digest(file: &File, algo: HashAlgo) -> std::io::Result<String> {
    use md5::Digest;
    let mut buf = vec![0u8; 1 << 20];
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha256::new();
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        match algo {
            HashAlgo::Md5 => md5.update(&buf[..n]),
            HashAlgo::Sha256 => sha.update(&buf[..n]),
        }
        at += n as u64;
    }
    let bytes: Vec<u8> = match algo {
        HashAlgo::Md5 => md5.finalize().to_vec(),
        HashAlgo::Sha256 => sha.finalize().to_vec(),
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
