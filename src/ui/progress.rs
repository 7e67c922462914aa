//! What the user sees while a download runs.
//!
//! The engine calls [`Progress::update`] a few times a second with a [`View`] of the download;
//! this module only renders it. On a terminal: an indicatif total bar (bytes, rate, ETA) and one
//! line per connection (its range, its rate, its state). When stderr is not a terminal: one
//! plain line every few seconds. `-q` shows nothing but errors. Notes (warnings, fallbacks) go
//! through [`Progress::note`], above the bars; what happens to the network (lost, back, the
//! machine slept) through [`Progress::network`], which a batch with `--json` also emits as a
//! `network` event.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ui::events::Events;
use crate::ui::{human_bytes, human_duration};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Plain periodic lines even on a terminal.
    Plain,
    /// Nothing but errors.
    Quiet,
}

/// One connection as the engine sees it at one moment.
#[derive(Clone, Debug, Default)]
pub struct ConnView {
    /// Bytes this connection has fetched since the start of the run.
    pub bytes: u64,
    /// The range it is reading (`pos`, `end`), if any.
    pub range: Option<(u64, u64)>,
    /// What it is doing.
    pub state: ConnState,
    /// The server it reads from: an index of [`View::servers`] (with mirrors).
    pub server: usize,
}

/// What one connection is doing: the value the download's scheduling reads (a connection is
/// measured only while [`ConnState::Reading`]) and the progress view shows (its `Display`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ConnState {
    /// `-n auto` has not allowed this connection yet.
    WaitingAuto,
    /// The download ended before this connection was needed.
    NotNeeded,
    /// Nothing to take now; looking for a range to help with.
    #[default]
    Idle,
    /// In a batch: waiting for the server's connection budget.
    WaitingSlot,
    /// Logging in, or asking for the range.
    Connecting,
    /// The transfer was asked for; no byte yet.
    Starting,
    /// Receiving data (the time its throughput is measured over).
    Reading,
    /// A failed attempt; the next one starts after this wait.
    Retrying(Duration),
    /// The server refused it as one connection too many; it tries again after this wait.
    Busy(Duration),
    /// No network to the server: waiting for it to come back (`--network-wait`).
    NoNetwork,
    /// No range left.
    Done,
    /// The single stream of a file without a size.
    Streaming,
    /// Uploading.
    Sending,
}

impl std::fmt::Display for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that a width in the format string lines the states up.
        match self {
            ConnState::WaitingAuto => f.pad("waiting (-n auto)"),
            ConnState::NotNeeded => f.pad("not needed"),
            ConnState::Idle => f.pad("idle"),
            ConnState::WaitingSlot => f.pad("waiting for a connection slot"),
            ConnState::Connecting => f.pad("connecting"),
            ConnState::Starting => f.pad("starting"),
            ConnState::Reading => f.pad("reading"),
            ConnState::Retrying(wait) => f.pad(&format!("retry in {:.1} s", wait.as_secs_f64())),
            ConnState::Busy(wait) => f.pad(&format!("server busy: retry in {} s", wait.as_secs())),
            ConnState::NoNetwork => f.pad("waiting for the network"),
            ConnState::Done => f.pad("done"),
            ConnState::Streaming => f.pad("streaming"),
            ConnState::Sending => f.pad("sending"),
        }
    }
}

/// The whole download at one moment.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Bytes present (resumed plus fetched).
    pub done: u64,
    /// File size, if known.
    pub total: Option<u64>,
    pub conns: Vec<ConnView>,
    /// While the network is missing: for how long, and the `--network-wait` limit.
    pub network_missing: Option<(Duration, Duration)>,
    /// With mirrors: each server as `host:port` (empty with one server).
    pub servers: Vec<String>,
}

/// What happened to the network, as [`Progress::network`] tells it.
#[derive(Clone, Debug, PartialEq)]
pub enum NetNote {
    /// The route to the server is gone (`why`: the kernel's answer); waiting up to `limit`.
    Lost { why: String, limit: Duration },
    /// The network is back after `after` without it.
    Back { after: Duration },
    /// The machine was suspended for `slept`: every connection is replaced.
    Slept { slept: Duration },
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    conns: Vec<ProgressBar>,
}

/// A program's own view of the progress: called with each [`View`] the download reports.
pub type Observer = Box<dyn FnMut(&View) + Send>;

/// Renders progress; one per download.
pub struct Progress {
    mode: Mode,
    observer: Option<Observer>,
    bars: Option<Bars>,
    started: Instant,
    last_line: Instant,
    last_bytes: Vec<(Instant, u64)>,
    rates: Vec<f64>,
    /// `--json` in a batch: network events go there too, with this file's (redacted) URL.
    events: Option<(Events, String)>,
}

