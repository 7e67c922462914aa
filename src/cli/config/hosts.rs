//! `[hosts."NAME"]` tables: settings that describe one server (connections, its per-host
//! limit, TLS, the data connection), applied to the downloads and uploads of URLs with that
//! host, above the file's other settings and below the command line's flags.

use std::path::PathBuf;

use super::check::{HOST_KEYS, Section, Use, check, loose_command};
use super::file::{HostTable, Value};
use crate::cli::args::DownloadOpts;
use crate::cli::groups::{DataConnOpts, TlsOpts};
use crate::download::Connections;

/// One host table, checked.
#[derive(Clone, Debug)]
pub struct HostRule {
    /// Lower case, without brackets.
    pub host: String,
    pub line: usize,
    pub uses: Vec<Use>,
}

impl HostRule {
    /// Checks a table: only [`HOST_KEYS`], each value as its flag takes it.
    pub fn new(t: &HostTable, home: Option<&str>) -> Result<HostRule, (usize, String)> {
        if let Some(s) = t
            .settings
            .iter()
            .find(|s| !HOST_KEYS.contains(&s.key.as_str()))
        {
            return Err((
                s.line,
                format!(
                    "{} cannot be set per host: a [hosts.\"{}\"] table takes {}",
                    s.key,
                    t.host,
                    HOST_KEYS.join(", ")
                ),
            ));
        }
        Ok(HostRule {
            host: bare(&t.host),
            line: t.line,
            uses: check(Section::Get, &t.settings, home)?,
        })
    }

    /// The rule without the settings `drop` names (those a flag replaces).
    pub fn without(&self, drop: impl Fn(&str) -> bool) -> HostRule {
        HostRule {
            uses: self.uses.iter().filter(|u| !drop(&u.id)).cloned().collect(),
            ..self.clone()
        }
    }

    /// The rule's values, typed by the flags' own parsers.
    fn values(&self) -> Values {
        let mut words = vec!["ftpseg".to_owned()];
        words.extend(self.uses.iter().flat_map(|u| u.words()));
        let m = loose_command(Section::Get)
            .try_get_matches_from(&words)
            .expect("a host table's settings were checked");
        let mut v = Values::default();
        for u in &self.uses {
            let switch = match u.value {
                Value::Bool(b) => Some(b),
                _ => None,
            };
            match u.id.as_str() {
                "connections" => v.connections = m.get_one::<Connections>("connections").copied(),
                "max_connections_per_host" => {
                    v.per_host = m.get_one::<u16>("max_connections_per_host").copied()
                }
                "ca_file" => v.ca_file = m.get_one::<PathBuf>("ca_file").cloned(),
                "ftps" => v.ftps = switch,
                "active" => v.active = switch,
                "use_pasv_address" => v.use_pasv_address = switch,
                "insecure" => v.insecure = switch,
                _ => {}
            }
        }
        v
    }
}

/// A host table's values; `None`: not set there.
#[derive(Clone, Debug, Default)]
struct Values {
    connections: Option<Connections>,
    per_host: Option<u16>,
    ftps: Option<bool>,
    active: Option<bool>,
    use_pasv_address: Option<bool>,
    ca_file: Option<PathBuf>,
    insecure: Option<bool>,
}

/// The host tables of a run.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    rules: Vec<HostRule>,
}

impl Hosts {
    pub fn new(rules: Vec<HostRule>) -> Hosts {
        Hosts {
            rules: rules.into_iter().filter(|r| !r.uses.is_empty()).collect(),
        }
    }

    /// Whether no host table has a setting left to apply.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The table for `host` (compared without case and brackets).
    pub fn rule(&self, host: &str) -> Option<&HostRule> {
        let host = bare(host);
        self.rules.iter().rev().find(|r| r.host == host)
    }

    /// The host table's download settings on `opts`: connections (capped at the table's
    /// per-host limit), TLS and the data connection.
    pub fn apply_download(&self, host: &str, opts: &mut DownloadOpts) {
        let Some(v) = self.rule(host).map(HostRule::values) else {
            return;
        };
        if let Some(n) = v.connections {
            opts.connections = n;
        }
        apply_server(&v, &mut opts.tls, &mut opts.data);
    }

    /// The host table's TLS and data-connection settings (for `put` and `bench`).
    pub fn apply_server(&self, host: &str, tls: &mut TlsOpts, data: &mut DataConnOpts) {
        if let Some(v) = self.rule(host).map(HostRule::values) {
            apply_server(&v, tls, data);
        }
    }

    /// The host table's `connections`.
    pub fn connections(&self, host: &str) -> Option<Connections> {
        self.rule(host).and_then(|r| r.values().connections)
    }

    /// The host table's `max-connections-per-host`.
    pub fn per_host(&self, host: &str) -> Option<u16> {
        self.rule(host).and_then(|r| r.values().per_host)
    }
}

/// TLS and data-connection values over what the options held: a switch the table turns on
/// turns off the one it excludes.
fn apply_server(v: &Values, tls: &mut TlsOpts, data: &mut DataConnOpts) {
    if let Some(b) = v.ftps {
        tls.ftps = b;
    }
    if let Some(path) = &v.ca_file {
        tls.ca_file = Some(path.clone());
        tls.insecure = false;
        tls.from_file = true;
    }
    if let Some(b) = v.insecure {
        tls.insecure = b;
        if b {
            tls.ca_file = None;
        }
        tls.from_file = true;
    }
    if let Some(b) = v.active {
        data.active = b;
        if b {
            data.use_pasv_address = false;
        }
    }
    if let Some(b) = v.use_pasv_address {
        data.use_pasv_address = b;
        if b {
            data.active = false;
        }
    }
}

/// A host name as compared: lower case, IPv6 brackets off.
fn bare(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}
