//! From inputs to files: each input is one file, the matches of its glob, or (with `-r`) the
//! tree of its folder, listed on the server (`MLSD`, else `LIST`, else `NLST`) over sessions
//! of the server's pool. Also where a server of the batch gets its job template and budget.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::inputs::Input;
use super::{Ctx, Ended, FileEnd, FileJob, Host, JobFor, Settings};
use crate::error::{Error, SessionContext};
use crate::ftp::dir::ListCommand;
use crate::ftp::listing::{self, Entry, Kind};
use crate::ftp::pool::{HostPool, Permit};
use crate::ftp::url::FtpUrl;
use crate::ftp::url::folder_path;
use crate::ftp::{Session, SessionError};

/// Expands the inputs into files, creating each server of the batch on first use.
pub(super) struct Planner<'a> {
    ctx: &'a mut Ctx,
    settings: &'a Settings,
    jobs: &'a dyn JobFor,
    /// `-d`, or the current folder.
    base: &'a Path,
    /// Server key (scheme, user, host, port) -> index in [`Ctx::hosts`].
    keys: HashMap<String, usize>,
}

impl<'a> Planner<'a> {
    pub(super) fn new(
        ctx: &'a mut Ctx,
        settings: &'a Settings,
        jobs: &'a dyn JobFor,
        base: &'a Path,
    ) -> Planner<'a> {
        Planner {
            ctx,
            settings,
            jobs,
            base,
            keys: HashMap::new(),
        }
    }

    /// The files of every input, in order; an input that cannot be expanded fails alone.
    pub(super) async fn expand_all(&mut self, inputs: &[Input]) -> (Vec<FileJob>, Vec<Ended>) {
        let mut files = Vec::new();
        let mut failed = Vec::new();
        for input in inputs {
            let expanded = self.expand(&input.url, input.output.as_deref()).await;
            let with_mirrors = expanded.and_then(|mut found| {
                self.add_mirrors(&mut found, &input.mirrors)?;
                if let [file] = found.as_mut_slice() {
                    file.pieces = input.pieces.clone();
                    file.expected_size = input.size;
                }
                Ok(found)
            });
            match with_mirrors {
                Ok(found) => files.extend(found),
                Err(e) => failed.push((input.label.clone(), None, FileEnd::Failed(e))),
            }
        }
        (files, failed)
    }

    /// The mirrors of an input line for the one file it names (a glob or folder has none).
    fn add_mirrors(&self, found: &mut [FileJob], mirrors: &[String]) -> Result<(), Error> {
        if mirrors.is_empty() {
            return Ok(());
        }
        let [file] = found else {
            return Err(Error::Usage(
                "mirrors (tab-separated URLs) are for one file, not a glob or a folder".into(),
            ));
        };
        file.mirrors = mirrors
            .iter()
            .map(|raw| self.jobs.mirror_for(raw))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// The server of `url` in the batch (created on first use): its job template and budget.
    fn host_index(&mut self, url: &FtpUrl, raw: &str) -> Result<usize, Error> {
        let key = format!(
            "{}://{}@{}:{}",
            url.tls.scheme(),
            url.user.as_deref().unwrap_or(""),
            url.host_for_connect(),
            url.port
        );
        if let Some(&i) = self.keys.get(&key) {
            return Ok(i);
        }
        // Credentials (netrc, FTPSEG_PASSWORD or a prompt) are looked up once per server.
        let template = self.jobs.job_for(raw, Some(PathBuf::from("unused")))?;
        let budget = self
            .jobs
            .budget_for(&url.host_for_connect())
            .unwrap_or(self.settings.budget);
        let hosts = &mut self.ctx.hosts;
        hosts.push(Host {
            template,
            pool: HostPool::new(budget),
            home: tokio::sync::Mutex::new(None),
        });
        self.keys.insert(key, hosts.len() - 1);
        Ok(hosts.len() - 1)
    }

    /// The files an input stands for: itself, the matches of its glob, or (with `-r`) the
    /// tree of its folder.
    async fn expand(&mut self, raw: &str, output: Option<&str>) -> Result<Vec<FileJob>, Error> {
        let (mut url, is_folder) = FtpUrl::parse_file_or_folder(raw)?;
        if is_folder {
            url.path = folder_path(&url.path);
        }
        let host = self.host_index(&url, raw)?;
        // --ftps turns ftp:// into explicit TLS, as for single downloads.
        url.tls = self.ctx.hosts[host].template.url.tls;
        let (folder, last) = match url.path.rsplit_once('/') {
            Some((f, l)) => (f.to_owned(), l.to_owned()),
            None => (String::new(), url.path.clone()),
        };
        if is_folder {
            return self.expand_folder(host, &url, raw).await;
        }
        if listing::has_glob(&last) {
            return self.expand_glob(host, &url, &folder, &last).await;
        }
        // One file.
        let base = self.base;
        let output = match (output, &self.settings.output) {
            (Some(name), _) => {
                let parts: Vec<String> = name.split('/').map(str::to_owned).collect();
                listing::local_path(base, &parts)
                    .map_err(|m| Error::Usage(format!("output {m}")))?
            }
            (None, Some(o)) if self.settings.dir.is_some() => base.join(o),
            (None, Some(o)) => o.clone(),
            (None, None) => base.join(url.file_name()?),
        };
        Ok(vec![FileJob {
            host,
            url: url.clone(),
            output,
            folder,
            name: last,
            size: None,
            mdtm: None,
            mirrors: Vec::new(),
            pieces: None,
            expected_size: None,
        }])
    }

    /// A folder URL: its tree with `-r` (the folder itself recreated under `-d`, as `cp -r`
    /// does, unless it is the login folder); without `-r`, the error of a single folder URL.
    async fn expand_folder(
        &mut self,
        host: usize,
        url: &FtpUrl,
        raw: &str,
    ) -> Result<Vec<FileJob>, Error> {
        if !self.settings.recursive {
            // The same error (exit 3) as for a single folder URL, which says to add -r.
            return Err(FtpUrl::parse(raw)
                .err()
                .map(Error::from)
                .unwrap_or_else(|| {
                    Error::Usage(format!("{} is a folder: add -r", url.redacted()))
                }));
        }
        let top = url.path.rsplit('/').next().unwrap_or("").to_owned();
        let mut local_base = self.base.to_path_buf();
        if !top.is_empty() {
            local_base = listing::local_path(self.base, std::slice::from_ref(&top))
                .map_err(|e| Error::Usage(format!("{}: {e}", url.redacted())))?;
        }
        walk(self.ctx, host, url, &url.path, &local_base).await
    }

    /// The entries of `folder` matching the glob `pattern` (folders too, with `-r`).
    async fn expand_glob(
        &mut self,
        host: usize,
        url: &FtpUrl,
        folder: &str,
        pattern: &str,
    ) -> Result<Vec<FileJob>, Error> {
        let entries = list_folder(self.ctx, host, folder).await?;
        let local = |name: &String| {
            listing::local_path(self.base, std::slice::from_ref(name))
                .map_err(|m| Error::Usage(format!("{}: {m}", url.redacted())))
        };
        let mut out = Vec::new();
        for e in entries {
            if !listing::glob_match(pattern, &e.name) {
                continue;
            }
            let path = join(folder, &e.name);
            match e.kind {
                Kind::File => {
                    let mut file_url = url.clone();
                    file_url.path = path;
                    out.push(FileJob {
                        host,
                        url: file_url,
                        output: local(&e.name)?,
                        folder: folder.to_owned(),
                        name: e.name.clone(),
                        size: e.size,
                        mdtm: e.modify.clone(),
                        mirrors: Vec::new(),
                        pieces: None,
                        expected_size: None,
                    });
                }
                Kind::Dir if self.settings.recursive => {
                    let local = local(&e.name)?;
                    out.extend(walk(self.ctx, host, url, &path, &local).await?);
                }
                _ => {}
            }
        }
        if out.is_empty() {
            return Err(Error::NotFound {
                path: url.path.clone(),
                reply: "no file matches the pattern".into(),
            });
        }
        Ok(out)
    }
}

