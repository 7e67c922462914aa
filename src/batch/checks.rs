//! The checks of a downloaded file: the expected digest (`--checksum`, `--checksum-file`, or a
//! checksum file found next to it on the server) and the server's own hash
//! (`--verify-remote`). Digests follow the download where they can
//! ([`crate::integrity::digest`]); what they lack is read back from the file.

use std::sync::Arc;

use super::walk::{join, list_folder, session};
use super::{Ctx, FileJob};
use crate::download::Outcome;
use crate::error::{Error, SessionContext};
use crate::ftp::listing::{Entry, Kind};
use crate::ftp::upload::{HashAlgo, HashCommand, RemoteHash, hash_commands};
use crate::integrity::checksum::{self, Algo, Expected};
use crate::integrity::digest::PrefixDigest;

/// A check a downloaded file passed: its `algo` digest matches the one `against` names.
pub(super) struct Check {
    pub algo: Algo,
    /// "--checksum", "SHA256SUMS", "the server's XSHA256".
    pub against: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} matches {}", self.algo.name(), self.against)
    }
}

/// The expected digest of a file: `--checksum`, the `--checksum-file`, or (auto) a checksum
/// file in its folder on the server. With its source, for messages.
pub(super) async fn expected_for(
    ctx: &Ctx,
    f: &FileJob,
) -> Result<Option<(Expected, String)>, Error> {
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
pub(super) fn streamed_algos(expected: Option<Algo>, verify_remote: bool) -> Vec<Algo> {
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
/// the server's own hash. Returns the checks that passed; a mismatch is an error (the file is
/// kept). `digest` has followed the download; what it lacks is read from the file.
pub(super) async fn verify(
    ctx: &Ctx,
    f: &FileJob,
    outcome: &Outcome,
    expected: Option<(Expected, String)>,
    digest: Option<Arc<PrefixDigest>>,
) -> Result<Vec<Check>, Error> {
    let remote = match ctx.verify_remote {
        true => server_hash(ctx, f).await?,
        false => None,
    };
    let mut algos: Vec<Algo> = Vec::new();
    if let Some((e, _)) = &expected
        && e.algo != Algo::Blake3
    {
        algos.push(e.algo);
    }
    let remote_algo = remote.as_ref().map(|r| match r.command.algo() {
        HashAlgo::Sha256 => Algo::Sha256,
        HashAlgo::Md5 => Algo::Md5,
    });
    if let Some(a) = remote_algo
        && !algos.contains(&a)
    {
        algos.push(a);
    }
    let digests = local_digests(f, &algos, digest).await?;
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
        checks.push(Check {
            algo: e.algo,
            against: source,
        });
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
        checks.push(Check {
            algo: a,
            against: format!("the server's {}", r.command.label()),
        });
    }
    Ok(checks)
}

/// The server's own hash of the file (`None`, with a note, when it offers none).
async fn server_hash(ctx: &Ctx, f: &FileJob) -> Result<Option<RemoteHash>, Error> {
    let (permit, mut s) = session(ctx, f.host).await?;
    let commands: Vec<HashCommand> = hash_commands(s.features().hash.as_deref(), &s.features().raw);
    let r = s.remote_hash(&f.url.path, &commands).await.map_err(|e| {
        Error::from_session(
            SessionContext::startup(&f.url, &ctx.hosts[f.host].template.creds),
            e,
        )
    })?;
    ctx.hosts[f.host].pool.give_back(Some(s), permit);
    if r.is_none() && !ctx.quiet {
        eprintln!(
            "ftpseg: {}: the server offers no file hash (HASH, XSHA256, XMD5, SITE MD5): \
             not verified against the server",
            f.output.display()
        );
    }
    Ok(r)
}

/// The file's digests in `algos` (hex, in that order): from `digest` when it followed the
/// download with all of them, else read from the file.
async fn local_digests(
    f: &FileJob,
    algos: &[Algo],
    digest: Option<Arc<PrefixDigest>>,
) -> Result<Vec<String>, Error> {
    if algos.is_empty() {
        return Ok(Vec::new());
    }
    let path = f.output.clone();
    let a = algos.to_vec();
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
    Ok(digests)
}
