//! The config file's text as settings: TOML in, [`ConfigFile`] out, each setting with its line.
//! Pure: no file system, no clap (which keys exist and what values they take is
//! [`mod@super::check`]'s job). What the file may hold at all is decided here: top-level keys,
//! the `[put]` and `[bench]` tables, `[hosts."NAME"]` tables, and never a password.

use std::borrow::Cow;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A config file, read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigFile {
    /// The top-level settings: the options of `ftpseg URL` (and the shared ones of `put` and
    /// `bench`).
    pub top: Vec<Setting>,
    /// `[put]`.
    pub put: Vec<Setting>,
    /// `[bench]`.
    pub bench: Vec<Setting>,
    /// `[hosts."NAME"]`, in the file's order.
    pub hosts: Vec<HostTable>,
}

/// `[hosts."NAME"]`: settings for the servers of one host name.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTable {
    /// Lower case, as URLs are compared.
    pub host: String,
    pub line: usize,
    pub settings: Vec<Setting>,
}

/// One `key = value` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The option's long name without `--`: `limit-rate`.
    pub key: String,
    pub value: Value,
    /// 1-based line of the key.
    pub line: usize,
}

/// A setting's value, as TOML typed it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    /// An integer or a float, as written (`16`, `0.5`).
    Number(String),
    Text(String),
    /// An array of numbers or strings (`connections = [1, 2, 4]` under `[bench]`).
    List(Vec<String>),
}

impl Value {
    /// The value as it would be typed after the flag (`true` for a set switch).
    pub fn as_arg(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Number(n) | Value::Text(n) => n.clone(),
            Value::List(items) => items.join(","),
        }
    }

    /// The value as TOML writes it, for `config show`.
    pub fn as_toml(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.clone(),
            Value::Text(t) => quoted(t),
            Value::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| quoted(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A string in TOML's basic form.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What is wrong with the file: the line and the message (the caller adds the file's name).
#[derive(Clone, Debug, PartialEq)]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

/// Keys that would hold a secret: refused wherever they appear.
const SECRET_KEYS: &[&str] = &["password", "pass", "passwd", "user", "username", "login"];

/// Reads the file's text.
pub fn parse(text: &str) -> Result<ConfigFile, FileError> {
    let lines = LineIndex::new(text);
    let root = DeTable::parse(text).map_err(|e| FileError {
        line: e.span().map_or(1, |s| lines.line(s.start)),
        message: format!("not valid TOML: {}", e.message().trim_end()),
    })?;
    let mut file = ConfigFile::default();
    for (key, value) in sorted(root.get_ref()) {
        let line = lines.line(key.span().start);
        let name = key.get_ref().as_ref();
        match (name, value.get_ref()) {
            ("put", DeValue::Table(t)) => file.put = settings(t, &lines, "[put]")?,
            ("bench", DeValue::Table(t)) => file.bench = settings(t, &lines, "[bench]")?,
            ("hosts", DeValue::Table(t)) => file.hosts = hosts(t, &lines)?,
            ("put" | "bench" | "hosts", _) => {
                return Err(FileError {
                    line,
                    message: format!("`{name}` must be a table ([{name}])"),
                });
            }
            (_, DeValue::Table(_)) => {
                return Err(FileError {
                    line,
                    message: format!(
                        "unknown table [{name}]: the tables are [put], [bench] and \
                         [hosts.\"NAME\"]; other settings go at the top"
                    ),
                });
            }
            _ => file.top.push(setting(name, value, line, "the top")?),
        }
    }
    Ok(file)
}

/// `[hosts."NAME"]` tables.
fn hosts(table: &DeTable, lines: &LineIndex) -> Result<Vec<HostTable>, FileError> {
    let mut out = Vec::new();
    for (key, value) in sorted(table) {
        let line = lines.line(key.span().start);
        let host = key.get_ref().to_ascii_lowercase();
        let DeValue::Table(t) = value.get_ref() else {
            return Err(FileError {
                line,
                message: format!(
                    "hosts.{host} must be a table: write [hosts.\"{host}\"] and its settings \
                     below it"
                ),
            });
        };
        if !is_host_name(&host) {
            return Err(FileError {
                line,
                message: format!(
                    "[hosts.\"{host}\"]: name a host as in the URL (mirror.example.org, \
                     127.0.0.1, [::1]), without scheme, user, port or path"
                ),
            });
        }
        let place = format!("[hosts.\"{host}\"]");
        out.push(HostTable {
            settings: settings(t, lines, &place)?,
            host,
            line,
        });
    }
    Ok(out)
}

/// A host as a URL names it: a name or IPv4 address, or an IPv6 address (in brackets or not);
/// no scheme, user, port or path.
fn is_host_name(host: &str) -> bool {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if inner.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    !host.is_empty() && !host.contains(['/', ':', '@', '[', ']', ' '])
}

/// The settings of one table (no tables inside).
fn settings(table: &DeTable, lines: &LineIndex, place: &str) -> Result<Vec<Setting>, FileError> {
    let mut out = Vec::new();
    for (key, value) in sorted(table) {
        let line = lines.line(key.span().start);
        out.push(setting(key.get_ref(), value, line, place)?);
    }
    Ok(out)
}

/// One `key = value`: a boolean, number, string or array of those; never a secret.
fn setting(
    key: &str,
    value: &Spanned<DeValue>,
    line: usize,
    place: &str,
) -> Result<Setting, FileError> {
    let err = |message: String| Err(FileError { line, message });
    if SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
        return err(format!(
            "`{key}`: credentials do not go in the config file; put them in a netrc file \
             (~/.netrc, or netrc-file = \"PATH\", mode 600) or set FTPSEG_PASSWORD"
        ));
    }
    let value = match value.get_ref() {
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Integer(i) => Value::Number(integer(key, i, line)?),
        DeValue::Float(f) => Value::Number(f.as_str().replace('_', "")),
        DeValue::String(s) => Value::Text(s.to_string()),
        DeValue::Array(items) => {
            let mut list = Vec::new();
            for item in items {
                match item.get_ref() {
                    DeValue::Integer(i) => list.push(integer(key, i, line)?),
                    DeValue::Float(f) => list.push(f.as_str().replace('_', "")),
                    DeValue::String(s) => list.push(s.to_string()),
                    _ => return err(format!("`{key}`: a list holds numbers or strings only")),
                }
            }
            Value::List(list)
        }
        DeValue::Datetime(_) => {
            return err(format!(
                "`{key}`: a date is no setting's value; write durations as text, \"30m\""
            ));
        }
        DeValue::Table(_) => {
            return err(format!(
                "`{key}` in {place} is a table; tables do not nest there"
            ));
        }
    };
    Ok(Setting {
        key: key.to_owned(),
        value,
        line,
    })
}

