//! The file's settings against the command line's options: which key is which flag, whether
//! its value is one that flag takes, which settings a flag on the command line replaces, and
//! the flag words ([`Use::words`]) a setting adds to the command line. clap's own parsers
//! check every value, so a value the file accepts is one the flag accepts, and the reverse.

use std::collections::HashSet;

use clap::{Arg, ArgAction, Command, CommandFactory};

use super::file::{Setting, Value};
use crate::cli::Cli;

/// The command a table's settings are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// `ftpseg URL...`: the top-level settings.
    Get,
    /// `ftpseg put`: `[put]`, and the top-level settings of the options it shares.
    Put,
    /// `ftpseg bench`: `[bench]`, and the shared top-level settings.
    Bench,
}

impl Section {
    /// The subcommand's name (none for `ftpseg URL`).
    pub fn subcommand(self) -> Option<&'static str> {
        match self {
            Section::Get => None,
            Section::Put => Some("put"),
            Section::Bench => Some("bench"),
        }
    }

    /// How the section is called in messages.
    pub fn title(self) -> &'static str {
        match self {
            Section::Get => "ftpseg URL",
            Section::Put => "ftpseg put",
            Section::Bench => "ftpseg bench",
        }
    }
}

/// Options that belong to one run, never to a file: `--force` and `--restart` would clobber
/// or discard without the user asking that time.
const ONE_RUN: &[(&str, &str)] = &[
    ("force", "it replaces existing files"),
    ("restart", "it throws away what earlier runs downloaded"),
    ("recursive", "it turns every URL into a folder to walk"),
    ("output", "it names one file"),
    ("input_file", "it names one run's list"),
    ("checksum", "it is one file's checksum"),
    ("json", "it names one run's report"),
    ("plot", "it names one run's chart"),
    ("config", "it chooses the file itself"),
    ("no_config", "it chooses the file itself"),
];

/// The keys a `[hosts."NAME"]` table may hold: what describes a server.
pub const HOST_KEYS: &[&str] = &[
    "connections",
    "max-connections-per-host",
    "ftps",
    "active",
    "use-pasv-address",
    "ca-file",
    "insecure",
];

/// A setting the command takes: the flag's id and what it adds to the command line.
#[derive(Clone, Debug)]
pub struct Use {
    /// The clap id (`limit_rate`).
    pub id: String,
    pub key: String,
    pub line: usize,
    pub value: Value,
    /// The value as the flag takes it (`~/` expanded), `None` for a switch.
    pub arg: Option<String>,
}

impl Use {
    /// What the setting adds to the command line: `--limit-rate 20M`, `--ftps`, or nothing
    /// for a switch set to false.
    pub fn words(&self) -> Vec<String> {
        match (&self.arg, &self.value) {
            // One word, so that a value starting with `-` stays a value.
            (Some(v), _) => vec![format!("--{}={v}", self.key)],
            (None, Value::Bool(true)) => vec![format!("--{}", self.key)],
            (None, _) => Vec::new(),
        }
    }
}

/// The command-line parser of a section with its positional arguments made optional, so that
/// a value can be tried alone and `config show` can run without a URL.
pub fn loose_command(section: Section) -> Command {
    let loosen = |a: Arg| {
        if a.is_positional() {
            let many = a.get_num_args().is_some_and(|n| n.min_values() > 1);
            let a = a
                .required(false)
                .required_unless_present(clap::builder::Resettable::<clap::Id>::Reset);
            if many { a.num_args(0..) } else { a }
        } else {
            a
        }
    };
    let cmd = Cli::command();
    match section.subcommand() {
        None => cmd.mut_args(loosen),
        Some(name) => cmd.mut_subcommand(name, |s| s.mut_args(loosen)),
    }
}

/// The section's own command within `cmd` (the whole command line's parser).
fn own(cmd: &Command, section: Section) -> &Command {
    match section.subcommand() {
        None => cmd,
        Some(name) => cmd
            .find_subcommand(name)
            .expect("every section's subcommand exists"),
    }
}