pub(super) fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else if folder.ends_with('/') {
        format!("{folder}{name}")
    } else {
        format!("{folder}/{name}")
    }
}

/// Deepest folder nesting `-r` follows.
const MAX_DEPTH: usize = 64;
/// Most entries one `-r` walk takes.
const MAX_ENTRIES: usize = 1_000_000;

/// Every file under `folder` (breadth first), mapped under `local`. Links are not followed;
/// a folder seen twice (same MLSD `unique` fact) is listed once.
async fn walk(
    ctx: &Ctx,
    host: usize,
    url: &FtpUrl,
    folder: &str,
    local: &Path,
) -> Result<Vec<FileJob>, Error> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([(folder.to_owned(), Vec::<String>::new())]);
    let mut seen = HashSet::new();
    let mut count = 0usize;
    while let Some((dir, rel)) = queue.pop_front() {
        for e in list_folder(ctx, host, &dir).await? {
            count += 1;
            if count > MAX_ENTRIES {
                return Err(Error::Usage(format!(
                    "{} has more than {MAX_ENTRIES} entries: download parts of it",
                    url.redacted()
                )));
            }
            let mut parts = rel.clone();
            parts.push(e.name.clone());
            let path = join(&dir, &e.name);
            match e.kind {
                Kind::File => {
                    let output = listing::local_path(local, &parts)
                        .map_err(|m| Error::Usage(format!("{}: {m}", url.redacted())))?;
                    let mut u = url.clone();
                    u.path = path;
                    out.push(FileJob {
                        host,
                        url: u,
                        output,
                        folder: dir.clone(),
                        name: e.name.clone(),
                        size: e.size,
                        mdtm: e.modify.clone(),
                        mirrors: Vec::new(),
                        pieces: None,
                        expected_size: None,
                    });
                }
                Kind::Dir => {
                    if listing::unsafe_name(&e.name).is_some() || parts.len() > MAX_DEPTH {
                        continue;
                    }
                    if let Some(u) = &e.unique
                        && !seen.insert(u.clone())
                    {
                        continue;
                    }
                    queue.push_back((path, parts));
                }
                Kind::Link | Kind::Other => {
                    if ctx.verbose {
                        eprintln!("ftpseg: not following {path} (a link or special file)");
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A logged-in session to server `host`, within its budget: an idle one, or a new one.
pub(super) async fn session(ctx: &Ctx, host: usize) -> Result<(Permit, Session), Error> {
    let h = &ctx.hosts[host];
    let (permit, idle) = h.pool.acquire().await;
    let t = &h.template;
    let fresh = idle.is_none();
    let addrs = match fresh {
        true => crate::retry::resolve(&t.url, t.timeouts.connect).await?,
        false => Vec::new(),
    };
    let tls = match fresh && t.url.tls.is_tls() {
        true => Some(Arc::new(crate::ftp::TlsClient::new(&t.url, &t.verify)?)),
        false => None,
    };
    let connect = || Session::connect_with(&addrs, &t.creds, t.timeouts, tls.as_ref());
    let (permit, mut s) = h
        .pool
        .connect_or_wait(permit, idle, connect)
        .await
        .map_err(|e| Error::from_session(SessionContext::startup(&t.url, &t.creds), e))?;
    // A download's worker session never asked FEAT (hash commands, MLSD); a new one neither.
    if s.features().raw.is_empty() {
        s.set_use_pasv_address(t.use_pasv_address);
        s.set_active(t.active);
        s.probe()
            .await
            .map_err(|e| Error::from_session(SessionContext::startup(&t.url, &t.creds), e))?;
    }
    Ok((permit, s))
}

/// The entries of a remote folder (relative to the login folder): `MLSD`, else `LIST`, else
/// `NLST` (names only: each is then taken for a file). The session goes back to the login
/// folder and into the pool.
pub(super) async fn list_folder(ctx: &Ctx, host: usize, folder: &str) -> Result<Vec<Entry>, Error> {
    let h = &ctx.hosts[host];
    let (permit, mut s) = session(ctx, host).await?;
    let t = &h.template;
    let fail = |e: SessionError| match e {
        SessionError::Reply {
            code: 550, text, ..
        } => Error::NotFound {
            path: folder.to_owned(),
            reply: format!("{text} (listing the folder)"),
        },
        e => Error::from_session(SessionContext::startup(&t.url, &t.creds), e),
    };
    let home = {
        let mut home = h.home.lock().await;
        if home.is_none() {
            *home = Some(s.pwd().await.map_err(fail)?);
        }
        home.clone().unwrap_or_default()
    };
    let target = if folder.starts_with('/') {
        folder.to_owned()
    } else if folder.is_empty() {
        home.clone()
    } else {
        join(&home, folder)
    };
    s.cwd(&target).await.map_err(fail)?;
    let mut entries = None;
    for command in [ListCommand::Mlsd, ListCommand::List, ListCommand::Nlst] {
        match s.list_lines(command).await {
            Ok(lines) => {
                let parsed = parse_listing(command, &lines);
                // A LIST whose lines we cannot read at all: try NLST.
                if command == ListCommand::List && parsed.is_empty() && !lines.is_empty() {
                    continue;
                }
                entries = Some(parsed);
                break;
            }
            Err(SessionError::Reply { code, .. }) if code >= 500 => continue,
            Err(e) => return Err(fail(e)),
        }
    }
    s.cwd(&home).await.map_err(fail)?;
    h.pool.give_back(Some(s), permit);
    entries.ok_or_else(|| Error::Protocol {
        host: t.url.host_for_connect(),
        command: "MLSD/LIST/NLST".into(),
        reply: format!("the server lists {folder:?} with none of them"),
    })
}

/// The entries in the lines of one listing command (NLST gives names only: each is taken for
/// a file); unreadable lines are skipped.
fn parse_listing(command: ListCommand, lines: &[String]) -> Vec<Entry> {
    match command {
        ListCommand::Mlsd => lines
            .iter()
            .filter_map(|l| listing::parse_mlsd_line(l))
            .collect(),
        ListCommand::List => lines
            .iter()
            .filter_map(|l| listing::parse_list_line(l))
            .collect(),
        ListCommand::Nlst => lines
            .iter()
            .filter_map(|l| listing::parse_nlst_line(l))
            .map(|name| Entry {
                name,
                kind: Kind::File,
                size: None,
                modify: None,
                unique: None,
            })
            .collect(),
    }
}
