//! Pure parsers for FTP server replies.
//!
//! The control connection (suppaftp) hands over each reply as raw bytes: the
//! 3-digit code, the text and the CRLFs, with every line of a multi-line
//! reply (`213-...\r\n...\r\n213 end\r\n`). This module turns those bytes
//! into values: the reply code, a short printable text for messages, the
//! answers to SIZE and MDTM, the size announced in a 150/125 reply, and the
//! FEAT feature list. Nothing here does I/O, and no input makes it panic:
//! servers send whatever they like.

/// The longest reply text, in characters, that [`reply_text`] returns.
pub const MAX_REPLY_TEXT: usize = 300;

/// The largest file size believed from a server (2^60 bytes, an exbibyte).
/// Anything larger is a broken server, not a real file.
pub const MAX_SIZE: u64 = 1 << 60;

/// At most this many feature lines are kept in [`Features::raw`].
const MAX_FEATURE_LINES: usize = 64;

/// Feature lines and the HASH argument are cut to this many characters.
const MAX_FEATURE_CHARS: usize = 200;

/// At most this many digits are read in a `(N bytes)` size: more than
/// enough for any u64, and it bounds the work done per `(`.
const MAX_SIZE_DIGITS: usize = 20;

/// Why a reply could not be used. Every message includes the reply text,
/// shortened by [`reply_text`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The reply code is not the one the command succeeds with.
    #[error("unexpected reply to {command} (wanted {expected}): {text}")]
    UnexpectedReply {
        /// The command that was answered, e.g. "SIZE".
        command: &'static str,
        /// The code that means success, e.g. 213.
        expected: u16,
        /// The shortened reply.
        text: String,
    },
    /// A 213 reply to SIZE without a number at its end.
    #[error("no file size in the reply to SIZE: {text}")]
    SizeMissing {
        /// The shortened reply.
        text: String,
    },
    /// A 213 reply to SIZE with a negative number.
    #[error("negative file size in the reply to SIZE: {text}")]
    SizeNegative {
        /// The shortened reply.
        text: String,
    },
    /// A 213 reply to SIZE with a number too big for 64 bits.
    #[error("file size in the reply to SIZE does not fit in 64 bits: {text}")]
    SizeOverflow {
        /// The shortened reply.
        text: String,
    },
    /// A 213 reply to SIZE with a number above [`MAX_SIZE`].
    #[error(
        "file size {size} in the reply to SIZE is over 2^60 bytes; the server is probably broken: {text}"
    )]
    SizeTooLarge {
        /// The size the server gave.
        size: u64,
        /// The shortened reply.
        text: String,
    },
    /// A 213 reply to MDTM that is not `YYYYMMDDhhmmss[.f+]`.
    #[error("reply to MDTM is not a YYYYMMDDhhmmss[.fff] timestamp: {text}")]
    MdtmMalformed {
        /// The shortened reply.
        text: String,
    },
    /// A 213 reply to MDTM with a month, day, hour, minute or second that
    /// cannot be.
    #[error("{field} {value} is out of range in the reply to MDTM: {text}")]
    MdtmOutOfRange {
        /// "month", "day", "hour", "minute" or "second".
        field: &'static str,
        /// The value the server gave.
        value: u32,
        /// The shortened reply.
        text: String,
    },
}

/// The 3-digit code at the start of a reply, if it has one (100..=599).
///
/// The code must be followed by the end of the reply or a non-digit
/// (normally ' ' or '-'), so "2130 x" has no code.
pub fn reply_code(raw: &[u8]) -> Option<u16> {
    let digits = raw.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if raw.get(3).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |code, digit| code * 10 + u16::from(digit - b'0'));
    (100..=599).contains(&code).then_some(code)
}

/// One line for messages: lossy UTF-8, multi-line replies joined with
/// " / ", continuation prefixes ("213-", "213 ") kept only on the first
/// line, control characters removed (a tab becomes a space), trimmed, cut
/// at [`MAX_REPLY_TEXT`] chars with "…". Never panics on any bytes.
pub fn reply_text(raw: &[u8]) -> String {
    let code = reply_code(raw);
    let mut parts: Vec<String> = Vec::new();
    for (index, line) in lines(raw).enumerate() {
        let line = match code {
            Some(code) if index > 0 => strip_code_prefix(line, code),
            _ => line,
        };
        let cleaned = printable(&String::from_utf8_lossy(line));
        let cleaned = cleaned.trim();
        if !cleaned.is_empty() {
            parts.push(cleaned.to_owned());
        }
    }
    shorten(&parts.join(" / "), MAX_REPLY_TEXT)
}

/// Parses the `213 <size>` reply to SIZE.
///
/// Like curl, any text between the code and the number at the end of the
/// line is accepted ("213 File size: 1234" is 1234). A reply other than 213,
/// a missing number, a `-` sign, a number too big for 64 bits, and a size
/// above [`MAX_SIZE`] are errors.
pub fn parse_size(raw: &[u8]) -> Result<u64, ReplyError> {
    expect_code(raw, 213, "SIZE")?;
    let body = first_line_body(raw).trim_ascii_end();
    let digits_start = body
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &body[digits_start..];
    if digits.is_empty() {
        return Err(ReplyError::SizeMissing { text: shown(raw) });
    }
    if digits_start > 0 && body[digits_start - 1] == b'-' {
        return Err(ReplyError::SizeNegative { text: shown(raw) });
    }
    let Some(size) = parse_decimal(digits) else {
        return Err(ReplyError::SizeOverflow { text: shown(raw) });
    };
    if size > MAX_SIZE {
        return Err(ReplyError::SizeTooLarge {
            size,
            text: shown(raw),
        });
    }
    Ok(size)
}

