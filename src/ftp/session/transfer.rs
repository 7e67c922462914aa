//! Ranged downloads on a session: `REST`/`RANG` + `RETR` with the EPSV-to-PASV fallback,
//! the end of a transfer (to its end, or stopped early and resynchronised with `NOOP`), and
//! the TLS errors of data connections.

use std::time::Duration;

use suppaftp::{FtpError, Status};
use tokio::time::timeout;

use super::{DataStream, Session, SessionError, Transfer, late};
use crate::ftp::reply;

impl Session {
    /// Starts `RETR path` at `offset` (`REST offset` first, `REST 0` too, when the server
    /// supports REST). Falls back from EPSV to PASV once if the server refuses EPSV.
    /// If PASV fails too, the error names both failures, so neither hides the real cause.
    pub async fn retr(&mut self, path: &str, offset: u64) -> Result<Transfer, SessionError> {
        self.retr_range(path, offset, None).await
    }

    /// Like [`Session::retr`], for the bytes `[offset, end)`: where the server offers `RANG`
    /// (proftpd), it is asked for exactly those bytes and ends the transfer itself with 226, so
    /// nothing is sent past `end` and nothing needs stopping early. Elsewhere, `REST offset`.
    pub async fn retr_range(
        &mut self,
        path: &str,
        offset: u64,
        end: Option<u64>,
    ) -> Result<Transfer, SessionError> {
        match self.retr_once(path, offset, end).await {
            Err(SessionError::Reply {
                code: code @ (500 | 501 | 502 | 504),
                text,
                command,
            }) if self.epsv && !self.active => {
                self.set_epsv(false);
                match self.retr_once(path, offset, end).await {
                    Ok(t) => Ok(t),
                    Err(second) => {
                        self.set_epsv(true);
                        Err(SessionError::Reply {
                            command,
                            code,
                            text: format!("{text}; with PASV instead: {second}"),
                        })
                    }
                }
            }
            Err(SessionError::Reply {
                code: code @ (500 | 501 | 502 | 504),
                text,
                command,
            }) if self.active => Err(SessionError::Reply {
                command: format!("PORT/EPRT or {command}"),
                code,
                text: format!(
                    "{text} (the server may not allow active mode: try without --active)"
                ),
            }),
            other => other,
        }
    }

    async fn retr_once(
        &mut self,
        path: &str,
        offset: u64,
        end: Option<u64>,
    ) -> Result<Transfer, SessionError> {
        let mut ends_at = None;
        if let Some(end) = end.filter(|&e| self.rang && e > offset) {
            // RANG's end is inclusive; it applies to the next RETR only (proftpd).
            match self
                .raw(&format!("RANG {offset} {}", end - 1), &[350])
                .await
            {
                Ok(_) => ends_at = Some(end),
                Err(SessionError::Reply { code, .. }) if code >= 500 => self.rang = false,
                Err(e) => return Err(e),
            }
        }
        if ends_at.is_some() {
            // The range replaces REST.
        } else if offset > 0 && !self.rest {
            return Err(SessionError::Protocol(
                "cannot resume: the server does not support REST".into(),
            ));
        } else if self.rest {
            if offset == 0 {
                if self.rest0 {
                    self.raw("REST 0", &[350]).await?;
                } else if self.offset_dirty {
                    return Err(SessionError::Desync(
                        "a REST offset may still be pending on this session (the server \
                         refuses REST 0); reconnecting"
                            .into(),
                    ));
                }
            } else {
                if !self.rest0 {
                    self.offset_dirty = true;
                }
                let offset = usize::try_from(offset)
                    .map_err(|_| SessionError::Protocol("offset too large".into()))?;
                self.ftp
                    .resume_transfer(offset)
                    .await
                    .map_err(|e| SessionError::from_ftp("REST", e))?;
            }
        }
        let command = format!("RETR {path}");
        let opened = timeout(
            self.timeouts.reply,
            self.ftp.custom_data_command(
                command.as_str(),
                &[Status::AboutToSend, Status::AlreadyOpen],
            ),
        )
        .await
        .map_err(|_| late(&command, self.timeouts.reply))?;
        let (resp, stream) = match opened {
            Ok(opened) => opened,
            Err(FtpError::SecureError(detail)) => return Err(self.data_tls_error(detail).await),
            Err(e) => return Err(SessionError::from_ftp(&command, e)),
        };
        let mut stream = stream;
        if self.active {
            // suppaftp accepted this socket itself: tune it as `connect_data` tunes ours.
            self.tune_accepted(&mut stream)?;
        }
        Ok(Transfer {
            stream,
            announced_size: reply::parse_transfer_size(&resp.body),
            ends_at,
        })
    }

