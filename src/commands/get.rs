//! `ftpseg URL...`: one file over N connections, or a batch of many ([`crate::batch`]).

use super::{Stop, inhibit};
use crate::batch::{self, JobFor};
use crate::download::{self, Job};
use crate::error::Error;
use crate::ui::progress::{Mode, Progress};

/// What `ftpseg URL...` is asked to do.
pub enum GetPlan {
    /// One file.
    One {
        job: Box<Job>,
        mode: Mode,
        /// `-q`: no summary line either.
        quiet: bool,
        /// `-v`: the BLAKE3 under the summary line.
        verbose: bool,
        /// `--inhibit-sleep`.
        inhibit_sleep: bool,
    },
    /// Several URLs, `-i`, globs, `-r`, checksums or `--json`.
    Batch {
        settings: Box<batch::Settings>,
        inputs: batch::Inputs,
        jobs: Box<dyn JobFor>,
        /// `--inhibit-sleep`.
        inhibit_sleep: bool,
    },
}

/// Runs the download (or the batch); Ctrl-C stops it after a final checkpoint.
pub async fn run(plan: GetPlan, stop: &Stop) -> Result<(), Error> {
    match plan {
        GetPlan::One {
            job,
            mode,
            quiet,
            verbose,
            inhibit_sleep,
        } => {
            let why = format!("downloading {}", job.output.display());
            let held = inhibit::maybe_hold(inhibit_sleep, &why, quiet).await;
            let mut progress = Progress::new(mode);
            let result = download::download(&job, &mut progress, stop.receiver()).await;
            if let Some(h) = held {
                h.release().await;
            }
            let outcome = result.map_err(|e| e.scrub(&job.creds.password))?;
            if !quiet {
                println!("{}", outcome.summary(&[]));
                if verbose {
                    for line in outcome.source_lines().iter().chain(&outcome.hash_line()) {
                        println!("  {line}");
                    }
                }
            }
            Ok(())
        }
        GetPlan::Batch {
            settings,
            inputs,
            jobs,
            inhibit_sleep,
        } => {
            let why = "downloading a batch of files";
            let held = inhibit::maybe_hold(inhibit_sleep, why, settings.quiet).await;
            let result = batch::run(&settings, inputs, jobs.as_ref(), stop.receiver()).await;
            if let Some(h) = held {
                h.release().await;
            }
            result
        }
    }
}