/// A file's modification time from MDTM, in UTC: `YYYYMMDDhhmmss` or
/// `YYYYMMDDhhmmss.f+`, with the fraction digits exactly as the server sent
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mdtm(pub String);

/// Parses the `213 YYYYMMDDhhmmss[.f+]` reply to MDTM (RFC 3659, UTC).
///
/// Field ranges are checked (month 1-12, day 1-31, hour 0-23, minute 0-59,
/// second 0-60). Text after the timestamp is ignored. Servers with the old
/// Y2K bug print the year as "19" followed by years-since-1900, e.g.
/// `191000101000000` for 2000-01-01; like lftp, such a 15-digit time
/// starting with "191" is read as year 2000 + the next two digits.
pub fn parse_mdtm(raw: &[u8]) -> Result<Mdtm, ReplyError> {
    expect_code(raw, 213, "MDTM")?;
    let malformed = || ReplyError::MdtmMalformed { text: shown(raw) };

    let body = first_line_body(raw).trim_ascii_start();
    let end = body
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(body.len());
    let token = &body[..end];
    let (whole, fraction) = match token.iter().position(|&b| b == b'.') {
        Some(dot) => (&token[..dot], Some(&token[dot + 1..])),
        None => (token, None),
    };
    if !whole.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    if let Some(fraction) = fraction
        && (fraction.is_empty() || !fraction.iter().all(u8::is_ascii_digit))
    {
        return Err(malformed());
    }

    let (year, rest) = match whole.len() {
        14 => (parse_two_or_four(&whole[..4]), &whole[4..]),
        15 if whole.starts_with(b"191") => (2000 + parse_two_or_four(&whole[3..5]), &whole[5..]),
        _ => return Err(malformed()),
    };
    let fields = [
        ("month", &rest[0..2], 1..=12),
        ("day", &rest[2..4], 1..=31),
        ("hour", &rest[4..6], 0..=23),
        ("minute", &rest[6..8], 0..=59),
        ("second", &rest[8..10], 0..=60),
    ];
    for (field, digits, range) in fields {
        let value = parse_two_or_four(digits);
        if !range.contains(&value) {
            return Err(ReplyError::MdtmOutOfRange {
                field,
                value,
                text: shown(raw),
            });
        }
    }

    // Only ASCII digits and '.' are left, so this conversion is lossless.
    let mut time = format!("{year:04}{}", String::from_utf8_lossy(rest));
    if let Some(fraction) = fraction {
        time.push('.');
        time.push_str(&String::from_utf8_lossy(fraction));
    }
    Ok(Mdtm(time))
}

/// The size announced in a 150/125 reply: "150 Opening BINARY mode data
/// connection for f (2241 bytes)." gives `Some(2241)`.
///
/// The last `(N bytes)` in the reply counts ("bytes" in any case); anything
/// else, such as pure-ftpd's "150 9764.7 kbytes to download", a reply that
/// is not 1xx, or a size above [`MAX_SIZE`], gives `None`. Never panics.
pub fn parse_transfer_size(raw: &[u8]) -> Option<u64> {
    if !reply_code(raw).is_some_and(|code| (100..200).contains(&code)) {
        return None;
    }
    let mut found = None;
    for (index, &byte) in raw.iter().enumerate() {
        if byte == b'('
            && let Some(size) = size_in_parentheses(&raw[index + 1..])
        {
            found = Some(size);
        }
    }
    found.filter(|&size| size <= MAX_SIZE)
}

/// What the server advertises in its FEAT reply (RFC 2389).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `REST STREAM` (or a bare `REST`, which lftp also takes as support).
    pub rest_stream: bool,
    /// `SIZE`.
    pub size: bool,
    /// `MDTM`.
    pub mdtm: bool,
    /// `EPSV`.
    pub epsv: bool,
    /// `PASV`.
    pub pasv: bool,
    /// `RANG STREAM` (proftpd's byte ranges).
    pub rang_stream: bool,
    /// `MLSD`.
    pub mlsd: bool,
    /// `MLST <facts>`.
    pub mlst: bool,
    /// `UTF8`.
    pub utf8: bool,
    /// `AUTH TLS` (also found in lists like `AUTH TLS;SSL`).
    pub auth_tls: bool,
    /// The argument of the `HASH` line, e.g. "SHA-256*;SHA-1;MD5".
    pub hash: Option<String>,
    /// Each feature line trimmed, without control characters; at most 64
    /// lines of at most 200 characters.
    pub raw: Vec<String>,
}

