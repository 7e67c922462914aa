//! The stop signal every command takes: Ctrl-C or SIGTERM asks the run to stop cleanly (each
//! download saves a final checkpoint); a second Ctrl-C exits at once with code 130.
//!
//! This is the one place that installs signal handlers; the library below it only ever sees
//! the `watch::Receiver<bool>` a [`Stop`] hands out (as mini-redis's `server::run` takes its
//! shutdown future from the binary).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::exit;

/// A request to stop, from the signals ([`Stop::on_signals`]).
#[derive(Debug)]
pub struct Stop {
    stopped: watch::Receiver<bool>,
    /// The task watching the signals; aborted when the `Stop` is dropped.
    watcher: Option<JoinHandle<()>>,
    /// Why SIGTERM cannot be watched, if it cannot (Ctrl-C alone then stops the run).
    sigterm_error: Option<String>,
}

impl Stop {
    /// Watches Ctrl-C (SIGINT) and SIGTERM from now on. The first asks the run to stop; a
    /// second Ctrl-C does not wait for the final checkpoint (what is on disk stays consistent:
    /// the manifest only ever records flushed bytes) and exits with 130. Call it within the
    /// runtime.
    pub fn on_signals() -> Stop {
        let (tx, stopped) = watch::channel(false);
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        let (mut term, sigterm_error) = match signal(SignalKind::terminate()) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let watcher = tokio::spawn(async move {
            tokio::select! {
                _ = next(interrupt.as_mut()) => {}
                _ = next(term.as_mut()) => {}
            }
            let _ = tx.send(true);
            next(interrupt.as_mut()).await;
            eprintln!("ftpseg: interrupted again: exiting at once");
            std::process::exit(exit::INTERRUPTED);
        });
        Stop {
            stopped,
            watcher: Some(watcher),
            sigterm_error,
        }
    }

    /// A stop no signal reaches: sending `true` on the returned sender asks the run to stop
    /// (for tests; a program that embeds a download passes its own `watch` receiver).
    #[cfg(test)]
    pub fn manual() -> (watch::Sender<bool>, Stop) {
        let (tx, stopped) = watch::channel(false);
        let stop = Stop {
            stopped,
            watcher: None,
            sigterm_error: None,
        };
        (tx, stop)
    }

    /// The receiver a download or an upload watches (`true`: stop).
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.stopped.clone()
    }

    /// Why SIGTERM is not watched, when it could not be.
    pub fn sigterm_error(&self) -> Option<&str> {
        self.sigterm_error.as_deref()
    }

    /// Waits until a stop is asked for (at once if it already was).
    pub async fn requested(&self) {
        let mut rx = self.stopped.clone();
        // An error means the sender is gone: no stop can come any more.
        if rx.wait_for(|&stop| stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

/// The next delivery of a signal; never, for one that is not watched.
async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_stop_reaches_every_receiver() {
        let (tx, stop) = Stop::manual();
        let rx = stop.receiver();
        assert!(!*rx.borrow());
        tx.send(true).unwrap();
        stop.requested().await;
        assert!(*rx.borrow());
        assert!(*stop.receiver().borrow(), "a later receiver sees it too");
    }
}
