//! FTP URLs: parsing `ftp://`, `ftpes://` and `ftps://` URLs given on the
//! command line, printing them without the password, and choosing a safe
//! local file name for a download.
//!
//! `ftpes://` is FTP with explicit TLS (`AUTH TLS` on the usual port 21),
//! `ftps://` is implicit TLS (TLS from the first byte, port 990). The `url`
//! crate knows only `ftp` as a special scheme (IPv4 hosts, lower-cased and
//! punycoded domains, `\` as a path separator, default port 21), so the other
//! two are parsed as `ftp` and only their default port differs: one grammar
//! for all three.
//!
//! Parsing follows RFC 1738 for the path: it is relative to the login
//! directory (`ftp://h/pub/x.iso` is `pub/x.iso`), and a first segment of
//! `%2F` makes it absolute (`ftp://h/%2Fpub/x.iso` is `/pub/x.iso`). Every
//! function here is pure: strings in, values out, no I/O.
//!
//! The password must never reach logs, progress lines, the manifest or error
//! messages, so [`FtpUrl`] prints as [`FtpUrl::redacted`] (Display) and hides
//! the password in its Debug output, and no [`UrlError`] ever carries it.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The default FTP control port (also for `ftpes://`); it is left out of
/// printed URLs.
const DEFAULT_PORT: u16 = 21;

/// The default port of implicit FTPS (`ftps://`).
const IMPLICIT_TLS_PORT: u16 = 990;

/// The longest file name most file systems accept, in bytes (`NAME_MAX`).
const MAX_FILE_NAME_BYTES: usize = 255;

/// Characters escaped in the user name and password of a printed URL:
/// everything except the RFC 3986 unreserved characters.
const USERINFO_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters escaped in one path segment of a printed URL. `/` is escaped
/// (it separates segments), and so are `;` (so a file name ending in
/// `;type=a` is not read back as a type code), `%`, `?`, `#` and `\`.
const SEGMENT_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// The server named in an FTP URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host name, lower-cased (and punycode-encoded if it was not ASCII).
    Domain(String),
    /// An IPv4 address such as `127.0.0.1`.
    Ipv4(Ipv4Addr),
    /// An IPv6 address, written `[::1]` in the URL.
    Ipv6(Ipv6Addr),
}

/// Whether, and how, the control and data connections use TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    /// Plain FTP (`ftp://`).
    #[default]
    None,
    /// Explicit FTPS (`ftpes://`, or `ftp://` with `--ftps`): connect in
    /// plain text, then `AUTH TLS`, `PBSZ 0`, `PROT P` before logging in.
    Explicit,
    /// Implicit FTPS (`ftps://`): TLS from the first byte, usually port 990.
    Implicit,
}

impl Tls {
    /// The URL scheme, without `://`.
    pub fn scheme(self) -> &'static str {
        match self {
            Tls::None => "ftp",
            Tls::Explicit => "ftpes",
            Tls::Implicit => "ftps",
        }
    }

    /// The control port when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Tls::None | Tls::Explicit => DEFAULT_PORT,
            Tls::Implicit => IMPLICIT_TLS_PORT,
        }
    }

    /// True for both kinds of FTPS.
    pub fn is_tls(self) -> bool {
        self != Tls::None
    }
}

/// A parsed `ftp://`, `ftpes://` or `ftps://` URL naming one file to download.
///
/// Debug and Display never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct FtpUrl {
    /// Plain FTP, explicit or implicit FTPS (from the scheme).
    pub tls: Tls,
    /// The server to connect to.
    pub host: Host,
    /// The control port; the scheme's default (21, or 990 for `ftps://`)
    /// when the URL has none.
    pub port: u16,
    /// The percent-decoded user name; `None` means anonymous login.
    pub user: Option<String>,
    /// The percent-decoded password; `None` when the URL has none (the
    /// caller then prompts or uses netrc). Only set when `user` is set.
    pub password: Option<String>,
    /// The percent-decoded path to send in RETR/SIZE/MDTM: relative to the
    /// login directory unless it starts with `/`.
    pub path: String,
}