/// Reads the FEAT reply (`211-...\r\n <feature>\r\n...211 End\r\n`).
///
/// Feature names are case-insensitive. Feature lines normally start with one
/// space; lines without it are accepted too. Lines starting with a reply
/// code are the header and footer, and unknown features are ignored. A reply
/// that is not 2xx (FEAT not supported) gives no features.
pub fn parse_features(raw: &[u8]) -> Features {
    let mut features = Features::default();
    if !reply_code(raw).is_some_and(|code| (200..300).contains(&code)) {
        return features;
    }
    for line in lines(raw) {
        if starts_with_code(line) {
            continue;
        }
        let line = printable(&String::from_utf8_lossy(line));
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if features.raw.len() < MAX_FEATURE_LINES {
            features.raw.push(cut(line, MAX_FEATURE_CHARS));
        }
        let (name, argument) = match line.split_once(char::is_whitespace) {
            Some((name, argument)) => (name, argument.trim()),
            None => (line, ""),
        };
        match name.to_ascii_uppercase().as_str() {
            "REST" => features.rest_stream = true,
            "SIZE" => features.size = true,
            "MDTM" => features.mdtm = true,
            "EPSV" => features.epsv = true,
            "PASV" => features.pasv = true,
            "MLSD" => features.mlsd = true,
            "MLST" => features.mlst = true,
            "UTF8" => features.utf8 = true,
            "RANG" if first_word_is(argument, "STREAM") => features.rang_stream = true,
            "AUTH" if lists_tls(argument) => features.auth_tls = true,
            "HASH" if features.hash.is_none() => {
                features.hash = Some(cut(argument, MAX_FEATURE_CHARS));
            }
            _ => {}
        }
    }
    features
}

/// The lines of a reply without their CR/LF; a final CRLF adds no line.
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// The first line after its code and the following ' ' or '-'.
fn first_line_body(raw: &[u8]) -> &[u8] {
    let first = lines(raw).next().unwrap_or(&[]);
    first.get(4..).unwrap_or(&[])
}

/// Whether a line starts like a reply line: 3 digits, then ' ', '-' or the
/// end of the line.
fn starts_with_code(line: &[u8]) -> bool {
    let digits = line
        .get(..3)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    digits && matches!(line.get(3), None | Some(b' ' | b'-'))
}

/// Removes the "213-" or "213 " (or a bare "213") that starts a later line
/// of a multi-line reply with code 213.
fn strip_code_prefix(line: &[u8], code: u16) -> &[u8] {
    let code = code.to_string();
    match line.strip_prefix(code.as_bytes()) {
        Some(rest) if rest.is_empty() => rest,
        Some(rest) if matches!(rest[0], b' ' | b'-') => &rest[1..],
        _ => line,
    }
}

/// Drops control characters; a tab becomes a space.
fn printable(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// Cuts `text` to at most `max` characters, the last being "…" if cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    format!("{}…", cut(text, max.saturating_sub(1)))
}

/// The first `max` characters of `text`, without trailing whitespace.
fn cut(text: &str, max: usize) -> String {
    let kept: String = text.chars().take(max).collect();
    kept.trim_end().to_owned()
}

/// The reply text for an error message, never empty.
fn shown(raw: &[u8]) -> String {
    let text = reply_text(raw);
    if text.is_empty() {
        "(empty reply)".to_owned()
    } else {
        text
    }
}

/// Fails unless the reply has the code `expected`.
fn expect_code(raw: &[u8], expected: u16, command: &'static str) -> Result<(), ReplyError> {
    if reply_code(raw) == Some(expected) {
        Ok(())
    } else {
        Err(ReplyError::UnexpectedReply {
            command,
            expected,
            text: shown(raw),
        })
    }
}

/// Parses ASCII digits as a u64; `None` on overflow or empty input.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        value
            .checked_mul(10)?
            .checked_add(u64::from(digit.wrapping_sub(b'0')))
    })
}

/// Parses 2 or 4 ASCII digits (already checked) as a u32.
fn parse_two_or_four(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |value, &digit| {
        value * 10 + u32::from(digit.wrapping_sub(b'0'))
    })
}

