//! Folder commands of a session, for batches (`-r`, globs, `--checksum-file auto`): `PWD`,
//! `CWD`, `NOOP`, and the raw lines of a listing (`MLSD`, `LIST`, `NLST`), plus reading a small
//! file whole into memory (a checksum file).
//!
//! Listings are asked for the current folder, after `CWD` into it, with no argument: pure-ftpd
//! answers `LIST sub dir` with nothing (it splits the argument at the space), while `CWD sub
//! dir` works everywhere. The caller returns to the login folder afterwards, so the session can
//! be reused for files named relative to it. The same rules as downloads hold: every step is
//! bounded by the session's timeouts; a session that failed is dropped, never reused.

use suppaftp::{FtpError, Status};
use tokio::time::timeout;

use super::reply;
use super::session::{Session, SessionError, late};

/// Which listing command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListCommand {
    Mlsd,
    List,
    Nlst,
}

impl ListCommand {
    fn verb(self) -> &'static str {
        match self {
            ListCommand::Mlsd => "MLSD",
            ListCommand::List => "LIST",
            ListCommand::Nlst => "NLST",
        }
    }
}

/// Longest listing or small file read into memory.
pub const MAX_LISTING: usize = 64 << 20;

impl Session {
    /// `NOOP`: checks that an idle session still answers.
    pub async fn noop(&mut self) -> Result<(), SessionError> {
        self.raw("NOOP", &[200]).await.map(|_| ())
    }

    /// The current folder (`PWD`).
    pub async fn pwd(&mut self) -> Result<String, SessionError> {
        let body = self.raw("PWD", &[257]).await?;
        let text = reply::reply_text(&body);
        super::upload::parse_pwd(&format!("257 {text}")).ok_or_else(|| {
            SessionError::Protocol(format!("cannot read the folder in the PWD reply: {text}"))
        })
    }

    /// Changes the current folder (`CWD path`). A 550 means no such folder (or not a folder).
    pub async fn cwd(&mut self, path: &str) -> Result<(), SessionError> {
        self.raw(&format!("CWD {path}"), &[250, 200])
            .await
            .map(|_| ())
    }

    /// The lines of a listing of the current folder. A 5xx means the server does not know
    /// the command (vsftpd and `MLSD`): the caller then tries the next one.
    pub async fn list_lines(&mut self, command: ListCommand) -> Result<Vec<String>, SessionError> {
        let bytes = self.data_to_end(command.verb()).await?;
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// The whole content of a small remote file (at most `MAX_LISTING` bytes), from byte 0.
    pub async fn read_small_file(&mut self, path: &str) -> Result<Vec<u8>, SessionError> {
        if self.rest && self.rest0 {
            self.raw("REST 0", &[350]).await?;
        }
        self.data_to_end(&format!("RETR {path}")).await
    }

    /// Runs a data command and reads its data connection to the end, then checks the final
    /// reply (226/250).
    async fn data_to_end(&mut self, command: &str) -> Result<Vec<u8>, SessionError> {
        let opened = timeout(
            self.timeouts.reply,
            self.ftp
                .custom_data_command(command, &[Status::AboutToSend, Status::AlreadyOpen]),
        )
        .await
        .map_err(|_| late(command, self.timeouts.reply))?;
        let (_, mut stream) = match opened {
            Ok(opened) => opened,
            Err(FtpError::SecureError(detail)) => return Err(self.data_tls_error(detail).await),
            Err(e) => return Err(SessionError::from_ftp(command, e)),
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = self.read_data(&mut stream, &mut buf).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() > MAX_LISTING {
                return Err(SessionError::Protocol(format!(
                    "{command} sent more than {} MiB",
                    MAX_LISTING >> 20
                )));
            }
        }
        self.end_transfer(stream, true).await?;
        Ok(out)
    }
}
