//! The upload commands of a session, for `ftpseg put`: `STOR` at an offset (`REST n` first),
//! `APPE`, writing the data with a stall limit, `RNFR`/`RNTO`, `DELE`, and the server's own
//! hash of a file (`HASH`, `XSHA256`, `XMD5`, `SITE MD5`) where it offers one.
//!
//! The same rules as downloads ([`super::session`]): every step is bounded by the session's
//! timeouts, a session that timed out is dropped, `REST 0` is sent before a `STOR` from byte 0
//! (libunftp keeps a stale offset after a failed transfer), and EPSV falls back to PASV once.
//! An upload is ended by closing the data connection and reading the server's reply: only `226`
//! (or `250`) says the server has every byte; anything else is an error.

use suppaftp::FtpError;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::session::{DataStream, Session, SessionError, late};

/// How an upload transfer is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// `STOR`, after `REST offset` (and `REST 0` from byte 0).
    Stor,
    /// `APPE`: the server appends at the end of the file (its size is the offset).
    Appe,
}

/// A hash algorithm both sides can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgo {
    Sha256,
    Md5,
}

impl HashAlgo {
    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            HashAlgo::Sha256 => 64,
            HashAlgo::Md5 => 32,
        }
    }

    /// The name used in `HASH` feature lists and messages.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "SHA-256",
            HashAlgo::Md5 => "MD5",
        }
    }
}

/// One way of asking the server for a file's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashCommand {
    /// `OPTS HASH <algo>` then `HASH path` (draft-bryan-ftpext-hash; proftpd mod_digest).
    Hash(HashAlgo),
    /// `XSHA256 path` (proftpd mod_digest, some Windows servers).
    XSha256,
    /// `XMD5 path`.
    XMd5,
    /// `SITE MD5 path` (libunftp).
    SiteMd5,
}

impl HashCommand {
    pub fn algo(&self) -> HashAlgo {
        match self {
            HashCommand::Hash(a) => *a,
            HashCommand::XSha256 => HashAlgo::Sha256,
            HashCommand::XMd5 | HashCommand::SiteMd5 => HashAlgo::Md5,
        }
    }

    /// The command's name, for messages.
    pub fn label(&self) -> String {
        match self {
            HashCommand::Hash(a) => format!("HASH ({})", a.name()),
            HashCommand::XSha256 => "XSHA256".into(),
            HashCommand::XMd5 => "XMD5".into(),
            HashCommand::SiteMd5 => "SITE MD5".into(),
        }
    }
}

/// What the server said a file's hash is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteHash {
    pub command: HashCommand,
    /// Lower-case hex.
    pub hex: String,
}

/// The hash commands worth trying, best first, from the FEAT reply (`hash`: the `HASH` line's
/// argument; `raw`: every feature line). SHA-256 before MD5; `SITE MD5` last, as no server
/// lists it (a server without it answers 5xx, which costs one round trip).
pub fn hash_commands(hash: Option<&str>, raw: &[String]) -> Vec<HashCommand> {
    let mut out = Vec::new();
    if let Some(list) = hash {
        let names: Vec<String> = list
            .split(';')
            .map(|n| n.trim().trim_end_matches('*').to_ascii_uppercase())
            .collect();
        for algo in [HashAlgo::Sha256, HashAlgo::Md5] {
            if names.iter().any(|n| n == algo.name()) {
                out.push(HashCommand::Hash(algo));
            }
        }
    }
    let listed = |name: &str| {
        raw.iter().any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(name))
        })
    };
    if listed("XSHA256") {
        out.push(HashCommand::XSha256);
    }
    if listed("XMD5") {
        out.push(HashCommand::XMd5);
    }
    out.push(HashCommand::SiteMd5);
    out
}