/// Why a URL was refused or no local file name could be made from it.
///
/// No message ever contains the password.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// The text has no `scheme:` prefix at all.
    #[error(
        "URL has no scheme; ftpseg takes ftp:// URLs, e.g. ftp://host/pub/file.iso (or ftpes:// and ftps:// for FTP over TLS)"
    )]
    MissingScheme,
    /// The scheme is something other than `ftp`, `ftpes` or `ftps`.
    #[error(
        "unsupported URL scheme '{scheme}'; ftpseg takes ftp:// URLs, e.g. ftp://host/pub/file.iso (or ftpes:// and ftps:// for FTP over TLS)"
    )]
    UnsupportedScheme {
        /// The scheme as written, without the `:`.
        scheme: String,
    },
    /// A raw control character (tab, newline, ...) appears in the URL text.
    #[error(
        "URL contains a control character (U+{code:04X}); percent-encode it, e.g. %09 for a tab"
    )]
    ControlCharacter {
        /// The offending code point.
        code: u32,
    },
    /// The `url` crate could not parse the text.
    #[error("invalid FTP URL: {0}")]
    Invalid(::url::ParseError),
    /// The URL names no server.
    #[error("URL has no host name; write it as ftp://host/path")]
    MissingHost,
    /// The URL gives port 0.
    #[error("URL has port 0; give a port from 1 to 65535, or leave it out to use 21")]
    PortZero,
    /// `ftp://:secret@host/...`: a password but an empty user name.
    #[error("URL has a password but no user name; write it as ftp://user:password@host/path")]
    PasswordWithoutUser,
    /// The URL has a `?query` part.
    #[error(
        "URL has a query string ('?...'), which FTP URLs do not have; if '?' is part of the file name, write it as %3F"
    )]
    Query,
    /// The URL has a `#fragment` part.
    #[error(
        "URL has a fragment ('#...'), which FTP URLs do not have; if '#' is part of the file name, write it as %23"
    )]
    Fragment,
    /// A part of the URL decodes to bytes that are not UTF-8.
    #[error("URL {part} is not valid UTF-8 after percent-decoding; ftpseg needs UTF-8 names")]
    NotUtf8 {
        /// "user name", "password" or "path".
        part: &'static str,
    },
    /// A part of the URL decodes to text with CR, LF or NUL in it, which
    /// would end an FTP command line early and inject another command.
    #[error(
        "URL {part} contains an encoded CR, LF or NUL (%0D, %0A or %00); FTP commands are single lines, so it is refused"
    )]
    LineBreak {
        /// "user name", "password" or "path".
        part: &'static str,
    },
    /// `;type=a` or `;type=d`: ASCII transfer or directory listing.
    #[error(
        "URL asks for ';type={code}', but ftpseg transfers files in binary mode only; remove ';type={code}' or use ';type=i'"
    )]
    NotBinary {
        /// The type code as written.
        code: char,
    },
    /// `;type=x` with a code RFC 1738 does not define.
    #[error(
        "URL ends in unknown transfer type ';type={code}'; only ';type=i' is supported (write ';' as %3B if it is part of the file name)"
    )]
    UnknownType {
        /// The type code as written.
        code: char,
    },
    /// The URL has no path after the host.
    #[error("URL has no file path; give one, e.g. ftp://host/pub/file.iso")]
    EmptyPath,
    /// The path ends in `/`, so it names a directory.
    #[error("URL names a directory ({path:?}); give a file path, e.g. ftp://host/pub/file.iso")]
    Directory {
        /// The decoded path.
        path: String,
    },
    /// The last path segment leaves nothing usable as a local file name.
    #[error(
        "cannot make a safe local file name from the remote path {path:?}; pass -o/--output to choose one"
    )]
    NoFileName {
        /// The decoded path.
        path: String,
    },
    /// The last path segment is longer than a local file name may be.
    #[error(
        "the remote file name is longer than 255 bytes, too long for a local file; pass -o/--output to choose one"
    )]
    FileNameTooLong,
}

impl FtpUrl {
    /// Parses a URL that names a file, or a folder when it ends in `/` (`ftp://h/pub/`, or
    /// `ftp://h/` for the login folder), which [`FtpUrl::parse`] alone refuses. Returns the URL
    /// and whether it names a folder; a folder's path keeps the `/` it ends in (`pub/`; `""` for
    /// the login folder), see `ftp::url::folder_path`.
    pub fn parse_file_or_folder(raw: &str) -> Result<(FtpUrl, bool), UrlError> {
        if raw.ends_with('/') {
            // Parsed with a placeholder file name, which is then dropped.
            let mut u = FtpUrl::parse(&format!("{raw}_"))?;
            u.path.pop();
            Ok((u, true))
        } else {
            Ok((FtpUrl::parse(raw)?, false))
        }
    }

    /// Parses an `ftp://`, `ftpes://` or `ftps://` URL naming one file.
    ///
    /// Leading and trailing ASCII whitespace is ignored. The user name,
    /// password and path are percent-decoded; a `;type=i` suffix is dropped.
    /// An empty user name means anonymous. An empty password (`user:@`) is
    /// the same as no password.
    pub fn parse(s: &str) -> Result<FtpUrl, UrlError> {
        let s = s.trim_ascii();
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(UrlError::ControlCharacter { code: u32::from(c) });
        }
        let (tls, rest) = check_scheme(s)?;

