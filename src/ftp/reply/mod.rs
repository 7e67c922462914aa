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
mod tests;
