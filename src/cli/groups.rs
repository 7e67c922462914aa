//! The option groups several commands share, each declared once and used with
//! `#[command(flatten)]`: timeouts, progress output, credentials, the data connection, TLS.
//!
//! A group's help texts are those of `put` and `bench` where they agree, else those of
//! `ftpseg URL`; a command that words a flag for its own job replaces the text alone (the
//! `*_WORDING` tables in [`super::args`]), never the flag's name, default, parser or conflicts.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse::{parse_duration, parse_secs};
use crate::ftp::Timeouts;
use crate::ui::progress::Mode;

/// How long to wait for the network: `--connect-timeout`, `--reply-timeout`, `--stall-timeout`,
/// `--network-wait`; and `--inhibit-sleep`.
#[derive(Clone, Debug, Args)]
pub struct NetworkOpts {
    /// Seconds to wait for a TCP connection
    #[arg(long, default_value_t = 15.0, value_name = "SECS", value_parser = parse_secs)]
    pub connect_timeout: f64,

    /// Seconds to wait for any reply from the server
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_secs)]
    pub reply_timeout: f64,

    /// Seconds without a single byte on a data connection before it counts as stalled and is
    /// replaced by a new one
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_secs)]
    pub stall_timeout: f64,

    /// How long to wait for a missing network (no route, unreachable, no DNS answer) before
    /// giving up: 90s, 30m, 2h; 0 gives up at once. Time without a network does not count
    /// towards --max-tries
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = parse_duration)]
    pub network_wait: Duration,

    /// Keep the machine from sleeping until this ends: a systemd-logind sleep inhibitor, as
    /// systemd-inhibit takes (a warning, and the run goes on, where there is none)
    #[arg(long)]
    pub inhibit_sleep: bool,
}

impl NetworkOpts {
    /// The session's timeouts.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs_f64(self.connect_timeout),
            reply: Duration::from_secs_f64(self.reply_timeout),
            data_idle: Duration::from_secs_f64(self.stall_timeout),
        }
    }
}

/// What progress to show: `-q`, `--plain`.
#[derive(Clone, Debug, Args)]
pub struct OutputOpts {
    /// Show no progress, only errors
    #[arg(short, long)]
    pub quiet: bool,

    /// Plain progress lines instead of bars, even on a terminal
    #[arg(long)]
    pub plain: bool,
}

impl OutputOpts {
    /// The progress display of one download or upload.
    pub fn mode(&self) -> Mode {
        if self.quiet {
            Mode::Quiet
        } else if self.plain {
            Mode::Plain
        } else {
            Mode::Auto
        }
    }
}

/// Where a password may come from besides the URL: `--netrc-file`, `--no-netrc`.
#[derive(Clone, Debug, Args)]
pub struct CredentialOpts {
    /// Read credentials from this netrc file [default: ~/.netrc, if it exists]
    #[arg(long, value_name = "FILE", conflicts_with = "no_netrc")]
    pub netrc_file: Option<PathBuf>,

    /// Do not read any netrc file
    #[arg(long)]
    pub no_netrc: bool,
}

/// How data connections are made: `--use-pasv-address`, `--active`.
#[derive(Clone, Debug, Args)]
pub struct DataConnOpts {
    /// Connect data connections to the address in the server's PASV reply
    #[arg(long)]
    pub use_pasv_address: bool,

    /// Active mode: the server connects to ftpseg for data (PORT/EPRT)
    #[arg(long, conflicts_with = "use_pasv_address")]
    pub active: bool,
}

/// FTP over TLS: `--ftps`, `--ca-file`, `--insecure`.
#[derive(Clone, Debug, Args)]
pub struct TlsOpts {
    /// Use explicit TLS (AUTH TLS) with an ftp:// URL, as ftpes:// does. The password and the
    /// data are then encrypted; a server without TLS is refused (no fallback to plain FTP)
    #[arg(long)]
    pub ftps: bool,

    /// Trust only the CA certificates in this PEM file for FTPS, instead of the system's
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca_file: Option<PathBuf>,

    /// FTPS without checking the server's certificate (anyone on the path can then read and
    /// change the transfer and see the password)
    #[arg(long)]
    pub insecure: bool,

    /// Whether `ca_file` or `insecure` came from the config file (not a flag): there they
    /// apply to TLS URLs only, where a flag on a plain URL is an error.
    #[arg(skip)]
    pub from_file: bool,
}