        // `ftpes` and `ftps` are not special schemes to the `url` crate: it
        // would keep `127.0.0.1` as an opaque host name, keep upper case, and
        // read `\` as part of a name. Parsed as `ftp`, they get exactly the
        // ftp:// grammar.
        let as_ftp = format!("ftp:{rest}");
        let invalid = |e| match e {
            ::url::ParseError::EmptyHost => UrlError::MissingHost,
            other => UrlError::Invalid(other),
        };
        let url = ::url::Url::parse(&as_ftp).map_err(invalid)?;
        if url.query().is_some() {
            return Err(UrlError::Query);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }

        let host = match url.host() {
            Some(::url::Host::Domain(name)) if !name.is_empty() => Host::Domain(name.to_owned()),
            Some(::url::Host::Ipv4(addr)) => Host::Ipv4(addr),
            Some(::url::Host::Ipv6(addr)) => Host::Ipv6(addr),
            Some(::url::Host::Domain(_)) | None => return Err(UrlError::MissingHost),
        };
        let port = match url.port() {
            Some(port) => port,
            None if tls.default_port() == DEFAULT_PORT => DEFAULT_PORT,
            // Parsed as ftp://, an explicit `:21` looks like no port at all.
            // Every special scheme shares one grammar, and http's default is
            // 80, so http: tells an explicit 21 from none.
            None => match ::url::Url::parse(&format!("http:{rest}")).map(|u| u.port()) {
                Ok(Some(port)) => port,
                _ => tls.default_port(),
            },
        };
        if port == 0 {
            return Err(UrlError::PortZero);
        }

        let user = decode(url.username(), "user name")?;
        let user = if user.is_empty() { None } else { Some(user) };
        let password = match url.password() {
            Some(encoded) => Some(decode(encoded, "password")?),
            None => None,
        };
        if user.is_none() && password.is_some() {
            return Err(UrlError::PasswordWithoutUser);
        }

        let path = decode_path(&url)?;
        Ok(FtpUrl {
            tls,
            host,
            port,
            user,
            password,
            path,
        })
    }

    /// True when `other` names the same file on the same server, whatever
    /// the TLS mode: `ftp://h/x` and `ftpes://h/x` reach the same server on
    /// the same port, and TLS changes the transport, not the file. (The
    /// password is not compared: it is never stored.)
    pub fn same_file(&self, other: &FtpUrl) -> bool {
        self.host == other.host
            && self.port == other.port
            && self.user == other.user
            && self.path == other.path
    }

    /// The host to resolve or connect to: a host name, or an IP address
    /// without brackets ("example.org", "127.0.0.1", "::1").
    pub fn host_for_connect(&self) -> String {
        match &self.host {
            Host::Domain(name) => name.clone(),
            Host::Ipv4(addr) => addr.to_string(),
            Host::Ipv6(addr) => addr.to_string(),
        }
    }

    /// The URL without the password, re-encoded so that parsing it again
    /// gives back the same scheme, host, port, user and path. The port is
    /// left out when it is the scheme's default (21, or 990 for `ftps://`).
    /// Use this for logs, progress lines, the manifest and error messages.
    ///
    /// Example: `ftp://bob@[::1]:2121/pub/a%20b.iso`.
    pub fn redacted(&self) -> String {
        let mut out = format!("{}://", self.tls.scheme());
        if let Some(user) = &self.user {
            out.extend(utf8_percent_encode(user, USERINFO_ESCAPES));
            out.push('@');
        }
        match &self.host {
            Host::Domain(name) => out.push_str(name),
            Host::Ipv4(addr) => out.push_str(&addr.to_string()),
            Host::Ipv6(addr) => out.push_str(&format!("[{addr}]")),
        }
        if self.port != self.tls.default_port() {
            out.push_str(&format!(":{}", self.port));
        }
        out.push('/');
        out.push_str(&encode_path(&self.path));
        out
    }

    /// The default local output name: the last segment of the path, made
    /// safe to create in the current directory.
    ///
    /// Control characters become `_` and surrounding whitespace is trimmed.
    /// The result is never empty, `.` or `..`, never contains `/`, NUL or
    /// control characters, and is at most 255 bytes long; when that is not
    /// possible the error tells the user to pass -o/--output.
    pub fn file_name(&self) -> Result<String, UrlError> {
        let last = self.path.rsplit('/').next().unwrap_or("");
        let replaced: String = last
            .chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect();
        let name = replaced.trim();
        if name.is_empty() || name == "." || name == ".." {
            return Err(UrlError::NoFileName {
                path: self.path.clone(),
            });
        }
        if name.len() > MAX_FILE_NAME_BYTES {
            return Err(UrlError::FileNameTooLong);
        }
        Ok(name.to_owned())
    }
}

