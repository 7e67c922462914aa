//! The config file (`~/.config/ftpseg/config.toml`): the options a user sets once.
//!
//! Keys are the long options without `--`; `[put]` and `[bench]` hold those commands' own
//! options, `[hosts."NAME"]` what describes one server ([`check::HOST_KEYS`]). Precedence:
//! a flag on the command line, then the environment (`FTPSEG_PASSWORD`), then the file's host
//! table, then its other settings, then the built-in defaults.
//!
//! How: the command line is parsed once as typed; the file's settings that no flag replaces
//! are added to it as flag words ([`check::Use::words`]) and it is parsed again, so every
//! value goes through the same parser, conflict rules and defaults as a typed flag. Host
//! tables become [`Hosts`], applied when a URL's host is known ([`crate::cli::jobs`]).
//! [`mod@file`] reads the TOML (pure), [`mod@check`] holds the settings against clap's options,
//! [`show`] prints `ftpseg config show`.

pub mod check;
pub mod file;
mod hosts;
pub mod show;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

pub use check::Section;
use check::{Use, check, conflict, loose_command, options, shared_ids};
pub use hosts::{HostRule, Hosts};

use crate::error::Error;

/// The file a run reads: `--config FILE`, else `FTPSEG_CONFIG`, else the default place;
/// `--no-config` reads none.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    None,
    /// Named by the user: it must exist.
    Named(PathBuf),
    /// `$XDG_CONFIG_HOME/ftpseg/config.toml` or `~/.config/ftpseg/config.toml`, if it exists.
    Default(PathBuf),
}

impl Choice {
    /// From the flags and the environment.
    pub fn from(config: Option<PathBuf>, no_config: bool) -> Choice {
        if no_config {
            return Choice::None;
        }
        if let Some(p) = config {
            return Choice::Named(p);
        }
        if let Some(p) = std::env::var_os("FTPSEG_CONFIG").filter(|p| !p.is_empty()) {
            return Choice::Named(PathBuf::from(p));
        }
        match default_path() {
            Some(p) => Choice::Default(p),
            None => Choice::None,
        }
    }

    /// The file's path, if any is chosen.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Choice::None => None,
            Choice::Named(p) | Choice::Default(p) => Some(p),
        }
    }
}

/// `$XDG_CONFIG_HOME/ftpseg/config.toml`, else `$HOME/.config/ftpseg/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").filter(|p| Path::new(p).is_absolute());
    let base = match xdg {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("ftpseg").join("config.toml"))
}

/// A config file read and checked: every table, whichever command runs.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    /// The top-level settings (as options of `ftpseg URL`).
    pub top: Vec<Use>,
    pub put: Vec<Use>,
    pub bench: Vec<Use>,
    pub hosts: Vec<HostRule>,
}

/// Reads and checks the chosen file: `None` when there is none. Any bad setting in any table
/// is an error naming the file and line, whichever command runs.
pub fn load(choice: &Choice) -> Result<Option<Loaded>, Error> {
    let (path, required) = match choice {
        Choice::None => return Ok(None),
        Choice::Named(p) => (p, true),
        Choice::Default(p) => (p, false),
    };
    let bad = |line: usize, message: String| Error::Config {
        file: path.clone(),
        line,
        message,
    };
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| bad(0, "not UTF-8 text; a config file is TOML".into()))?,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(bad(
                0,
                format!("cannot read the config file: {e}; fix the path, or pass --no-config"),
            ));
        }
    };
    let f = file::parse(&text).map_err(|e| bad(e.line, e.message))?;
    let home = std::env::var("HOME").ok().filter(|h| !h.is_empty());
    let home = home.as_deref();
    let checked = |section, settings: &[file::Setting]| {
        check(section, settings, home).map_err(|(line, m)| bad(line, m))
    };
    Ok(Some(Loaded {
        top: checked(Section::Get, &f.top)?,
        put: checked(Section::Put, &f.put)?,
        bench: checked(Section::Bench, &f.bench)?,
        hosts: f
            .hosts
            .iter()
            .map(|t| HostRule::new(t, home).map_err(|(line, m)| bad(line, m)))
            .collect::<Result<_, _>>()?,
        path: path.clone(),
    }))
}