/// The digest in a hash reply: the first word made of exactly `len` hex digits (`213 SHA-256
/// 0-99 <hex> name`, `250 <hex>`, `213 <hex>    /path`), lower-cased.
pub fn parse_hash_reply(text: &str, len: usize) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.len() == len && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|w| w.to_ascii_lowercase())
}

/// The folder in a `257 "/dir" is the current directory` reply (`""` inside stands for `"`).
pub fn parse_pwd(text: &str) -> Option<String> {
    let start = text.find('"')? + 1;
    let mut out = String::new();
    let mut chars = text[start..].chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
                out.push('"');
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

impl Session {
    /// Opens an upload of `path`: `STOR` at `offset`, or `APPE`. Needs `REST` for a `STOR` at
    /// an offset. Falls back from EPSV to PASV once, as downloads do.
    pub async fn open_upload(
        &mut self,
        how: Store,
        path: &str,
        offset: u64,
    ) -> Result<DataStream, SessionError> {
        match self.open_upload_once(how, path, offset).await {
            Err(SessionError::Reply {
                code: code @ (500 | 501 | 502 | 504),
                text,
                command,
            }) if self.epsv && command != "REST" => {
                self.set_epsv(false);
                match self.open_upload_once(how, path, offset).await {
                    Ok(s) => Ok(s),
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
            other => other,
        }
    }

    async fn open_upload_once(
        &mut self,
        how: Store,
        path: &str,
        offset: u64,
    ) -> Result<DataStream, SessionError> {
        let command = match how {
            Store::Stor => format!("STOR {path}"),
            Store::Appe => format!("APPE {path}"),
        };
        if how == Store::Stor {
            if offset > 0 {
                if !self.rest {
                    return Err(SessionError::Protocol(
                        "cannot write at an offset: the server does not support REST".into(),
                    ));
                }
                if !self.rest0 {
                    self.offset_dirty = true;
                }
                let offset = usize::try_from(offset)
                    .map_err(|_| SessionError::Protocol("offset too large".into()))?;
                self.ftp
                    .resume_transfer(offset)
                    .await
                    .map_err(|e| SessionError::from_ftp("REST", e))?;
            } else if self.rest && self.rest0 {
                self.raw("REST 0", &[350]).await?;
            } else if self.offset_dirty {
                return Err(SessionError::Desync(
                    "a REST offset may still be pending on this session (the server refuses \
                     REST 0); reconnecting"
                        .into(),
                ));
            }
        }
        let opened = timeout(self.timeouts.reply, async {
            match how {
                Store::Stor => self.ftp.put_with_stream(path).await,
                Store::Appe => self.ftp.append_with_stream(path).await,
            }
        })
        .await
        .map_err(|_| late(&command, self.timeouts.reply))?;
        match opened {
            Ok(stream) => Ok(stream),
            Err(FtpError::SecureError(detail)) => Err(self.data_tls_error(detail).await),
            Err(e) => Err(SessionError::from_ftp(&command, e)),
        }
    }

    /// Writes all of `buf` to an upload's data connection. No progress at all for the stall
    /// limit (`data_idle`) is an error; the session must then be dropped.
    pub async fn write_data(
        &self,
        stream: &mut DataStream,
        buf: &[u8],
    ) -> Result<(), SessionError> {
        let mut rest = buf;
        while !rest.is_empty() {
            match timeout(self.timeouts.data_idle, stream.write(rest)).await {
                Ok(Ok(0)) => {
                    return Err(SessionError::Io {
                        command: "upload".into(),
                        source: std::io::ErrorKind::WriteZero.into(),
                    });
                }
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(source)) => {
                    return Err(SessionError::Io {
                        command: "upload".into(),
                        source,
                    });
                }
                Err(_) => {
                    return Err(SessionError::Timeout(format!(
                        "data connection (no byte accepted for {} s)",
                        self.timeouts.data_idle.as_secs_f64()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Ends an upload: flushes and closes the data connection, then reads the server's reply,
    /// which must be `226`/`250` (the server has stored every byte).
    pub async fn end_upload(
        &mut self,
        mut stream: DataStream,
        command: &str,
    ) -> Result<(), SessionError> {
        timeout(self.timeouts.data_idle, stream.flush())
            .await
            .map_err(|_| late("sending the last bytes", self.timeouts.data_idle))?
            .map_err(|source| SessionError::Io {
                command: command.to_owned(),
                source,
            })?;
        let reply = timeout(self.timeouts.reply, stream.finish())
            .await
            .map_err(|_| late("waiting for the end-of-upload reply", self.timeouts.reply))?;
        reply.map_err(|e| SessionError::from_ftp(command, e))
    }

    /// Renames `from` to `to` (`RNFR`, then `RNTO`).
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<(), SessionError> {
        self.raw(&format!("RNFR {from}"), &[350]).await?;
        self.raw(&format!("RNTO {to}"), &[250, 200]).await?;
        Ok(())
    }

    /// Creates the folder `path` (`MKD`); one that exists already is fine (`550`/`521` with
    /// the folder there, as `SIZE` cannot tell folders apart, `CWD` then back checks it).
    pub async fn make_dir(&mut self, path: &str) -> Result<(), SessionError> {
        match self.raw(&format!("MKD {path}"), &[257, 250]).await {
            Ok(_) => Ok(()),
            Err(
                e @ SessionError::Reply {
                    code: 550 | 521, ..
                },
            ) => {
                let pwd = self.raw("PWD", &[257]).await?;
                let here = parse_pwd(&String::from_utf8_lossy(&pwd));
                if self.raw(&format!("CWD {path}"), &[250]).await.is_err() {
                    return Err(e);
                }
                match here {
                    Some(dir) => self.raw(&format!("CWD {dir}"), &[250]).await.map(|_| ()),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes `path` (`DELE`).
    pub async fn delete(&mut self, path: &str) -> Result<(), SessionError> {
        self.raw(&format!("DELE {path}"), &[250, 200]).await?;
        Ok(())
    }

    /// The server's hash of `path`, from the first command in `commands` it answers; `None`
    /// when it answers none of them. A timeout or a lost connection is an error.
    pub async fn remote_hash(
        &mut self,
        path: &str,
        commands: &[HashCommand],
    ) -> Result<Option<RemoteHash>, SessionError> {
        for command in commands {
            let asked = match command {
                HashCommand::Hash(algo) => {
                    match self
                        .raw(&format!("OPTS HASH {}", algo.name()), &[200])
                        .await
                    {
                        Ok(_) => self.raw(&format!("HASH {path}"), &[213]).await,
                        Err(e) => Err(e),
                    }
                }
                HashCommand::XSha256 => self.raw(&format!("XSHA256 {path}"), &[250, 213]).await,
                HashCommand::XMd5 => self.raw(&format!("XMD5 {path}"), &[250, 213]).await,
                HashCommand::SiteMd5 => {
                    self.raw(&format!("SITE MD5 {path}"), &[213, 250, 200])
                        .await
                }
            };
            match asked {
                Ok(body) => {
                    let text = String::from_utf8_lossy(&body);
                    if let Some(hex) = parse_hash_reply(&text, command.algo().hex_len()) {
                        return Ok(Some(RemoteHash {
                            command: command.clone(),
                            hex,
                        }));
                    }
                }
                Err(SessionError::Reply { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_commands_prefer_sha256_and_end_with_site_md5() {
        let raw = vec!["XMD5".to_string(), "XSHA256".into(), "SIZE".into()];
        assert_eq!(
            hash_commands(Some("CRC32;MD5;SHA-1*;SHA-256;SHA-512"), &raw),
            vec![
                HashCommand::Hash(HashAlgo::Sha256),
                HashCommand::Hash(HashAlgo::Md5),
                HashCommand::XSha256,
                HashCommand::XMd5,
                HashCommand::SiteMd5
            ]
        );
        assert_eq!(hash_commands(None, &[]), vec![HashCommand::SiteMd5]);
        assert_eq!(
            hash_commands(Some("sha-256*"), &[]),
            vec![HashCommand::Hash(HashAlgo::Sha256), HashCommand::SiteMd5]
        );
    }

    #[test]
    fn pwd_replies() {
        assert_eq!(
            parse_pwd("257 \"/\" is the current directory").as_deref(),
            Some("/")
        );
        assert_eq!(
            parse_pwd("257 \"/a \"\"b\"\"\" here").as_deref(),
            Some("/a \"b\"")
        );
        assert_eq!(parse_pwd("257 no quotes"), None);
    }

    #[test]
    fn hash_replies_of_each_kind() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            parse_hash_reply(&format!("213 SHA-256 0-0 {sha} up/x.bin\r\n"), 64).as_deref(),
            Some(sha)
        );
        assert_eq!(
            parse_hash_reply(&format!("250 {}\r\n", md5.to_uppercase()), 32).as_deref(),
            Some(md5)
        );
        assert_eq!(
            parse_hash_reply(&format!("213 {md5}    /upload/x\r\n"), 32).as_deref(),
            Some(md5)
        );
        // Wrong length or not hex: nothing.
        assert_eq!(parse_hash_reply(&format!("213 {md5}"), 64), None);
        assert_eq!(
            parse_hash_reply("213 zz1d8cd98f00b204e9800998ecf8427e", 32),
            None
        );
    }

    proptest! {
        #[test]
        fn pwd_round_trips_any_folder(
            dir in proptest::collection::vec(
                prop_oneof![Just("\"".to_owned()), Just("/".to_owned()), Just(" ".to_owned()), "[^\r\n]{1,5}"],
                0..8,
            )
            .prop_map(|pieces| pieces.concat()),
            after in proptest::option::of(" [^\r\n]{0,30}"),
        ) {
            let reply = format!("257 \"{}\"{}", dir.replace('"', "\"\""), after.clone().unwrap_or_default());
            prop_assert_eq!(parse_pwd(&reply), Some(dir.clone()), "{:?}", reply);
            // Without its closing quote, or without quotes at all, there is no folder.
            let open = format!("257 \"{}", dir.replace('"', "\"\""));
            prop_assert_eq!(parse_pwd(&open), None, "{:?}", open);
            let bare = format!("257 {} is the current directory", dir.replace('"', ""));
            prop_assert_eq!(parse_pwd(&bare), None, "{:?}", bare);
        }

        #[test]
        fn hash_reply_finds_the_digest_of_its_length(
            len in proptest::sample::select(vec![32usize, 40, 64, 128]),
            digits in proptest::collection::vec((0..16u8, any::<bool>()), 129),
            form in 0..3u8,
            name in "[a-z/._ -]{0,20}[/._-][a-z]{0,5}",
            end in prop_oneof![Just(""), Just("\r\n")],
        ) {
            let hex_of = |n: usize| -> String {
                digits[..n]
                    .iter()
                    .map(|&(d, upper)| {
                        let c = char::from_digit(u32::from(d), 16).unwrap();
                        if upper { c.to_ascii_uppercase() } else { c }
                    })
                    .collect()
            };
            let reply = |hex: &str| match form {
                0 => format!("213 SHA-256 0-{len} {hex} {name}{end}"),
                1 => format!("250 {hex}{end}"),
                _ => format!("213 {hex}    {name}{end}"),
            };
            let hex = hex_of(len);
            prop_assert_eq!(parse_hash_reply(&reply(&hex), len), Some(hex.to_ascii_lowercase()));
            // A digest one digit short or long is not one of this length.
            prop_assert_eq!(parse_hash_reply(&reply(&hex[1..]), len), None);
            prop_assert_eq!(parse_hash_reply(&reply(&hex_of(len + 1)), len), None);
        }
    }
}