/// Reads `N bytes)` right after a '(': spaces allowed after '(' and before
/// ')', at least one space between the number and "bytes".
fn size_in_parentheses(rest: &[u8]) -> Option<u64> {
    let rest = skip_spaces(rest);
    let digit_count = rest
        .iter()
        .take(MAX_SIZE_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digit_count == 0 || digit_count > MAX_SIZE_DIGITS {
        return None;
    }
    let size = parse_decimal(&rest[..digit_count])?;
    let after_digits = &rest[digit_count..];
    let after_space = skip_spaces(after_digits);
    if after_space.len() == after_digits.len() {
        return None;
    }
    let word = after_space.get(..5)?;
    if !word.eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    (skip_spaces(&after_space[5..]).first() == Some(&b')')).then_some(size)
}

/// `bytes` without its leading spaces and tabs.
fn skip_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Whether an `AUTH` feature argument such as "TLS;SSL" lists TLS.
fn lists_tls(argument: &str) -> bool {
    argument
        .split([';', ',', ' '])
        .any(|mechanism| mechanism.eq_ignore_ascii_case("TLS"))
}

/// Whether the first word of `text` is `word`, ignoring ASCII case.
fn first_word_is(text: &str, word: &str) -> bool {
    text.split_whitespace()
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VSFTPD_FEAT: &[u8] = b"211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n211 End\r\n";
    const PROFTPD_FEAT: &[u8] = b"211-Features:\r\n CLNT\r\n CSID\r\n EPRT\r\n EPSV\r\n HOST\r\n LANG C.UTF-8*\r\n MDTM\r\n MFF modify;UNIX.group;UNIX.mode;\r\n MFMT\r\n MLST modify*;perm*;size*;type*;unique*;UNIX.group*;UNIX.groupname*;UNIX.mode*;UNIX.owner*;UNIX.ownername*;\r\n RANG STREAM\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n";
    const PURE_FTPD_FEAT: &[u8] = b"211-Extensions supported:\r\n UTF8\r\n EPRT\r\n IDLE\r\n MDTM\r\n SIZE\r\n MFMT\r\n REST STREAM\r\n MLST type*;size*;sizd*;modify*;UNIX.mode*;UNIX.uid*;UNIX.gid*;unique*;\r\n MLSD\r\n PRET\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n TVFS\r\n ESTA\r\n PASV\r\n EPSV\r\n ESTP\r\n211 End.\r\n";
    const PYFTPDLIB_FEAT: &[u8] = b"211-Features supported:\r\n EPRT\r\n EPSV\r\n MDTM\r\n MFMT\r\n MLST type*;perm*;size*;modify*;unique*;unix.mode;unix.uid;unix.gid;\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End FEAT.\r\n";
    const LIBUNFTP_FEAT: &[u8] = b"211-Extensions supported:\r\n EPSV\r\n MDTM\r\n MLSD\r\n MLST\r\n REST STREAM\r\n SITE MD5\r\n SIZE\r\n UTF8\r\n211 END\r\n";

    fn text_of(err: ReplyError) -> String {
        err.to_string()
    }

    // ---- reply_code ----------------------------------------------------------

    #[test]
    fn reply_code_reads_the_leading_code() {
        assert_eq!(reply_code(b"213 1234\r\n"), Some(213));
        assert_eq!(reply_code(b"211-Features:\r\n"), Some(211));
        assert_eq!(reply_code(b"550"), Some(550));
        assert_eq!(reply_code(b"100 x"), Some(100));
        assert_eq!(reply_code(b"599 x"), Some(599));
    }

    #[test]
    fn reply_code_refuses_non_codes() {
        for raw in [
            &b""[..],
            b"21",
            b"2130 x",
            b"099 x",
            b"600 x",
            b"abc",
            b" 213 x",
            b"21x",
            b"\xff\xfe\xfd",
        ] {
            assert_eq!(reply_code(raw), None, "{raw:?}");
        }
    }

    // ---- reply_text ----------------------------------------------------------

    #[test]
    fn reply_text_single_line() {
        assert_eq!(
            reply_text(b"550 Could not get file size.\r\n"),
            "550 Could not get file size."
        );
    }

    #[test]
    fn reply_text_joins_multi_line_replies() {
        assert_eq!(
            reply_text(VSFTPD_FEAT),
            "211-Features: / EPRT / EPSV / MDTM / PASV / REST STREAM / SIZE / TVFS / End"
        );
        assert_eq!(
            reply_text(b"150-Accepted data connection\r\n150 9764.7 kbytes to download\r\n"),
            "150-Accepted data connection / 9764.7 kbytes to download"
        );
    }

    #[test]
    fn reply_text_keeps_prefixes_of_other_codes_on_later_lines() {
        assert_eq!(reply_text(b"230-Hi\r\n150 x\r\n230\r\n"), "230-Hi / 150 x");
    }

    #[test]
    fn reply_text_removes_control_characters() {
        assert_eq!(
            reply_text(b"550 a\x00b\x1b[31mc\td\x7f\r\n"),
            "550 ab[31mc d"
        );
        assert_eq!(reply_text(b"550 \xc2\x85x"), "550 x");
    }

    #[test]
    fn reply_text_replaces_invalid_utf8() {
        assert_eq!(reply_text(b"550 caf\xe9\r\n"), "550 caf\u{fffd}");
    }

    #[test]
    fn reply_text_of_empty_or_blank_reply_is_empty() {
        assert_eq!(reply_text(b""), "");
        assert_eq!(reply_text(b"\r\n \r\n"), "");
    }

    #[test]
    fn reply_text_is_cut_with_an_ellipsis() {
        let long = format!("550 {}", "x".repeat(1000));
        let text = reply_text(long.as_bytes());
        assert_eq!(text.chars().count(), MAX_REPLY_TEXT);
        assert!(text.ends_with('…'));
        assert!(text.starts_with("550 xxx"));
        let exact = format!("550 {}", "y".repeat(MAX_REPLY_TEXT - 4));
        assert_eq!(reply_text(exact.as_bytes()), exact);
    }

    // ---- parse_size ----------------------------------------------------------

    #[test]
    fn size_plain() {
        assert_eq!(parse_size(b"213 1073741824\r\n"), Ok(1_073_741_824));
        assert_eq!(parse_size(b"213 0\r\n"), Ok(0));
        assert_eq!(parse_size(b"213 1234"), Ok(1234));
        assert_eq!(parse_size(b"213 1234  \r\n"), Ok(1234));
        assert_eq!(parse_size(b"213 000042\r\n"), Ok(42));
    }

    #[test]
    fn size_with_rubbish_before_the_number() {
        assert_eq!(parse_size(b"213 File size: 1234\r\n"), Ok(1234));
        assert_eq!(parse_size(b"213 size=+77\r\n"), Ok(77));
    }

    #[test]
    fn size_limit_is_inclusive() {
        let at_limit = format!("213 {MAX_SIZE}\r\n");
        assert_eq!(parse_size(at_limit.as_bytes()), Ok(MAX_SIZE));
    }

    #[test]
    fn size_negative() {
        let err = parse_size(b"213 -5\r\n").unwrap_err();
        assert_eq!(
            err,
            ReplyError::SizeNegative {
                text: "213 -5".to_owned()
            }
        );
        assert_eq!(
            text_of(err),
            "negative file size in the reply to SIZE: 213 -5"
        );
    }

    #[test]
    fn size_overflow() {
        let err = parse_size(b"213 99999999999999999999999\r\n").unwrap_err();
        assert!(matches!(err, ReplyError::SizeOverflow { .. }), "{err:?}");
        assert!(text_of(err).contains("99999999999999999999999"));
    }

    #[test]
    fn size_too_large() {
        let raw = format!("213 {}\r\n", MAX_SIZE + 1);
        let err = parse_size(raw.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ReplyError::SizeTooLarge { size, .. } if size == MAX_SIZE + 1),
            "{err:?}"
        );
        assert_eq!(
            parse_size(b"213 18446744073709551615"),
            Err(ReplyError::SizeTooLarge {
                size: u64::MAX,
                text: "213 18446744073709551615".to_owned()
            })
        );
    }

    #[test]
    fn size_missing() {
        for raw in [
            &b"213 \r\n"[..],
            b"213",
            b"213 unknown\r\n",
            b"213 12 bytes\r\n",
        ] {
            let err = parse_size(raw).unwrap_err();
            assert!(
                matches!(err, ReplyError::SizeMissing { .. }),
                "{raw:?}: {err:?}"
            );
        }
        assert_eq!(
            text_of(parse_size(b"213 ").unwrap_err()),
            "no file size in the reply to SIZE: 213"
        );
    }

    #[test]
    fn size_refuses_other_replies() {
        let err = parse_size(b"550 Could not get file size.\r\n").unwrap_err();
        assert_eq!(
            err,
            ReplyError::UnexpectedReply {
                command: "SIZE",
                expected: 213,
                text: "550 Could not get file size.".to_owned()
            }
        );
        assert_eq!(
            text_of(err),
            "unexpected reply to SIZE (wanted 213): 550 Could not get file size."
        );
        assert_eq!(
            text_of(parse_size(b"").unwrap_err()),
            "unexpected reply to SIZE (wanted 213): (empty reply)"
        );
    }

    // ---- parse_mdtm ----------------------------------------------------------

    fn mdtm(raw: &[u8]) -> Result<String, ReplyError> {
        parse_mdtm(raw).map(|Mdtm(time)| time)
    }

    #[test]
    fn mdtm_plain() {
        assert_eq!(mdtm(b"213 20261121150102\r\n").unwrap(), "20261121150102");
        assert_eq!(mdtm(b"213 20261121150102"), Ok("20261121150102".to_owned()));
    }

    #[test]
    fn mdtm_keeps_the_fraction() {
        assert_eq!(
            mdtm(b"213 20251012230103.073\r\n").unwrap(),
            "20251012230103.073"
        );
        assert_eq!(
            mdtm(b"213 20251012230103.5\r\n").unwrap(),
            "20251012230103.5"
        );
    }

    #[test]
    fn mdtm_ignores_text_after_the_time() {
        assert_eq!(
            mdtm(b"213 20261121150102 UTC\r\n").unwrap(),
            "20261121150102"
        );
        assert_eq!(mdtm(b"213  20261121150102\r\n").unwrap(), "20261121150102");
    }

    #[test]
    fn mdtm_y2k_bug_years() {
        // "19" + (2000 - 1900) + "0101000000": 2000-01-01 00:00:00.
        assert_eq!(mdtm(b"213 191000101000000\r\n").unwrap(), "20000101000000");
        assert_eq!(
            mdtm(b"213 191250630120000.25\r\n").unwrap(),
            "20250630120000.25"
        );
        // Exactly 14 digits is a normal time, even in 1910.
        assert_eq!(mdtm(b"213 19100101000000\r\n").unwrap(), "19100101000000");
        // 15 digits without the "191" mark is not a time.
        assert!(matches!(
            mdtm(b"213 200000101000000\r\n"),
            Err(ReplyError::MdtmMalformed { .. })
        ));
    }

    #[test]
    fn mdtm_accepts_field_limits() {
        assert_eq!(mdtm(b"213 20241231235960").unwrap(), "20241231235960");
        assert_eq!(mdtm(b"213 00000101000000").unwrap(), "00000101000000");
    }

    #[test]
    fn mdtm_refuses_out_of_range_fields() {
        for (raw, field, value) in [
            (&b"213 20241301000000"[..], "month", 13),
            (b"213 20240001000000", "month", 0),
            (b"213 20240100000000", "day", 0),
            (b"213 20240132000000", "day", 32),
            (b"213 20240101240000", "hour", 24),
            (b"213 20240101006000", "minute", 60),
            (b"213 20240101000061", "second", 61),
            (b"213 191001301000000", "month", 13),
        ] {
            let err = parse_mdtm(raw).unwrap_err();
            assert!(
                matches!(&err, ReplyError::MdtmOutOfRange { field: f, value: v, .. } if *f == field && *v == value),
                "{raw:?}: {err:?}"
            );
        }
        assert_eq!(
            text_of(parse_mdtm(b"213 20241301000000").unwrap_err()),
            "month 13 is out of range in the reply to MDTM: 213 20241301000000"
        );
    }

    #[test]
    fn mdtm_refuses_malformed_times() {
        for raw in [
            &b"213 "[..],
            b"213",
            b"213 2026112115010",
            b"213 202611211501020",
            b"213 20261121150102.",
            b"213 20261121150102.x",
            b"213 20261121150102.1.2",
            b"213 2026-11-21 15:01:02",
            b"213 +2026112115010",
            b"213 -20261121150102",
            b"213 \xff",
        ] {
            let err = parse_mdtm(raw).unwrap_err();
            assert!(
                matches!(err, ReplyError::MdtmMalformed { .. }),
                "{raw:?}: {err:?}"
            );
        }
        assert_eq!(
            text_of(parse_mdtm(b"213 soon\r\n").unwrap_err()),
            "reply to MDTM is not a YYYYMMDDhhmmss[.fff] timestamp: 213 soon"
        );
    }

    #[test]
    fn mdtm_refuses_other_replies() {
        let err = parse_mdtm(b"550 No such file.\r\n").unwrap_err();
        assert_eq!(
            text_of(err),
            "unexpected reply to MDTM (wanted 213): 550 No such file."
        );
    }

    // ---- parse_transfer_size -------------------------------------------------

    #[test]
    fn transfer_size_from_vsftpd_and_proftpd() {
        assert_eq!(
            parse_transfer_size(
                b"150 Opening BINARY mode data connection for big.bin (10000019 bytes).\r\n"
            ),
            Some(10_000_019)
        );
        assert_eq!(
            parse_transfer_size(
                b"150 Opening BINARY mode data connection for big.bin (9999019 bytes)\r\n"
            ),
            Some(9_999_019)
        );
        assert_eq!(
            parse_transfer_size(b"150 Opening BINARY mode data connection for f (2241 bytes)."),
            Some(2241)
        );
    }

    #[test]
    fn transfer_size_takes_the_last_byte_count() {
        assert_eq!(
            parse_transfer_size(b"150 Opening data connection (0.0.0.0,0) (545 bytes)."),
            Some(545)
        );
        assert_eq!(
            parse_transfer_size(b"150 Opening for f (1 bytes).iso (545 bytes)."),
            Some(545)
        );
    }

    #[test]
    fn transfer_size_is_case_insensitive_and_allows_spaces() {
        assert_eq!(parse_transfer_size(b"125 x (7 BYTES)"), Some(7));
        assert_eq!(parse_transfer_size(b"150 x ( 7  Bytes )"), Some(7));
    }

    #[test]
    fn transfer_size_absent() {
        for raw in [
            &b"150-Accepted data connection\r\n150 9764.7 kbytes to download\r\n"[..],
            b"125 Data connection already open. Transfer starting.\r\n",
            b"150 Opening BINARY mode data connection for f.\r\n",
            b"150 x (2241bytes)",
            b"150 x (2241 bytes",
            b"150 x (2241 kbytes)",
            b"150 x (-1 bytes)",
            b"150 x (99999999999999999999999 bytes)",
            b"150 x (",
            b"226 Transfer complete (2241 bytes)",
            b"",
        ] {
            assert_eq!(parse_transfer_size(raw), None, "{raw:?}");
        }
        let above = format!("150 x ({} bytes)", MAX_SIZE + 1);
        assert_eq!(parse_transfer_size(above.as_bytes()), None);
    }

    // ---- parse_features ------------------------------------------------------

    #[test]
    fn features_vsftpd() {
        let f = parse_features(VSFTPD_FEAT);
        assert_eq!(
            f,
            Features {
                rest_stream: true,
                size: true,
                mdtm: true,
                epsv: true,
                pasv: true,
                raw: [
                    "EPRT",
                    "EPSV",
                    "MDTM",
                    "PASV",
                    "REST STREAM",
                    "SIZE",
                    "TVFS"
                ]
                .map(String::from)
                .to_vec(),
                ..Features::default()
            }
        );
    }

    #[test]
    fn features_proftpd() {
        let f = parse_features(PROFTPD_FEAT);
        assert!(f.rest_stream && f.size && f.mdtm && f.epsv && f.rang_stream && f.mlst && f.utf8);
        assert!(!f.pasv && !f.mlsd && !f.auth_tls);
        assert_eq!(f.hash, None);
        assert_eq!(f.raw.len(), 15);
        assert_eq!(f.raw[5], "LANG C.UTF-8*");
    }

    #[test]
    fn features_pure_ftpd() {
        let f = parse_features(PURE_FTPD_FEAT);
        assert!(f.rest_stream && f.size && f.mdtm && f.epsv && f.pasv);
        assert!(f.mlsd && f.mlst && f.utf8 && f.auth_tls);
        assert!(!f.rang_stream);
        assert_eq!(f.raw.len(), 18);
    }

    #[test]
    fn features_pyftpdlib() {
        let f = parse_features(PYFTPDLIB_FEAT);
        assert!(f.rest_stream && f.size && f.mdtm && f.epsv && f.mlst && f.utf8);
        assert!(!f.pasv && !f.mlsd && !f.rang_stream && !f.auth_tls);
        assert_eq!(f.raw.len(), 9);
    }

    #[test]
    fn features_libunftp() {
        let f = parse_features(LIBUNFTP_FEAT);
        assert!(f.rest_stream && f.size && f.mdtm && f.epsv && f.mlsd && f.mlst && f.utf8);
        assert!(!f.pasv && !f.rang_stream && !f.auth_tls);
        assert_eq!(f.raw.len(), 8);
        assert!(f.raw.contains(&"SITE MD5".to_owned()));
    }

    #[test]
    fn features_are_case_insensitive_and_need_no_leading_space() {
        let f = parse_features(
            b"211-Features\r\nsize\r\n  Rest stream\r\nrang Stream\r\nauth tls;ssl\r\n211 End\r\n",
        );
        assert!(f.size && f.rest_stream && f.rang_stream && f.auth_tls);
        assert_eq!(
            f.raw,
            ["size", "Rest stream", "rang Stream", "auth tls;ssl"]
        );
    }

    #[test]
    fn features_bare_rest_counts_as_rest_stream() {
        assert!(parse_features(b"211-x\r\n REST\r\n211 End\r\n").rest_stream);
    }

    #[test]
    fn features_other_rang_and_auth_arguments() {
        let f = parse_features(b"211-x\r\n RANG\r\n AUTH SSL\r\n AUTH TLS-C\r\n211 End\r\n");
        assert!(!f.rang_stream && !f.auth_tls);
    }

    #[test]
    fn features_hash() {
        let f = parse_features(b"211-x\r\n HASH SHA-256*;SHA-1;MD5\r\n HASH other\r\n211 End\r\n");
        assert_eq!(f.hash.as_deref(), Some("SHA-256*;SHA-1;MD5"));
        let bare = parse_features(b"211-x\r\n HASH\r\n211 End\r\n");
        assert_eq!(bare.hash.as_deref(), Some(""));
    }

    #[test]
    fn features_of_refused_or_empty_feat() {
        assert_eq!(
            parse_features(b"500 FEAT not understood.\r\n"),
            Features::default()
        );
        assert_eq!(
            parse_features(b"502-Nope\r\n SIZE\r\n502 End\r\n"),
            Features::default()
        );
        assert_eq!(parse_features(b"211 No features\r\n"), Features::default());
        assert_eq!(parse_features(b""), Features::default());
        assert_eq!(parse_features(b" SIZE\r\n"), Features::default());
    }

    #[test]
    fn features_raw_is_capped() {
        let mut raw = b"211-Features:\r\n".to_vec();
        for i in 0..100 {
            raw.extend_from_slice(format!(" X{i} {}\r\n", "y".repeat(300)).as_bytes());
        }
        raw.extend_from_slice(b" SIZE\r\n211 End\r\n");
        let f = parse_features(&raw);
        assert_eq!(f.raw.len(), MAX_FEATURE_LINES);
        assert!(
            f.raw
                .iter()
                .all(|line| line.chars().count() == MAX_FEATURE_CHARS)
        );
        assert!(f.size, "lines past the cap are still read");
    }

    // ---- property tests ------------------------------------------------------

    /// Any bytes, or a plausible reply: a code, a separator, then any bytes.
    fn arb_reply() -> impl Strategy<Value = Vec<u8>> {
        let code = prop_oneof![
            Just(b"213".to_vec()),
            Just(b"150".to_vec()),
            Just(b"211".to_vec())
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            (
                code,
                prop_oneof![Just(b' '), Just(b'-')],
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(mut raw, sep, rest)| {
                    raw.push(sep);
                    raw.extend(rest);
                    raw
                }),
        ]
    }

    /// Rubbish that may sit between "213 " and the size.
    fn arb_size_prefix() -> impl Strategy<Value = String> {
        "([ -~]{0,20}[^0-9\\-\r\n])?"
    }

    prop_compose! {
        fn arb_time()(
            year in 0u32..=9999,
            month in 1u32..=12,
            day in 1u32..=31,
            hour in 0u32..=23,
            minute in 0u32..=59,
            second in 0u32..=60,
            fraction in proptest::option::of("[0-9]{1,9}"),
        ) -> (u32, String, Option<String>) {
            let rest = format!("{month:02}{day:02}{hour:02}{minute:02}{second:02}");
            (year, rest, fraction)
        }
    }

    const FEATURE_LINES: [&str; 11] = [
        "REST STREAM",
        "SIZE",
        "MDTM",
        "EPSV",
        "PASV",
        "RANG STREAM",
        "MLSD",
        "MLST type*;size*;modify*;",
        "UTF8",
        "AUTH TLS",
        "HASH SHA-256*;MD5",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parsers_never_panic(raw in arb_reply()) {
            let _ = reply_code(&raw);
            let _ = reply_text(&raw);
            let _ = parse_size(&raw);
            let _ = parse_mdtm(&raw);
            let _ = parse_transfer_size(&raw);
            let _ = parse_features(&raw);
        }

        #[test]
        fn parsers_never_panic_on_near_misses(body in "[0-9 .()a-zA-Z:+\\-]{0,40}") {
            for code in ["213 ", "150 ", "211-", "213-"] {
                let raw = format!("{code}{body}\r\n");
                let _ = parse_size(raw.as_bytes());
                let _ = parse_mdtm(raw.as_bytes());
                let _ = parse_transfer_size(raw.as_bytes());
                let _ = parse_features(raw.as_bytes());
            }
        }

        #[test]
        fn reply_text_is_one_short_clean_line(raw in arb_reply()) {
            let text = reply_text(&raw);
            prop_assert!(text.chars().count() <= MAX_REPLY_TEXT);
            prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
            prop_assert_eq!(text.trim(), text.as_str());
        }

        #[test]
        fn reply_text_keeps_short_printable_lines(line in "[!-~][ -~]{0,200}[!-~]") {
            prop_assert_eq!(reply_text(format!("{line}\r\n").as_bytes()), line);
        }

        #[test]
        fn errors_are_one_line(raw in arb_reply()) {
            for err in [parse_size(&raw).err(), parse_mdtm(&raw).err()].into_iter().flatten() {
                let message = err.to_string();
                prop_assert!(!message.contains(['\r', '\n']), "{:?}", message);
                prop_assert!(message.chars().count() <= MAX_REPLY_TEXT + 120);
            }
        }

        #[test]
        fn reply_code_round_trips(code in 100u16..=599, sep in "[ \\-]?", rest in "[^0-9][ -~]{0,20}|") {
            let raw = format!("{code}{sep}{rest}");
            prop_assert_eq!(reply_code(raw.as_bytes()), Some(code));
        }

        #[test]
        fn size_round_trips(size in 0..=MAX_SIZE, prefix in arb_size_prefix()) {
            let raw = format!("213 {prefix}{size}\r\n");
            prop_assert_eq!(parse_size(raw.as_bytes()), Ok(size));
        }

        #[test]
        fn size_above_the_limit_is_refused(size in (MAX_SIZE + 1)..=u64::MAX) {
            let raw = format!("213 {size}\r\n");
            let is_too_large = matches!(
                parse_size(raw.as_bytes()),
                Err(ReplyError::SizeTooLarge { size: s, .. }) if s == size
            );
            prop_assert!(is_too_large);
        }

        #[test]
        fn size_with_minus_is_refused(size in any::<u64>(), prefix in arb_size_prefix()) {
            let raw = format!("213 {prefix}-{size}\r\n");
            let is_negative = matches!(parse_size(raw.as_bytes()), Err(ReplyError::SizeNegative { .. }));
            prop_assert!(is_negative);
        }

        #[test]
        fn size_ok_is_within_limit(raw in arb_reply()) {
            if let Ok(size) = parse_size(&raw) {
                prop_assert!(size <= MAX_SIZE);
            }
        }

        #[test]
        fn mdtm_round_trips((year, rest, fraction) in arb_time()) {
            let mut time = format!("{year:04}{rest}");
            if let Some(fraction) = &fraction {
                time.push('.');
                time.push_str(fraction);
            }
            let raw = format!("213 {time}\r\n");
            prop_assert_eq!(parse_mdtm(raw.as_bytes()), Ok(Mdtm(time)));
        }

        #[test]
        fn mdtm_y2k_form_maps_to_2000s((year, rest, fraction) in arb_time()) {
            let years_after_2000 = year % 100;
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let raw = format!("213 191{years_after_2000:02}{rest}{fraction}\r\n");
            let expected = format!("{:04}{rest}{fraction}", 2000 + years_after_2000);
            prop_assert_eq!(parse_mdtm(raw.as_bytes()), Ok(Mdtm(expected)));
        }

        #[test]
        fn mdtm_ok_is_canonical(raw in arb_reply()) {
            if let Ok(Mdtm(time)) = parse_mdtm(&raw) {
                let (whole, fraction) = match time.split_once('.') {
                    Some((whole, fraction)) => (whole, Some(fraction)),
                    None => (time.as_str(), None),
                };
                prop_assert_eq!(whole.len(), 14);
                prop_assert!(whole.bytes().all(|b| b.is_ascii_digit()));
                if let Some(fraction) = fraction {
                    prop_assert!(!fraction.is_empty());
                    prop_assert!(fraction.bytes().all(|b| b.is_ascii_digit()));
                }
            }
        }

        #[test]
        fn mdtm_bad_month_is_refused(month in prop_oneof![Just(0u32), 13u32..=99]) {
            let raw = format!("213 2024{month:02}01000000\r\n");
            let refused = matches!(
                parse_mdtm(raw.as_bytes()),
                Err(ReplyError::MdtmOutOfRange { field: "month", .. })
            );
            prop_assert!(refused);
        }

        #[test]
        fn transfer_size_round_trips(
            size in 0..=MAX_SIZE,
            code in prop_oneof![Just(150u16), Just(125u16)],
            name in "[a-zA-Z0-9 ._()\\-]{0,20}",
            bytes in "bytes|BYTES|Bytes",
        ) {
            let raw = format!("{code} Opening BINARY mode data connection for {name} ({size} {bytes}).\r\n");
            prop_assert_eq!(parse_transfer_size(raw.as_bytes()), Some(size));
        }

        #[test]
        fn features_round_trip(
            chosen in proptest::collection::vec(any::<bool>(), FEATURE_LINES.len()),
            lower in any::<bool>(),
            indent in "[ \t]{0,2}",
        ) {
            let mut raw = b"211-Features:\r\n".to_vec();
            let mut lines = Vec::new();
            for (line, wanted) in FEATURE_LINES.iter().zip(&chosen) {
                if *wanted {
                    let line = if lower { line.to_lowercase() } else { (*line).to_owned() };
                    raw.extend_from_slice(format!("{indent}{line}\r\n").as_bytes());
                    lines.push(line);
                }
            }
            raw.extend_from_slice(b"211 End\r\n");
            let f = parse_features(&raw);
            let flags = [
                f.rest_stream, f.size, f.mdtm, f.epsv, f.pasv, f.rang_stream,
                f.mlsd, f.mlst, f.utf8, f.auth_tls, f.hash.is_some(),
            ];
            prop_assert_eq!(flags.to_vec(), chosen);
            prop_assert_eq!(f.raw, lines);
        }

        #[test]
        fn features_raw_is_bounded_and_clean(raw in arb_reply()) {
            let f = parse_features(&raw);
            prop_assert!(f.raw.len() <= MAX_FEATURE_LINES);
            for line in &f.raw {
                prop_assert!(!line.is_empty());
                prop_assert!(line.chars().count() <= MAX_FEATURE_CHARS);
                prop_assert!(!line.chars().any(char::is_control));
                prop_assert_eq!(line.trim(), line.as_str());
            }
            if let Some(hash) = &f.hash {
                prop_assert!(hash.chars().count() <= MAX_FEATURE_CHARS);
            }
        }
    }
}
