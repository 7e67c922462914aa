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
}

/// Runs the upload and prints one line per file; Ctrl-C stops it, resumable.
pub async fn run(plan: PutPlan, stop: &Stop) -> Result<(), Error> {
    let mut progress = Progress::new(plan.mode);
    let result = upload::put(&plan.job, &mut progress, stop.receiver()).await;
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
