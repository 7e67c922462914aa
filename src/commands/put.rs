//! `ftpseg put LOCAL... URL`: resumable, atomic, verified uploads ([`crate::upload`]).

use super::Stop;
use crate::error::Error;
use crate::ui::progress::{Mode, Progress};
use crate::upload::{self, PutJob};

/// What `ftpseg put` is asked to do.
pub struct PutPlan {
    pub job: PutJob,
    pub mode: Mode,
    /// `-q`: no summary lines either.
    pub quiet: bool,
    /// `-v`: a second line per file (where it went, bytes sent, every check).
    pub verbose: bool,
    /// `--inhibit-sleep`.
    pub inhibit_sleep: bool,
}

/// Runs the upload and prints one line per file; Ctrl-C stops it, resumable.
pub async fn run(plan: PutPlan, stop: &Stop) -> Result<(), Error> {
    let why = match plan.job.locals.as_slice() {
        [one] => format!("uploading {}", one.display()),
        _ => "uploading files".to_owned(),
    };
    let held = super::inhibit::maybe_hold(plan.inhibit_sleep, &why, plan.quiet).await;
    let mut progress = Progress::new(plan.mode);
    let result = upload::put(&plan.job, &mut progress, stop.receiver()).await;
    if let Some(h) = held {
        h.release().await;
    }
    progress.finish();
    let outcomes = result.map_err(|e| e.scrub(&plan.job.creds.password))?;
    if !plan.quiet {
        for o in outcomes {
            println!("{}", o.summary());
            if plan.verbose {
                println!("  {}", o.details());
            }
        }
    }
    Ok(())
}
