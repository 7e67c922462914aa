//! `ftpseg config show [put|bench] [ARGS...]`: the settings a command would run with and
//! where each comes from: the command line, the config file (file:line, or its host table) or
//! the default. Passwords never appear: no option holds one, and URLs are not shown.

use std::ffi::OsString;
use std::fmt::Write;
use std::path::PathBuf;

use clap::parser::ValueSource;

use super::check::{Section, loose_command, options};
use super::file::quoted;
use super::{Choice, ForRun, Loaded, given_ids, with_words};
use crate::error::Error;
use crate::ftp::url::FtpUrl;

/// The report for the command line `line` (a command's arguments, as typed after
/// `ftpseg config show`).
/// `--config` or `--no-config` among them chooses the file, as before `show`.
pub fn show(choice: Choice, line: &[String]) -> Result<String, Error> {
    let (section, rest) = match line.first().map(String::as_str) {
        Some("put") => (Section::Put, &line[1..]),
        Some("bench") => (Section::Bench, &line[1..]),
        _ => (Section::Get, line),
    };
    let mut argv: Vec<OsString> = vec!["ftpseg".into()];
    argv.extend(section.subcommand().map(OsString::from));
    argv.extend(rest.iter().map(OsString::from));
    let cmd = loose_command(section);
    let parse = |argv: &[OsString]| {
        let m = cmd.clone().try_get_matches_from(argv).map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().to_owned();
            Error::Usage(first.trim_start_matches("error: ").to_owned())
        })?;
        Ok::<_, Error>(match section.subcommand() {
            None => m,
            Some(name) => m
                .subcommand_matches(name)
                .expect("the subcommand was given")
                .clone(),
        })
    };
    let typed = parse(&argv)?;
    let choice = match (
        typed.get_one::<PathBuf>("config"),
        typed.get_flag("no_config"),
    ) {
        (_, true) => Choice::None,
        (Some(p), _) => Choice::Named(p.clone()),
        (None, false) => choice,
    };
    let loaded = super::load(&choice)?;
    let loaded = loaded.as_ref();
    let run = ForRun::new(loaded, section, &given_ids(&typed));
    let m = parse(&with_words(&argv, &run.words()))?;
    let path = |line: usize| {
        let p = run.path.as_deref().map(|p| p.display().to_string());
        format!("{}:{line}", p.unwrap_or_default())
    };
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for arg in options(&cmd, section) {
        let id = arg.get_id().as_str();
        if id == "config" || id == "no_config" {
            continue;
        }
        let key = arg.get_long().unwrap_or(id).to_owned();
        let Some(raw) = m.get_raw(id) else {
            rows.push((key, String::new(), "not set".into()));
            continue;
        };
        let value = toml_value(
            &raw.map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        );
        let from_file = run.used.iter().find(|u| u.id == id);
        let source = match (m.value_source(id), from_file) {
            (_, Some(u)) => path(u.line),
            (Some(ValueSource::CommandLine), None) => {
                match run.replaced.iter().find(|r| r.0.id == id) {
                    Some((u, _)) => format!("command line (instead of {})", path(u.line)),
                    None => "command line".into(),
                }
            }
            _ => "default".into(),
        };
        rows.push((key, value, source));
    }
    // The host table of the URL's host, if there is one.
    let url = match section {
        Section::Put => rest.iter().rev().find(|a| a.contains("://")),
        _ => rest.iter().find(|a| a.contains("://")),
    };
    let host = url
        .and_then(|u| FtpUrl::parse_file_or_folder(u).ok())
        .map(|(u, _)| u.host_for_connect());
    let rule = host.as_deref().and_then(|h| run.hosts.rule(h));
    if let Some(rule) = rule {
        for u in &rule.uses {
            if let Some(row) = rows.iter_mut().find(|r| r.0 == u.key) {
                row.1 = u.value.as_toml();
                row.2 = format!("{} [hosts.\"{}\"]", path(u.line), rule.host);
            }
        }
    }
    let table = match (rule, &host) {
        (Some(r), _) => Some(format!("[hosts.\"{}\"] at {}", r.host, path(r.line))),
        (None, Some(h)) => Some(format!("none with a setting left for {h}")),
        (None, None) => None,
    };
    Ok(render(section, &choice, loaded, &rows, table.as_deref()))
}

/// The report's text: a header, then one `key = value  # source` line per option.
fn render(
    section: Section,
    choice: &Choice,
    loaded: Option<&Loaded>,
    rows: &[(String, String, String)],
    host: Option<&str>,
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
    if let Some(h) = host {
        let _ = writeln!(out, "# host table: {h}");
    }
    for (key, value, source) in rows {
        if value.is_empty() {
            let _ = writeln!(out, "# {key}: {source}");
        } else {
            let set = format!("{key} = {value}");
            let _ = writeln!(out, "{set:<40} # {source}");
        }
    }
    if let Some(l) = loaded
        && host.is_none()
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