    /// The error for a failed TLS handshake on a data connection, with the server's explanation
    /// when it sends one at once (vsftpd: "522 SSL connection failed; session reuse required").
    /// The session is dropped after this, so waiting for that reply costs nothing else.
    pub(in crate::ftp) async fn data_tls_error(&mut self, detail: String) -> SessionError {
        let Some((client, counters)) = self.tls.clone() else {
            return SessionError::Protocol(format!("TLS error on a plain session: {detail}"));
        };
        let wait = self.timeouts.reply.min(SERVER_EXPLANATION_WAIT);
        let said = match timeout(wait, self.ftp.read_response_in(&[])).await {
            Ok(Err(FtpError::UnexpectedResponse(r))) | Ok(Ok(r)) => {
                let code = reply::reply_code(&r.body).unwrap_or(0);
                // Only a refusal explains the failure; a late 150/226 does not.
                (code >= 400).then(|| reply::reply_text(&r.body))
            }
            _ => None,
        };
        SessionError::Tls(client.handshake_error(&counters, "data", detail, said))
    }

    /// A TLS session whose server refused a data connection with 522 (RFC 4217: the data
    /// connection must be protected; vsftpd: "522 SSL connection failed: session reuse
    /// required") gets a TLS error instead of `e`, with `detail` saying what happened.
    pub fn tls_refusal(&self, e: &SessionError, detail: String) -> Option<SessionError> {
        let (client, counters) = self.tls.as_ref()?;
        match e {
            SessionError::Reply {
                code: 522, text, ..
            } => Some(SessionError::Tls(client.handshake_error(
                counters,
                "data",
                detail,
                Some(text.clone()),
            ))),
            _ => None,
        }
    }

    /// Ends a transfer: closes the data connection and reads the server's reply.
    ///
    /// `to_eof` says the data connection was read to its end (the server sent everything it
    /// meant to): then the reply must report success. Otherwise we stopped early, any reply is
    /// expected (426, 451, 226, 150...), and the control channel is resynchronised with `NOOP`.
    pub async fn end_transfer(
        &mut self,
        stream: DataStream,
        to_eof: bool,
    ) -> Result<(), SessionError> {
        let reply = timeout(self.timeouts.reply, stream.finish())
            .await
            .map_err(|_| late("waiting for the end-of-transfer reply", self.timeouts.reply))?;
        match reply {
            Ok(()) => {
                if !to_eof {
                    self.resync().await?;
                }
                Ok(())
            }
            Err(FtpError::UnexpectedResponse(r)) => {
                if to_eof {
                    Err(SessionError::from_reply("RETR", &r.body))
                } else {
                    self.resync().await
                }
            }
            Err(e) => Err(SessionError::from_ftp("end of transfer", e)),
        }
    }

    /// Sends `NOOP` and reads replies until its `200`, discarding late replies of an ended
    /// transfer. Bounded: at most 8 replies, each within the reply timeout.
    async fn resync(&mut self) -> Result<(), SessionError> {
        let first = timeout(
            self.timeouts.reply,
            self.ftp.custom_command("NOOP", &[Status::CommandOk]),
        )
        .await
        .map_err(|_| late("NOOP after an early stop", self.timeouts.reply))?;
        match first {
            Ok(_) => return Ok(()),
            Err(FtpError::UnexpectedResponse(_)) => {}
            Err(e) => return Err(SessionError::from_ftp("NOOP", e)),
        }
        for _ in 0..8 {
            let r = timeout(
                self.timeouts.reply,
                self.ftp.read_response_in(&[Status::CommandOk]),
            )
            .await
            .map_err(|_| late("NOOP reply after an early stop", self.timeouts.reply))?;
            match r {
                Ok(_) => return Ok(()),
                Err(FtpError::UnexpectedResponse(_)) => continue,
                Err(e) => return Err(SessionError::from_ftp("NOOP", e)),
            }
        }
        Err(SessionError::Protocol(
            "the server kept sending replies after an early stop".into(),
        ))
    }
}

/// Longest wait for the server's reply explaining a failed data-connection handshake.
const SERVER_EXPLANATION_WAIT: Duration = Duration::from_secs(3);