/// The section's own options (from [`loose_command`]).
pub(super) fn options(cmd: &Command, section: Section) -> Vec<Arg> {
    own(cmd, section)
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set() && a.get_long().is_some())
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .cloned()
        .collect()
}

/// The ids of the options `put` and `bench` share with `ftpseg URL` (the groups of
/// [`crate::cli::groups`]): the top-level settings that apply to them too.
pub fn shared_ids() -> HashSet<String> {
    use crate::cli::groups::{CredentialOpts, DataConnOpts, NetworkOpts, OutputOpts, TlsOpts};
    use clap::Args;
    let mut cmd = Command::new("shared");
    cmd = NetworkOpts::augment_args(cmd);
    cmd = OutputOpts::augment_args(cmd);
    cmd = CredentialOpts::augment_args(cmd);
    cmd = DataConnOpts::augment_args(cmd);
    cmd = TlsOpts::augment_args(cmd);
    cmd.get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

/// Checks `settings` (one table of the file) as options of `section`, each alone: the key
/// names an option the file may set, the value has its type and passes its parser. Returns
/// the uses, or the line and message of the first bad setting.
pub fn check(
    section: Section,
    settings: &[Setting],
    home: Option<&str>,
) -> Result<Vec<Use>, (usize, String)> {
    let cmd = loose_command(section);
    let opts = options(&cmd, section);
    let mut uses = Vec::new();
    for s in settings {
        let Some(arg) = opts.iter().find(|a| a.get_long() == Some(s.key.as_str())) else {
            return Err((s.line, unknown_key(section, &s.key, &opts)));
        };
        uses.push(check_one(&cmd, section, arg, s, home).map_err(|m| (s.line, m))?);
    }
    conflicts_within(&cmd, section, &uses)?;
    Ok(uses)
}

/// One setting against its option.
fn check_one(
    cmd: &Command,
    section: Section,
    arg: &Arg,
    s: &Setting,
    home: Option<&str>,
) -> Result<Use, String> {
    let id = arg.get_id().as_str();
    if let Some((_, why)) = ONE_RUN.iter().find(|(one, _)| *one == id) {
        return Err(format!(
            "{} cannot be set in the config file ({why}): give --{} on the command line when \
             you mean it",
            s.key, s.key
        ));
    }
    let switch = matches!(arg.get_action(), ArgAction::SetTrue);
    let arg_text = match (&s.value, switch) {
        (Value::Bool(_), true) => None,
        (_, true) => {
            return Err(format!(
                "{} = {}: a switch takes true or false",
                s.key,
                s.value.as_toml()
            ));
        }
        (Value::Bool(_), false) => {
            return Err(format!(
                "{} = {}: give {}{}",
                s.key,
                s.value.as_toml(),
                value_name(arg),
                examples(arg)
            ));
        }
        (Value::List(_), false) if arg.get_value_delimiter().is_none() => {
            return Err(format!("{} takes one value, not a list", s.key));
        }
        (v, false) => Some(expand_home(arg, &v.as_arg(), home)),
    };
    let u = Use {
        id: id.to_owned(),
        key: s.key.clone(),
        line: s.line,
        value: s.value.clone(),
        arg: arg_text,
    };
    let mut words: Vec<String> = vec!["ftpseg".into()];
    words.extend(section.subcommand().map(str::to_owned));
    words.extend(u.words());
    if let Err(e) = cmd.clone().try_get_matches_from(&words) {
        return Err(format!(
            "{} = {}: {}{}",
            s.key,
            s.value.as_toml(),
            clap_reason(&e),
            examples(arg)
        ));
    }
    Ok(u)
}

/// Two settings of one table that the command line would refuse together.
fn conflicts_within(cmd: &Command, section: Section, uses: &[Use]) -> Result<(), (usize, String)> {
    let set: Vec<&Use> = uses.iter().filter(|u| !u.words().is_empty()).collect();
    for (i, a) in set.iter().enumerate() {
        for b in &set[i + 1..] {
            if conflict(cmd, section, &a.id, &b.id) {
                return Err((
                    b.line,
                    format!(
                        "{} and {} (line {}) cannot both be set; keep one",
                        b.key, a.key, a.line
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether the options `a` and `b` of `section` exclude each other (either way round).
pub fn conflict(cmd: &Command, section: Section, a: &str, b: &str) -> bool {
    let own = own(cmd, section);
    let find = |id: &str| own.get_arguments().find(|x| x.get_id() == id);
    let (Some(x), Some(y)) = (find(a), find(b)) else {
        return false;
    };
    own.get_arg_conflicts_with(x)
        .iter()
        .any(|c| c.get_id() == b)
        || own
            .get_arg_conflicts_with(y)
            .iter()
            .any(|c| c.get_id() == a)
}

/// "unknown key ...", with where the key does belong or the nearest known one.
fn unknown_key(section: Section, key: &str, opts: &[Arg]) -> String {
    if section == Section::Get {
        for other in [Section::Put, Section::Bench] {
            let cmd = loose_command(other);
            if options(&cmd, other)
                .iter()
                .any(|a| a.get_long() == Some(key))
            {
                let name = other.subcommand().unwrap_or_default();
                return format!(
                    "{key} is an option of {}: put it under [{name}]",
                    other.title()
                );
            }
        }
    }
    let near = opts
        .iter()
        .filter_map(|a| a.get_long())
        .map(|l| (distance(l, key), l))
        .filter(|(d, _)| *d <= 2)
        .min();
    let hint = match near {
        Some((_, l)) => format!(" (did you mean {l}?)"),
        None => String::new(),
    };
    format!(
        "unknown key {key}{hint}: the keys are the long options of {} without the leading \
         --, see {} --help",
        section.title(),
        section.title().trim_end_matches(" URL")
    )
}

/// The value's placeholder: "N|auto", "RATE".
fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|n| n.first())
        .map_or("a value".to_owned(), |n| n.to_string())
}

/// The accepted values of an option, when it has a fixed list (" (one of: auto, mmap, ...)"),
/// else its default as an example.
fn examples(arg: &Arg) -> String {
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_owned())
        .collect();
    if !values.is_empty() {
        return format!(" (one of: {})", values.join(", "));
    }
    match arg.get_default_values().first() {
        Some(d) => format!(" (the default is {})", d.to_string_lossy()),
        None => String::new(),
    }
}

/// Why clap refused a value or a command line, in one phrase: the parser's own message when
/// there is one.
pub(crate) fn clap_reason(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    if e.kind() == ErrorKind::InvalidValue
        && let Some(ContextValue::String(v)) = e.get(ContextKind::InvalidValue)
    {
        return format!("'{v}' is not a value it takes");
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_owned()
}

/// `~/x` -> `$HOME/x` for the options that take a file or folder.
fn expand_home(arg: &Arg, value: &str, home: Option<&str>) -> String {
    let is_path = arg.get_value_names().is_some_and(|n| {
        n.iter()
            .any(|n| ["FILE", "DIR", "PATH"].iter().any(|p| n.contains(p)))
    });
    match (is_path, home) {
        (true, Some(h)) if value == "~" => h.to_owned(),
        (true, Some(h)) => match value.strip_prefix("~/") {
            Some(rest) => format!("{}/{rest}", h.trim_end_matches('/')),
            None => value.to_owned(),
        },
        _ => value.to_owned(),
    }
}

/// Edit distance (for "did you mean").
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::config::file::parse;

    fn check_text(section: Section, text: &str) -> Result<Vec<Use>, (usize, String)> {
        let f = parse(text).unwrap();
        let settings = match section {
            Section::Get => f.top,
            Section::Put => f.put,
            Section::Bench => f.bench,
        };
        check(section, &settings, Some("/home/u"))
    }

    #[test]
    fn good_settings_become_flag_words() {
        let uses = check_text(
            Section::Get,
            "connections = 16\nlimit-rate = \"20M\"\nstall-timeout = 60\nftps = true\n\
             active = false\nca-file = \"~/corp-ca.pem\"\nnetwork-wait = \"2h\"\nio = \"mmap\"\n",
        )
        .unwrap();
        let words: Vec<String> = uses.iter().flat_map(|u| u.words()).collect();
        assert_eq!(
            words,
            [
                "--connections=16",
                "--limit-rate=20M",
                "--stall-timeout=60",
                "--ftps",
                "--ca-file=/home/u/corp-ca.pem",
                "--network-wait=2h",
                "--io=mmap"
            ]
        );
        let uses = check_text(Section::Bench, "[bench]\nconnections = [1, 2, 8]\n").unwrap();
        assert_eq!(uses[0].words(), ["--connections=1,2,8"]);
        // A value that starts with a dash stays a value.
        let uses = check_text(Section::Put, "[put]\ntemp-suffix = \"-tmp\"\n").unwrap();
        assert_eq!(uses[0].words(), ["--temp-suffix=-tmp"]);
    }

    #[test]
    fn bad_settings_name_line_key_and_the_accepted_values() {
        let cases = [
            (
                "connections = 0",
                1,
                "connections = 0: '0' is not a connection count from 1 to 64",
            ),
            (
                "\nlimit-rate = \"fast\"",
                2,
                "limit-rate = \"fast\": unknown unit in 'fast'",
            ),
            ("io = \"disk\"", 1, "(one of: auto, mmap, splice, pwrite)"),
            (
                "ftps = \"yes\"",
                1,
                "ftps = \"yes\": a switch takes true or false",
            ),
            (
                "stall-timeout = true",
                1,
                "stall-timeout = true: give SECS (the default is 30)",
            ),
            (
                "connection = 4",
                1,
                "unknown key connection (did you mean connections?)",
            ),
            ("bogus = 1", 1, "see ftpseg --help"),
            (
                "temp-suffix = \".up\"",
                1,
                "temp-suffix is an option of ftpseg put: put it under [put]",
            ),
            ("force = true", 1, "give --force on the command line"),
            ("restart = true", 1, "throws away"),
            (
                "ca-file = \"a\"\ninsecure = true",
                2,
                "insecure and ca-file (line 1) cannot both be set",
            ),
            ("limit-rate = [1, 2]", 1, "takes one value, not a list"),
            ("max-tries = 0", 1, "max-tries = 0: "),
            (
                "stall-timeout = -1",
                1,
                "stall-timeout = -1: '-1' seconds is out of range",
            ),
            (
                "recursive = true",
                1,
                "recursive cannot be set in the config file",
            ),
        ];
        for (text, line, want) in cases {
            let e = check_text(Section::Get, text).unwrap_err();
            assert_eq!(e.0, line, "{text}: {e:?}");
            assert!(e.1.contains(want), "{text}: {}", e.1);
        }
        let e = check_text(Section::Put, "[put]\nlimit-rate = \"1M\"").unwrap_err();
        assert!(e.1.contains("see ftpseg put --help"), "{}", e.1);
    }

    #[test]
    fn the_shared_options_are_those_of_the_groups() {
        let shared = shared_ids();
        for id in [
            "stall_timeout",
            "network_wait",
            "ftps",
            "ca_file",
            "netrc_file",
            "quiet",
        ] {
            assert!(shared.contains(id), "{id}");
        }
        for id in ["connections", "max_tries", "limit_rate", "dir"] {
            assert!(!shared.contains(id), "{id}");
        }
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("connections", "connection"), 1);
        assert_eq!(distance("limit-rate", "limt-rate"), 1);
        assert_eq!(distance("abc", "xyz"), 3);
    }
}
