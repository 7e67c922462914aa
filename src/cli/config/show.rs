//! `ftpseg config show [put|bench] [ARGS...]`: the settings a command would run with and
//! where each comes from: the command line, the config file (file:line, or its host table) or
//! the default. Passwords never appear: URLs are shown without them, and no option holds one.

use std::ffi::OsString;
use std::fmt::Write;
use std::path::PathBuf;

use clap::ArgMatches;
use clap::error::ErrorKind;
use clap::parser::ValueSource;

use super::check::{Section, clap_reason, loose_command, options};
use super::file::quoted;
use super::{Choice, ForRun, Loaded, given_ids, with_words};
use crate::error::Error;
use crate::ftp::url::{FtpUrl, Tls};

/// One line of the report: the key, its value as TOML (empty: not set), where it comes from.
struct Row {
    key: String,
    value: String,
    source: String,
}

/// The report for the command line `line` (a command's arguments, as typed after `ftpseg
/// config show`; `put` or `bench` first for those commands). `--config` or `--no-config`
/// among them chooses the file, as before `show`.
pub fn show(choice: Choice, line: &[String]) -> Result<String, Error> {
    let (section, rest) = match line.first().map(String::as_str) {
        Some("put") => (Section::Put, &line[1..]),
        Some("bench") => (Section::Bench, &line[1..]),
        _ => (Section::Get, line),
    };
    let mut argv: Vec<OsString> = vec!["ftpseg".into()];
    argv.extend(section.subcommand().map(OsString::from));
    argv.extend(rest.iter().map(OsString::from));
    let typed = parse(section, &argv)?;
    let choice = match (
        typed.get_one::<PathBuf>("config"),
        typed.get_flag("no_config"),
    ) {
        (_, true) => Choice::None,
        (Some(p), _) => Choice::Named(p.clone()),
        (None, false) => choice,
    };
    let loaded = super::load(&choice)?;
    let run = ForRun::new(loaded.as_ref(), section, &given_ids(&typed));
    let m = parse(section, &with_words(&argv, &run.words()))?;
    let url = match section {
        Section::Put => rest.iter().rev().find(|a| a.contains("://")),
        _ => rest.iter().find(|a| a.contains("://")),
    }
    .and_then(|u| FtpUrl::parse_file_or_folder(u).ok().map(|(u, _)| u));
    let mut rows = rows(section, &m, &run);
    let table = host_table(section, url.as_ref(), &run, &mut rows);
    if url
        .as_ref()
        .is_some_and(|u| u.tls == Tls::None && !m.get_flag("ftps"))
    {
        for r in rows.iter_mut() {
            if (r.key == "ca-file" || r.key == "insecure") && r.source.contains(':') {
                r.source += " (not used: a plain FTP URL)";
            }
        }
    }
    Ok(render(section, &choice, loaded.as_ref(), &rows, table))
}

/// The section's matches for `argv`; `--help` and `--version` print and exit as usual, any
/// other refusal is one line without what was typed (it may hold a password).
fn parse(section: Section, argv: &[OsString]) -> Result<ArgMatches, Error> {
    let m = loose_command(section)
        .try_get_matches_from(argv)
        .map_err(|e| match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
            _ => Error::Usage(redact(&clap_reason(&e))),
        })?;
    Ok(match section.subcommand() {
        None => m,
        Some(name) => m
            .subcommand_matches(name)
            .expect("the subcommand was given")
            .clone(),
    })
}

/// One row per option of the section, from the final matches `m`.
fn rows(section: Section, m: &ArgMatches, run: &ForRun) -> Vec<Row> {
    let path = |line: usize| file_line(run, line);
    let mut rows = Vec::new();
    for arg in options(&loose_command(section), section) {
        let id = arg.get_id().as_str();
        if id == "config" || id == "no_config" {
            continue;
        }
        let key = arg.get_long().unwrap_or(id).to_owned();
        let replaced = run.replaced.iter().find(|r| r.0.id == id);
        let Some(raw) = m.get_raw(id) else {
            let source = match replaced {
                Some((u, by)) => format!("not set ({} is replaced by {by})", path(u.line)),
                None => "not set".into(),
            };
            rows.push(Row {
                key,
                value: String::new(),
                source,
            });
            continue;
        };
        let mut values: Vec<String> = raw.map(|v| redact(&v.to_string_lossy())).collect();
        if let (Some(d), [one]) = (arg.get_value_delimiter(), values.as_slice()) {
            values = one.split(d).map(str::to_owned).collect();
        }
        let source = match (
            m.value_source(id),
            run.used.iter().find(|u| u.id == id),
            replaced,
        ) {
            (_, Some(u), _) => path(u.line),
            (_, None, Some((u, by))) if m.value_source(id) != Some(ValueSource::CommandLine) => {
                format!("default ({} is replaced by {by})", path(u.line))
            }
            (_, None, Some((u, _))) => format!("command line (instead of {})", path(u.line)),
            (Some(ValueSource::CommandLine), None, None) => "command line".into(),
            _ => "default".into(),
        };
        rows.push(Row {
            key,
            value: toml_value(&values),
            source,
        });
    }
    rows
}

