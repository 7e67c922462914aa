//! `.netrc` files: where a password for a host can come from without being typed or shown.
//!
//! The format (as curl, lftp and Python's `netrc` read it): whitespace-separated tokens;
//! `machine NAME` starts an entry, `default` starts the fallback entry, then `login NAME`,
//! `password WORD` and `account WORD` in any order. Tokens may be double-quoted with backslash
//! escapes. `macdef NAME` is followed by a macro body that runs to the next blank line, and is
//! skipped. `#` starts a comment at the beginning of a token. Pure: text in, entries out.

/// One `machine` (or `default`) entry.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// `None` for the `default` entry.
    pub machine: Option<String>,
    pub login: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("machine", &self.machine)
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// A parse error, with the 1-based line where it happened. Never contains a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

/// Parses the text of a `.netrc` file.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let tokens = tokenize(text)?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (line, ref tok) = tokens[i];
        let value = |i: usize| -> Result<String, ParseError> {
            tokens
                .get(i + 1)
                .map(|(_, t)| t.text.clone())
                .ok_or_else(|| ParseError {
                    line,
                    what: format!("'{}' needs a value", tok.text),
                })
        };
        match tok.text.as_str() {
            "machine" => {
                entries.push(Entry {
                    machine: Some(value(i)?),
                    login: None,
                    password: None,
                });
                i += 2;
            }
            "default" => {
                entries.push(Entry {
                    machine: None,
                    login: None,
                    password: None,
                });
                i += 1;
            }
            "login" | "password" | "account" => {
                let v = value(i)?;
                let Some(e) = entries.last_mut() else {
                    return Err(ParseError {
                        line,
                        what: format!("'{}' before any 'machine' or 'default'", tok.text),
                    });
                };
                match tok.text.as_str() {
                    "login" => e.login = Some(v),
                    "password" => e.password = Some(v),
                    _ => {}
                }
                i += 2;
            }
            "macdef" => {
                // The macro body was dropped by the tokenizer; skip the name.
                i += 2;
            }
            _ => {
                // The word is not quoted back: it may be half of an unquoted password.
                return Err(ParseError {
                    line,
                    what: "unexpected word (expected machine, default, login, password, \
                           account or macdef; quote passwords that contain spaces)"
                        .into(),
                });
            }
        }
    }
    Ok(entries)
}

/// The entry for `host` (and `user`, when given): the first `machine` entry with that name
/// (case-insensitive) whose login matches, else the `default` entry.
pub fn lookup<'a>(entries: &'a [Entry], host: &str, user: Option<&str>) -> Option<&'a Entry> {
    let fits = |e: &&Entry| match (user, &e.login) {
        (Some(u), Some(l)) => u == l,
        _ => true,
    };
    entries
        .iter()
        .filter(|e| {
            e.machine
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(host))
        })
        .find(fits)
        .or_else(|| entries.iter().filter(|e| e.machine.is_none()).find(fits))
}

struct Token {
    text: String,
}

/// Splits into tokens with their line numbers; drops comments and `macdef` bodies.
fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let line_no = n + 1;
        let mut chars = line.chars().peekable();
        let mut in_macdef = false;
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&c) = chars.peek() else { break };
            if c == '#' {
                break;
            }
            let mut tok = String::new();
            if c == '"' {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(e) = chars.next() {
                                tok.push(e);
                            }
                        }
                        c => tok.push(c),
                    }
                }
                if !closed {
                    return Err(ParseError {
                        line: line_no,
                        what: "a quoted word is not closed".into(),
                    });
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    tok.push(c);
                    chars.next();
                }
            }
            if tok == "macdef" {
                in_macdef = true;
            }
            out.push((line_no, Token { text: tok }));
        }
        if in_macdef {
            // The macro body: every following line up to a blank one.
            while let Some((_, l)) = lines.peek() {
                if l.trim().is_empty() {
                    break;
                }
                lines.next();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
# mirrors
machine ftp.example.org login alice password \"p w#d\\\"x\"
machine other.example login bob
  password s3cret
macdef init
cd /pub
bin

default login anonymous password guest@
";

    #[test]
    fn parses_entries_quotes_macdef_and_default() {
        let e = parse(SAMPLE).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].password.as_deref(), Some("p w#d\"x"));
        assert_eq!(e[1].login.as_deref(), Some("bob"));
        assert_eq!(e[1].password.as_deref(), Some("s3cret"));
        assert_eq!(e[2].machine, None);
    }

    #[test]
    fn lookup_by_host_then_user_then_default() {
        let e = parse(SAMPLE).unwrap();
        let hit = lookup(&e, "FTP.example.org", None).unwrap();
        assert_eq!(hit.login.as_deref(), Some("alice"));
        assert!(
            lookup(&e, "ftp.example.org", Some("carol")).is_none(),
            "no entry has carol's login"
        );
        let hit = lookup(&e, "unknown.example", None).unwrap();
        assert_eq!(
            hit.login.as_deref(),
            Some("anonymous"),
            "falls back to default"
        );
        assert!(lookup(&parse("machine a login b").unwrap(), "z", None).is_none());
    }

    #[test]
    fn errors_name_the_line_and_never_the_password() {
        let err = parse("machine h login u password").unwrap_err();
        assert_eq!(err.line, 1);
        let err = parse("machine h\nlogin u password \"unterminated").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(!err.to_string().contains("unterminated"));
        let err = parse("password p").unwrap_err();
        assert!(err.to_string().contains("before any"));
        let err = parse("machine h password my secret-half").unwrap_err();
        assert!(!err.to_string().contains("secret-half"), "{err}");
        let e = parse("machine h password topsecret").unwrap();
        assert!(!format!("{e:?}").contains("topsecret"));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,300}") {
            let _ = parse(&text);
        }
    }
}
