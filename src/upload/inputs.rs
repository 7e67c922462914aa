//! The files of a `put` job and where each goes: one file to the URL's path, or files (and
//! with `-r` whole folders) into the URL's folder, and the remote folders made for them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::PutJob;
use super::connect::{Conn, upload_error};
use super::manifest::MANIFEST_SUFFIX;
use super::plan::remote_join;
use crate::error::Error;

/// The files to upload, each with its remote path: one file to the URL's path, or each file
/// (and, with `-r`, each folder's files, keeping their relative paths) into the URL's folder.
/// Upload manifests (`*.ftpseg-put`) are never uploaded.
pub fn files_to_upload(job: &PutJob) -> Result<Vec<(PathBuf, String)>, Error> {
    let mut out = Vec::new();
    for local in &job.locals {
        let meta =
            std::fs::metadata(local).map_err(|e| Error::io("cannot read", local.clone(), e))?;
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::Usage(format!("{} has no file name to upload", local.display()))
            })?;
        if meta.is_dir() {
            if !job.recursive {
                return Err(Error::Usage(format!(
                    "{} is a folder; use -r to upload it with everything in it",
                    local.display()
                )));
            }
            let base = remote_join(&job.url.path, &name);
            walk(local, &base, &mut out)?;
        } else if job.into_dir {
            out.push((local.clone(), remote_join(&job.url.path, &name)));
        } else {
            out.push((local.clone(), job.url.path.clone()));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, remote: &str, out: &mut Vec<(PathBuf, String)>) -> Result<(), Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("cannot list", dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io("cannot list", dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let kind = e
            .file_type()
            .map_err(|err| Error::io("cannot read", &path, err))?;
        if kind.is_dir() {
            walk(&path, &remote_join(remote, &name), out)?;
        } else if kind.is_file()
            && !name.ends_with(MANIFEST_SUFFIX)
            && !name.ends_with(&format!("{MANIFEST_SUFFIX}.tmp"))
        {
            out.push((path, remote_join(remote, &name)));
        }
    }
    Ok(())
}

/// Creates the remote folders above `remote` (with `-r`), each once; a folder that exists
/// already is fine.
pub(super) async fn make_parents(
    conn: &Arc<Conn>,
    job: &PutJob,
    remote: &str,
    made: &mut Vec<String>,
) -> Result<(), Error> {
    let Some((parent, _)) = remote.rsplit_once('/') else {
        return Ok(());
    };
    let mut wanted = Vec::new();
    let mut at = String::new();
    for part in parent.split('/') {
        if !at.is_empty() || parent.starts_with('/') {
            at.push('/');
        }
        at.push_str(part);
        if !part.is_empty() && !made.contains(&at) {
            wanted.push(at.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let mut s = conn.first(job).await?;
    for dir in wanted {
        s.make_dir(&dir)
            .await
            .map_err(|e| upload_error(job, &dir, e))?;
        made.push(dir);
    }
    s.quit().await;
    Ok(())
}