impl fmt::Display for FtpUrl {
    /// Prints [`FtpUrl::redacted`]: never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for FtpUrl {
    /// Like a derived Debug, but the password shows as `<redacted>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = self.password.as_ref().map(|_| "<redacted>");
        f.debug_struct("FtpUrl")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &password)
            .field("path", &self.path)
            .finish()
    }
}

/// Checks the `scheme:` prefix before handing the text to the `url` crate,
/// so that `http://...` gets a clear "takes ftp:// URLs" error. Returns the
/// TLS mode the scheme names and the text after `scheme:`.
fn check_scheme(s: &str) -> Result<(Tls, &str), UrlError> {
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(UrlError::MissingScheme);
    };
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_is_valid = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !starts_with_letter || !rest_is_valid {
        return Err(UrlError::MissingScheme);
    }
    for tls in [Tls::None, Tls::Explicit, Tls::Implicit] {
        if scheme.eq_ignore_ascii_case(tls.scheme()) {
            return Ok((tls, rest));
        }
    }
    Err(UrlError::UnsupportedScheme {
        scheme: scheme.to_owned(),
    })
}

/// Percent-decodes one part of the URL into UTF-8 text that is safe to put
/// in an FTP command line (no CR, LF or NUL).
fn decode(encoded: &str, part: &'static str) -> Result<String, UrlError> {
    let text = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| UrlError::NotUtf8 { part })?;
    if text.contains(['\r', '\n', '\0']) {
        return Err(UrlError::LineBreak { part });
    }
    Ok(text.into_owned())
}

/// Decodes the URL path segment by segment (RFC 1738) and checks that it
/// names a file.
fn decode_path(url: &::url::Url) -> Result<String, UrlError> {
    let mut segments: Vec<&str> = match url.path_segments() {
        Some(segments) => segments.collect(),
        None => Vec::new(),
    };
    if let Some(last) = segments.last_mut() {
        *last = strip_type_code(last)?;
    }
    let mut decoded = Vec::with_capacity(segments.len());
    for segment in segments {
        decoded.push(decode(segment, "path")?);
    }
    let path = decoded.join("/");
    if path.is_empty() {
        return Err(UrlError::EmptyPath);
    }
    if path.ends_with('/') {
        return Err(UrlError::Directory { path });
    }
    Ok(path)
}

/// Removes a `;type=i` suffix from the last (still encoded) path segment;
/// refuses `;type=a`, `;type=d` and unknown codes.
fn strip_type_code(segment: &str) -> Result<&str, UrlError> {
    const SUFFIX: &str = ";type=";
    let Some(start) = segment.len().checked_sub(SUFFIX.len() + 1) else {
        return Ok(segment);
    };
    let (Some(head), Some(tail)) = (segment.get(..start), segment.get(start..)) else {
        return Ok(segment);
    };
    let Some(code) = tail.get(SUFFIX.len()..).and_then(|c| c.chars().next()) else {
        return Ok(segment);
    };
    if !tail[..SUFFIX.len()].eq_ignore_ascii_case(SUFFIX) {
        return Ok(segment);
    }
    match code {
        'i' | 'I' => Ok(head),
        'a' | 'A' | 'd' | 'D' => Err(UrlError::NotBinary { code }),
        _ => Err(UrlError::UnknownType { code }),
    }
}

/// Percent-encodes a decoded path so that [`FtpUrl::parse`] gives it back.
///
/// Normally each `/`-separated piece becomes one URL segment; a leading `/`
/// becomes `%2F`. If a piece is `.` or `..`, the URL parser would remove it,
/// so then the whole path is written as one segment with `/` as `%2F`.
fn encode_path(path: &str) -> String {
    let pieces: Vec<&str> = path.split('/').collect();
    if pieces.iter().any(|piece| *piece == "." || *piece == "..") {
        return utf8_percent_encode(path, SEGMENT_ESCAPES).to_string();
    }
    let (prefix, relative) = match path.strip_prefix('/') {
        Some(rest) => ("%2F", rest),
        None => ("", path),
    };
    let encoded: Vec<String> = relative
        .split('/')
        .map(|piece| utf8_percent_encode(piece, SEGMENT_ESCAPES).to_string())
        .collect();
    format!("{prefix}{}", encoded.join("/"))
}

/// A folder's path without the `/` it ends in (`pub/` -> `pub`), to list or upload into.
pub fn folder_path(path: &str) -> String {
    path.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests;
