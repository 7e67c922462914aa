//! Credentials for a URL: the URL's own user and password, `FTPSEG_PASSWORD`, the netrc file
//! (`--netrc-file`, else `~/.netrc`; `--no-netrc` for none), or a prompt on the terminal.

use std::path::PathBuf;

use super::groups::CredentialOpts;
use crate::error::Error;
use crate::ftp::Credentials;
use crate::ftp::url::FtpUrl;

impl CredentialOpts {
    /// Who to log in as, and the password, from (in this order) the URL, `FTPSEG_PASSWORD`,
    /// the netrc file, or a prompt on the terminal. Without a user anywhere: anonymous.
    pub fn resolve(&self, url: &FtpUrl) -> Result<Credentials, Error> {
        credentials(url, self.netrc_file.as_ref(), self.no_netrc)
    }
}

fn credentials(
    url: &FtpUrl,
    netrc_file: Option<&PathBuf>,
    no_netrc: bool,
) -> Result<Credentials, Error> {
    let host = url.host_for_connect();
    let entries = read_netrc(netrc_file, no_netrc)?;
    let entry = entries
        .as_deref()
        .and_then(|e| crate::ftp::netrc::lookup(e, &host, url.user.as_deref()));
    let user = match (&url.user, entry.and_then(|e| e.login.clone())) {
        (Some(u), _) => u.clone(),
        (None, Some(login)) => login,
        (None, None) => return Ok(Credentials::anonymous()),
    };
    if user == "anonymous" || user == "ftp" {
        let password = url
            .password
            .clone()
            .or_else(|| entry.and_then(|e| e.password.clone()))
            .unwrap_or_else(|| Credentials::anonymous().password);
        return Ok(Credentials { user, password });
    }
    let password = match url.password.clone() {
        Some(p) => p,
        None => match std::env::var("FTPSEG_PASSWORD") {
            Ok(p) => p,
            Err(_) => match entry.and_then(|e| e.password.clone()) {
                Some(p) => p,
                None => prompt_password(&user, &host)?,
            },
        },
    };
    Ok(Credentials { user, password })
}

/// The netrc entries: from `--netrc-file` (which must be readable), else `~/.netrc` if it
/// exists, else none.
fn read_netrc(
    netrc_file: Option<&PathBuf>,
    no_netrc: bool,
) -> Result<Option<Vec<crate::ftp::netrc::Entry>>, Error> {
    if no_netrc {
        return Ok(None);
    }
    let (path, required) = match netrc_file {
        Some(p) => (p.clone(), true),
        None => match std::env::var_os("HOME") {
            Some(home) => (PathBuf::from(home).join(".netrc"), false),
            None => return Ok(None),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Credentials(format!(
                "cannot read the netrc file {}: {e}",
                path.display()
            )));
        }
    };
    let entries = crate::ftp::netrc::parse(&text).map_err(|e| {
        Error::Credentials(format!(
            "the netrc file {} cannot be read: {e}; fix it, or pass --no-netrc",
            path.display()
        ))
    })?;
    if entries.iter().any(|e| e.password.is_some()) {
        warn_if_readable_by_others(&path);
    }
    Ok(Some(entries))
}

/// Once per run: a netrc file with passwords in it that other users may read (as ftp(1) and
/// lftp warn; ftpseg still uses it).
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    static WARNED: std::sync::Once = std::sync::Once::new();
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        WARNED.call_once(|| {
            eprintln!(
                "ftpseg: warning: the netrc file {} holds passwords and other users can read \
                 it (mode {mode:03o}): chmod 600 {}",
                path.display(),
                path.display()
            )
        });
    }
}

/// Asks for the password on the terminal, without echo. Not on a terminal: an error saying
/// where a password can come from instead.
fn prompt_password(user: &str, host: &str) -> Result<String, Error> {
    use std::io::{BufRead, IsTerminal};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Credentials(format!(
            "no password for {user}@{host}: set FTPSEG_PASSWORD, add it to ~/.netrc \
             (or --netrc-file), or run ftpseg in a terminal to be asked"
        )));
    }
    let fd = stdin.as_fd();
    let saved = rustix::termios::tcgetattr(fd).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &quiet);
    }
    eprint!("Password for {user}@{host}: ");
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, t);
    }
    eprintln!();
    read.map_err(|e| Error::Credentials(format!("cannot read the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