/// The host table of the URL's host over `rows`: what it says for the options the section
/// takes from it (bench keeps its own connections). Returns the header line's text.
fn host_table(
    section: Section,
    url: Option<&FtpUrl>,
    run: &ForRun,
    rows: &mut [Row],
) -> Option<String> {
    let host = url?.host_for_connect();
    let Some(rule) = run.hosts.rule(&host) else {
        return Some(format!("none with a setting left for {host}"));
    };
    for u in &rule.uses {
        let own = matches!(u.key.as_str(), "connections" | "max-connections-per-host");
        if own && section == Section::Bench {
            continue;
        }
        if let Some(row) = rows.iter_mut().find(|r| r.key == u.key) {
            row.value = u.value.as_toml();
            row.source = format!("{} [hosts.\"{}\"]", file_line(run, u.line), rule.host);
        }
    }
    Some(format!(
        "[hosts.\"{}\"] at {}",
        rule.host,
        file_line(run, rule.line)
    ))
}

/// "FILE:LINE" of the run's config file.
fn file_line(run: &ForRun, line: usize) -> String {
    let p = run.path.as_deref().map(|p| p.display().to_string());
    format!("{}:{line}", p.unwrap_or_default())
}

/// The report's text: a header, then one `key = value  # source` line per option.
fn render(
    section: Section,
    choice: &Choice,
    loaded: Option<&Loaded>,
    rows: &[Row],
    table: Option<String>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {}: the settings in effect, and where each comes from",
        section.title()
    );
    let file = match (choice, loaded) {
        (Choice::None, _) => "none (--no-config, or no home folder)".to_owned(),
        (c, Some(l)) => format!(
            "{}{}",
            l.path.display(),
            if matches!(c, Choice::Named(_)) {
                ""
            } else {
                " (the default place)"
            }
        ),
        (c, None) => format!(
            "{} (not there: nothing read)",
            c.path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
    };
    let _ = writeln!(out, "# config file: {file}");
    if let Some(t) = &table {
        let _ = writeln!(out, "# host table: {t}");
    }
    for r in rows {
        if r.value.is_empty() {
            let _ = writeln!(out, "# {}: {}", r.key, r.source);
        } else {
            let set = format!("{} = {}", r.key, r.value);
            let _ = writeln!(out, "{set:<40} # {}", r.source);
        }
    }
    if let Some(l) = loaded
        && table.is_none()
        && !l.hosts.is_empty()
    {
        let names: Vec<String> = l.hosts.iter().map(|h| quoted(&h.host)).collect();
        let _ = writeln!(
            out,
            "# host tables (give a URL to see one applied): {}",
            names.join(", ")
        );
    }
    out
}

/// Raw values as TOML: numbers and switches bare, text quoted, several as a list.
fn toml_value(values: &[String]) -> String {
    let one = |v: &String| {
        if v == "true" || v == "false" || v.parse::<f64>().is_ok() {
            v.clone()
        } else {
            quoted(v)
        }
    };
    match values {
        [v] => one(v),
        many => format!("[{}]", many.iter().map(one).collect::<Vec<_>>().join(", ")),
    }
}

/// `text` with the password of every `scheme://user:password@` in it replaced.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(['/', ' ', '\'', '"']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":<password>");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_replaced() {
        assert_eq!(
            redact("unexpected argument 'ftp://u:pw@h/b' found"),
            "unexpected argument 'ftp://u:<password>@h/b' found"
        );
        assert_eq!(redact("ftp://u@h:21/x"), "ftp://u@h:21/x");
        assert_eq!(
            redact("ftp://h:21/x ftps://a:b@c"),
            "ftp://h:21/x ftps://a:<password>@c"
        );
        assert_eq!(redact("no url"), "no url");
    }

    #[test]
    fn lists_and_numbers_print_as_toml() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(toml_value(&v(&["1", "2"])), "[1, 2]");
        assert_eq!(toml_value(&v(&["20M"])), "\"20M\"");
        assert_eq!(toml_value(&v(&["true"])), "true");
    }
}