/// The file's settings for one run of `section`: those added to the command line, those a
/// flag replaced (with the flag), and the host tables left to apply.
#[derive(Clone, Debug, Default)]
pub struct ForRun {
    pub path: Option<PathBuf>,
    pub used: Vec<Use>,
    pub replaced: Vec<(Use, String)>,
    pub hosts: Hosts,
}

impl ForRun {
    /// Splits the file's settings for `section` against what the command line `given` (its
    /// flags' ids): a flag replaces the setting of its own option and of any option it
    /// excludes.
    pub fn new(loaded: Option<&Loaded>, section: Section, given: &[String]) -> ForRun {
        let Some(l) = loaded else {
            return ForRun::default();
        };
        let own: &[Use] = match section {
            Section::Get => &[],
            Section::Put => &l.put,
            Section::Bench => &l.bench,
        };
        // Top-level settings reach put and bench only through the shared options they have;
        // a table's own setting of the same option, or of one it excludes, wins.
        let cmd = loose_command(section);
        let shared = shared_ids();
        let has: Vec<String> = options(&cmd, section)
            .iter()
            .map(|a| a.get_id().to_string())
            .collect();
        let top = l
            .top
            .iter()
            .filter(|u| section == Section::Get || shared.contains(&u.id) && has.contains(&u.id))
            .filter(|u| {
                !own.iter()
                    .any(|o| o.id == u.id || conflict(&cmd, section, &o.id, &u.id))
            });
        let mut run = ForRun {
            path: Some(l.path.clone()),
            ..ForRun::default()
        };
        for u in top.chain(own) {
            match replaced_by(&cmd, section, &u.id, given) {
                Some(flag) => run.replaced.push((u.clone(), flag)),
                None => run.used.push(u.clone()),
            }
        }
        run.hosts = Hosts::new(
            l.hosts
                .iter()
                .map(|h| h.without(|id| replaced_by(&cmd, section, id, given).is_some()))
                .collect(),
        );
        run
    }

    /// The flag words the settings add.
    pub fn words(&self) -> Vec<String> {
        self.used.iter().flat_map(|u| u.words()).collect()
    }

    /// Whether the option `id` got its value from the file.
    pub fn sets(&self, id: &str) -> bool {
        self.used
            .iter()
            .any(|u| u.id == id && !u.words().is_empty())
    }
}

/// The flag of `given` that replaces the setting of option `id`: itself, or one it excludes.
fn replaced_by(cmd: &Command, section: Section, id: &str, given: &[String]) -> Option<String> {
    given
        .iter()
        .find(|g| *g == id || conflict(cmd, section, g, id))
        .map(|g| format!("--{}", g.replace('_', "-")))
}

/// The ids of the options typed on the command line (`matches` of the section).
pub fn given_ids(matches: &ArgMatches) -> Vec<String> {
    matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect()
}

/// `argv` with a leading `--config FILE` or `--no-config` moved after the subcommand that
/// follows it (`ftpseg --config F put ...` as `ftpseg put --config F ...`): clap takes any
/// option before a word for a download's option, and the word for its URL.
pub fn config_first(argv: Vec<OsString>, subcommands: &[String]) -> Vec<OsString> {
    let mut lead = 1;
    while let Some(a) = argv.get(lead).and_then(|a| a.to_str()) {
        lead += match a {
            "--no-config" => 1,
            "--config" => 2,
            _ if a.starts_with("--config=") => 1,
            _ => break,
        };
    }
    let is_sub = argv
        .get(lead)
        .and_then(|a| a.to_str())
        .is_some_and(|a| subcommands.iter().any(|s| s == a));
    if lead == 1 || lead >= argv.len() || !is_sub {
        return argv;
    }
    let mut out = vec![argv[0].clone(), argv[lead].clone()];
    // `help` reads no file, and would take the flag for a command's name.
    if argv[lead] != "help" {
        out.extend_from_slice(&argv[1..lead]);
    }
    out.extend_from_slice(&argv[lead + 1..]);
    out
}

/// `argv` with `words` added where the section's options end: before a `--`, else at the end.
pub fn with_words(argv: &[OsString], words: &[String]) -> Vec<OsString> {
    let at = argv
        .iter()
        .skip(1)
        .position(|a| a == "--")
        .map_or(argv.len(), |i| i + 1);
    let mut out = argv[..at].to_vec();
    out.extend(words.iter().map(OsString::from));
    out.extend_from_slice(&argv[at..]);
    out
}

#[cfg(test)]
mod tests;