/// Seconds between plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// A renderer; `mode` Auto picks bars when stderr is a terminal.
    pub fn new(mode: Mode) -> Progress {
        let mode = match mode {
            Mode::Auto if !std::io::stderr().is_terminal() => Mode::Plain,
            m => m,
        };
        let now = Instant::now();
        Progress {
            mode,
            observer: None,
            bars: None,
            started: now,
            last_line: now,
            last_bytes: Vec::new(),
            rates: Vec::new(),
            events: None,
        }
    }

    /// Also emit network events to `events` (a batch's `--json`), for the file at `url`.
    pub fn with_events(mut self, events: Events, url: String) -> Progress {
        self.events = Some((events, url));
        self
    }

    /// Says what happened to the network: a note, and a `network` event with `--json`.
    pub fn network(&self, what: &NetNote) {
        let secs = |d: &Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
        let (text, fields) = match what {
            NetNote::Lost { why, limit } => (
                format!(
                    "the network is gone ({why}); waiting for the network, up to {} \
                     (--network-wait)",
                    human_duration(*limit)
                ),
                serde_json::json!({"state": "down", "why": why, "wait_seconds": secs(limit)}),
            ),
            NetNote::Back { after } => (
                format!(
                    "the network is back after {}; reconnecting",
                    human_duration(*after)
                ),
                serde_json::json!({"state": "up", "down_seconds": secs(after)}),
            ),
            NetNote::Slept { slept } => (
                format!(
                    "the machine slept for {}; reconnecting",
                    human_duration(*slept)
                ),
                serde_json::json!({"state": "woke", "slept_seconds": secs(slept)}),
            ),
        };
        self.note(&text);
        if let Some((events, url)) = &self.events {
            let mut fields = fields;
            fields["url"] = serde_json::Value::String(url.clone());
            events.emit("network", fields);
        }
    }

    /// Nothing drawn: `observer` receives every [`View`] instead (a program that embeds a
    /// download and shows its progress its own way); notes are not shown, as with [`Mode::Quiet`].
    pub fn observed(observer: impl FnMut(&View) + Send + 'static) -> Progress {
        let mut p = Progress::new(Mode::Quiet);
        p.observer = Some(Box::new(observer));
        p
    }

    /// Whether anything but errors is shown.
    pub fn is_quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }

    /// Prints a note above the bars (or as a plain line). Silent in quiet mode.
    pub fn note(&self, msg: &str) {
        match (&self.mode, &self.bars) {
            (Mode::Quiet, _) => {}
            (_, Some(b)) => {
                let _ = b.multi.println(format!("ftpseg: {msg}"));
            }
            _ => eprintln!("ftpseg: {msg}"),
        }
    }

    /// Draws the current state.
    pub fn update(&mut self, view: &View) {
        if let Some(observe) = self.observer.as_mut() {
            observe(view);
            return;
        }
        let now = Instant::now();
        self.update_rates(now, view);
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => {
                if now.duration_since(self.last_line) >= PLAIN_EVERY {
                    self.last_line = now;
                    eprintln!("ftpseg: {}", self.summary_line(view));
                }
            }
            Mode::Auto => self.draw_bars(view),
        }
    }

    /// Removes the bars at the end of the download.
    pub fn finish(&mut self) {
        if let Some(b) = self.bars.take() {
            for c in &b.conns {
                c.finish_and_clear();
            }
            b.total.finish_and_clear();
            let _ = b.multi.clear();
        }
    }

    fn update_rates(&mut self, now: Instant, view: &View) {
        self.last_bytes.resize(view.conns.len(), (self.started, 0));
        self.rates.resize(view.conns.len(), 0.0);
        for (i, c) in view.conns.iter().enumerate() {
            let (t0, b0) = self.last_bytes[i];
            let dt = now.duration_since(t0).as_secs_f64();
            if dt >= 0.5 {
                let inst = c.bytes.saturating_sub(b0) as f64 / dt;
                // Smooth a little so the per-connection figure is readable.
                self.rates[i] = if self.rates[i] == 0.0 {
                    inst
                } else {
                    0.5 * self.rates[i] + 0.5 * inst
                };
                self.last_bytes[i] = (now, c.bytes);
            }
        }
    }

    /// With mirrors: "; host-a 40.00 MiB/s (3), host-b 9.50 MiB/s (3)" (rate and connections
    /// reading from each server); nothing with one server.
    fn per_server(&self, view: &View) -> String {
        if view.servers.len() < 2 {
            return String::new();
        }
        let parts: Vec<String> = view
            .servers
            .iter()
            .enumerate()
            .map(|(k, host)| {
                let (rate, n) = view
                    .conns
                    .iter()
                    .zip(&self.rates)
                    .filter(|(c, _)| c.server == k && c.range.is_some())
                    .fold((0.0, 0), |(r, n), (_, rate)| (r + rate, n + 1));
                format!("{host} {}/s ({n})", human_bytes(rate as u64))
            })
            .collect();
        format!("; {}", parts.join(", "))
    }

    fn summary_line(&self, view: &View) -> String {
        let rate: f64 = self.rates.iter().sum();
        let active = view.conns.iter().filter(|c| c.range.is_some()).count();
        let doing = match view.network_missing {
            Some((missing, limit)) => format!(
                "waiting for the network ({} of up to {})",
                human_duration(missing),
                human_duration(limit)
            ),
            None => format!("{active} connection(s) active"),
        };
        let doing = doing + &self.per_server(view);
        match view.total {
            Some(t) if t > 0 => format!(
                "{} / {} ({:.1}%), {}/s, {doing}",
                human_bytes(view.done),
                human_bytes(t),
                view.done as f64 * 100.0 / t as f64,
                human_bytes(rate as u64),
            ),
            _ => format!(
                "{}, {}/s, {doing}",
                human_bytes(view.done),
                human_bytes(rate as u64),
            ),
        }
    }

    fn draw_bars(&mut self, view: &View) {
        if self.bars.is_none() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let total = match view.total {
                Some(t) => {
                    let pb = multi.add(ProgressBar::new(t));
                    pb.set_style(
                        ProgressStyle::with_template(
                            "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    pb
                }
                None => {
                    let pb = multi.add(ProgressBar::new_spinner());
                    pb.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {bytes} {binary_bytes_per_sec} (size unknown)",
                        )
                        .expect("valid template"),
                    );
                    pb
                }
            };
            self.bars = Some(Bars {
                multi,
                total,
                conns: Vec::new(),
            });
        }
        let bars = self.bars.as_mut().expect("just created");
        bars.total.set_position(view.done);
        while bars.conns.len() < view.conns.len() {
            let pb = bars.multi.add(ProgressBar::new_spinner());
            pb.set_style(ProgressStyle::with_template("  {msg}").expect("valid template"));
            bars.conns.push(pb);
        }
        for (i, c) in view.conns.iter().enumerate() {
            let range = match c.range {
                Some((pos, end)) => format!(
                    "at {:>10} -> {:>10}  ({} left)",
                    human_bytes(pos),
                    human_bytes(end),
                    human_bytes(end.saturating_sub(pos))
                ),
                None => String::new(),
            };
            let server = match view.servers.get(c.server) {
                Some(host) if view.servers.len() > 1 => format!("{host:<21} "),
                _ => String::new(),
            };
            bars.conns[i].set_message(format!(
                "#{i:<2} {server}{:>12}/s  {:<16} {range}",
                human_bytes(self.rates[i] as u64),
                c.state
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_states_read_as_before_and_line_up() {
        assert_eq!(format!("{:<12}|", ConnState::Reading), "reading     |");
        let wait = Duration::from_millis(2500);
        assert_eq!(ConnState::Retrying(wait).to_string(), "retry in 2.5 s");
        assert_eq!(
            ConnState::Busy(wait).to_string(),
            "server busy: retry in 2 s"
        );
        assert_eq!(ConnState::WaitingAuto.to_string(), "waiting (-n auto)");
        assert_eq!(ConnState::NoNetwork.to_string(), "waiting for the network");
    }

    #[test]
    fn durations_read_at_a_glance() {
        use crate::ui::human_duration;
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 min");
        assert_eq!(human_duration(Duration::from_secs(7980)), "2 h 13 min");
    }

    #[test]
    fn the_progress_line_says_when_it_waits_for_the_network() {
        let p = Progress::new(Mode::Quiet);
        let mut view = View {
            done: 1 << 20,
            total: Some(4 << 20),
            conns: vec![ConnView::default()],
            network_missing: None,
            servers: Vec::new(),
        };
        assert!(p.summary_line(&view).ends_with("0 connection(s) active"));
        view.network_missing = Some((Duration::from_secs(12), Duration::from_secs(1800)));
        let line = p.summary_line(&view);
        assert!(
            line.ends_with("waiting for the network (12 s of up to 30 min)"),
            "{line}"
        );
    }

    #[test]
    fn with_mirrors_the_line_gives_each_server_its_rate_and_connections() {
        let mut p = Progress::new(Mode::Quiet);
        let conn = |server: usize, reading: bool| ConnView {
            bytes: 0,
            range: reading.then_some((0, 10)),
            state: ConnState::Reading,
            server,
        };
        let view = View {
            done: 0,
            total: Some(100),
            conns: vec![conn(0, true), conn(1, true), conn(1, true), conn(1, false)],
            network_missing: None,
            servers: vec!["a:21".into(), "b:2121".into()],
        };
        p.rates = vec![1024.0 * 1024.0, 2048.0, 2048.0, 7.0];
        let line = p.summary_line(&view);
        assert!(
            line.ends_with("3 connection(s) active; a:21 1.00 MiB/s (1), b:2121 4.00 KiB/s (2)"),
            "{line}"
        );
    }
}