/// A TOML integer (any radix, underscores allowed) as decimal text.
fn integer(key: &str, i: &toml::de::DeInteger, line: usize) -> Result<String, FileError> {
    let clean: String = i.as_str().chars().filter(|&c| c != '_').collect();
    let (negative, body) = match clean.strip_prefix(['+', '-']) {
        Some(rest) => (clean.starts_with('-'), rest),
        None => (false, clean.as_str()),
    };
    match i64::from_str_radix(body, i.radix()) {
        Ok(v) if negative => Ok(format!("-{v}")),
        Ok(v) => Ok(v.to_string()),
        Err(_) => Err(FileError {
            line,
            message: format!("`{key}`: the number {i} is out of range"),
        }),
    }
}

/// A table's entries in the order of the file.
fn sorted<'a, 'i>(
    table: &'a DeTable<'i>,
) -> Vec<(&'a Spanned<Cow<'i, str>>, &'a Spanned<DeValue<'i>>)> {
    let mut v: Vec<_> = table.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

/// Byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_tables_and_hosts_with_their_lines() {
        let text = "# mine\nconnections = 16\nlimit-rate = \"20M\"\nftps = true\n\n[put]\n\
                    connections = 2\n\n[bench]\nconnections = [1, 4, 0x10]\n\n\
                    [hosts.\"Mirror.Example\"]\nconnections = 4\nstall-timeout = 2.5\n";
        let f = parse(text).unwrap();
        let keys: Vec<(&str, usize)> = f.top.iter().map(|s| (s.key.as_str(), s.line)).collect();
        assert_eq!(keys, [("connections", 2), ("limit-rate", 3), ("ftps", 4)]);
        assert_eq!(f.top[0].value, Value::Number("16".into()));
        assert_eq!(f.top[1].value, Value::Text("20M".into()));
        assert_eq!(f.top[2].value, Value::Bool(true));
        assert_eq!(f.put[0].line, 7);
        assert_eq!(
            f.bench[0].value,
            Value::List(vec!["1".into(), "4".into(), "16".into()])
        );
        assert_eq!(f.bench[0].value.as_arg(), "1,4,16");
        assert_eq!(f.hosts[0].host, "mirror.example");
        assert_eq!(f.hosts[0].line, 12);
        assert_eq!(f.hosts[0].settings[1].value, Value::Number("2.5".into()));
        assert_eq!(f.hosts[0].settings[1].line, 14);
    }

    #[test]
    fn ipv6_hosts_with_or_without_brackets() {
        for h in [
            "[::1]",
            "::1",
            "[2001:db8::7]",
            "mirror.example.org",
            "127.0.0.1",
        ] {
            assert!(is_host_name(h), "{h}");
        }
        for h in ["", "[::1", "a b", "h:21", "[h]"] {
            assert!(!is_host_name(h), "{h}");
        }
    }

    #[test]
    fn empty_file_has_no_settings() {
        assert_eq!(parse("").unwrap(), ConfigFile::default());
        assert_eq!(parse("\n# nothing\n").unwrap(), ConfigFile::default());
    }

    #[test]
    fn broken_toml_names_its_line() {
        let e = parse("connections = 4\nlimit-rate = \n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        assert!(e.message.starts_with("not valid TOML"), "{e:?}");
        let e = parse("a = 1\na = 2\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
    }

    #[test]
    fn passwords_are_refused_anywhere() {
        for text in [
            "password = \"x\"",
            "[put]\npassword = \"x\"",
            "[hosts.\"h\"]\nuser = \"bob\"",
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains("netrc"), "{text}: {e:?}");
            assert!(e.message.contains("FTPSEG_PASSWORD"), "{text}: {e:?}");
        }
    }

    #[test]
    fn wrong_shapes_are_refused_with_their_line() {
        let cases = [
            ("[mirrors]\na = 1", 1, "unknown table [mirrors]"),
            ("put = 3", 1, "must be a table"),
            ("x = 1\n[hosts]\nh = 3", 3, "must be a table"),
            ("when = 1979-05-27", 1, "a date"),
            ("[put]\n[put.inner]\na = 1", 2, "do not nest"),
            ("connections = [true]", 1, "numbers or strings"),
            ("[hosts.\"ftp://h/x\"]\nconnections = 2", 1, "name a host"),
            ("[hosts.\"[::1]:21\"]\nconnections = 2", 1, "name a host"),
            ("[hosts.\"[foo/bar@x]\"]\nconnections = 2", 1, "name a host"),
            ("[hosts.\"h:21\"]\nconnections = 2", 1, "name a host"),
        ];
        for (text, line, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e:?}");
            assert!(e.message.contains(want), "{text}: {e:?}");
        }
    }

    #[test]
    fn values_print_back_as_toml() {
        assert_eq!(Value::Text("a\"b\\c".into()).as_toml(), r#""a\"b\\c""#);
        assert_eq!(
            Value::List(vec!["1".into(), "2".into()]).as_toml(),
            r#"["1", "2"]"#
        );
        assert_eq!(Value::Bool(false).as_toml(), "false");
    }

    proptest::proptest! {
        /// Whatever the text, parsing ends with settings or an error on a line of the file.
        #[test]
        fn any_text_parses_or_names_a_line_within_it(text in "[ -~\n]{0,200}") {
            let n = text.lines().count().max(1) + 1;
            match parse(&text) {
                Ok(f) => {
                    for s in f.top.iter().chain(&f.put).chain(&f.bench) {
                        proptest::prop_assert!(s.line >= 1 && s.line <= n);
                    }
                }
                Err(e) => proptest::prop_assert!(e.line >= 1 && e.line <= n, "{e:?}"),
            }
        }

        /// A written string value reads back as itself.
        #[test]
        fn quoted_strings_read_back(s in "\\PC{0,40}") {
            let f = parse(&format!("k = {}", quoted(&s))).unwrap();
            proptest::prop_assert_eq!(&f.top[0].value, &Value::Text(s));
        }
    }
}
