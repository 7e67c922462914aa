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

    /// `s` as a quoted netrc word: `"` and `\\` escaped with a backslash.
    fn quoted(s: &str) -> String {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }

    /// Whitespace between tokens: spaces, tabs, or a line break (then maybe a comment line).
    fn gap() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ \t]{1,3}",
            Just("\n".to_owned()),
            Just("\n# a comment line\n  ".to_owned()),
        ]
    }

    /// A value: any one-line text, rich in what quoting must protect (backslashes, quotes,
    /// spaces, `#`), except the word `macdef`, which the tokenizer takes as the start of a
    /// macro even when quoted.
    fn value() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("\\".to_owned()),
                Just("\"".to_owned()),
                Just(" ".to_owned()),
                Just("#".to_owned()),
                "[^\r\n]{1,4}",
            ],
            0..6,
        )
        .prop_map(|pieces| pieces.concat())
        .prop_filter("macdef", |v| v != "macdef")
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (
            proptest::option::of(value()),
            proptest::option::of(value()),
            proptest::option::of(value()),
        )
            .prop_map(|(machine, login, password)| Entry {
                machine,
                login,
                password,
            })
    }

    /// The netrc text of `entries`, each token followed by the gap at its index.
    fn render(entries: &[Entry], password_first: bool, gaps: &[String]) -> String {
        let mut tokens = Vec::new();
        for e in entries {
            match &e.machine {
                Some(m) => tokens.extend(["machine".to_owned(), quoted(m)]),
                None => tokens.push("default".to_owned()),
            }
            let login = e.login.as_ref().map(|l| ["login".to_owned(), quoted(l)]);
            let password = e
                .password
                .as_ref()
                .map(|p| ["password".to_owned(), quoted(p)]);
            let (a, b) = if password_first {
                (password, login)
            } else {
                (login, password)
            };
            tokens.extend(a.into_iter().flatten());
            tokens.extend(b.into_iter().flatten());
        }
        let mut text = String::new();
        for (i, t) in tokens.iter().enumerate() {
            text.push_str(t);
            text.push_str(&gaps[i % gaps.len()]);
        }
        text
    }

    /// A password that cannot be mistaken for any word of an error message.
    fn secret() -> impl Strategy<Value = String> {
        "pw[a-z0-9]{6,12}"
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,300}") {
            let _ = parse(&text);
        }

        #[test]
        fn generated_files_round_trip(
            entries in proptest::collection::vec(entry(), 0..6),
            password_first in any::<bool>(),
            gaps in proptest::collection::vec(gap(), 1..8),
        ) {
            let text = render(&entries, password_first, &gaps);
            prop_assert_eq!(parse(&text), Ok(entries), "{}", text);
        }

        #[test]
        fn errors_never_show_the_password(
            head in proptest::collection::vec(entry(), 0..3),
            a in secret(),
            b in secret(),
            how in 0..5u8,
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut text = render(&head, false, &[" ".to_owned()]);
            text.push_str("machine h login u password ");
            match how {
                // Unquoted with a space: the second half is an unexpected word.
                0 => text.push_str(&format!("{a} {b}")),
                // A quoted password that is never closed.
                1 => text.push_str(&format!("\"{a} {b}")),
                // A stray word after the password.
                2 => text.push_str(&format!("{a} {b}\nmachine h2")),
                // A well-formed file: its entries' Debug must hide the password.
                3 => text.push_str(&quoted(&format!("{a} {b}"))),
                // Any prefix of a well-formed file.
                _ => {
                    text.push_str(&quoted(&format!("{a} {b}")));
                    let ends: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
                    text.truncate(ends[cut.index(ends.len())]);
                }
            }
            match parse(&text) {
                Err(err) => {
                    let shown = err.to_string();
                    prop_assert!(!shown.contains(&a) && !shown.contains(&b), "{}", shown);
                }
                Ok(entries) => {
                    prop_assert!(how >= 3, "{:?}", entries);
                    let shown = format!("{entries:?}");
                    prop_assert!(!shown.contains(&a) && !shown.contains(&b), "{}", shown);
                }
            }
        }
    }
}
