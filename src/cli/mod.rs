//! Command-line interface: the arguments, and turning them into a run with an exit code.
//!
//! `ftpseg [OPTIONS] <URL>` downloads one file; `ftpseg demo` runs the built-in demonstration.
//! Two stages, as ripgrep's: [`args`] is what clap parses (the shared flags declared once, in
//! [`groups`]), [`jobs`] turns it into the checked job or plan a command of
//! [`crate::commands`] runs with the one [`Stop`]. Every failure prints one line,
//! `ftpseg: error: ...`, and exits with the code documented in README.md (see
//! [`crate::error::exit`]).

pub mod args;
mod credentials;
pub mod groups;
pub mod jobs;
pub mod parse;

pub use args::{Cli, Command};
pub use parse::parse_size;

use crate::commands::{self, Stop};
use crate::error::{Error, exit};

/// Runs what the command line asks for and returns the exit code.
pub fn run(cli: Cli) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ftpseg: error: cannot start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("ftpseg: error: {e}");
            e.exit_code()
        }
    }
}

/// Builds the command's job, then runs it with the one [`Stop`]. Signals are watched only
/// once the job is built, so Ctrl-C at a password prompt (or while `-i -` reads) still ends
/// ftpseg at once.
async fn dispatch(cli: Cli) -> Result<(), Error> {
    match cli.command {
        None => {
            let plan = jobs::get_plan(cli.get)?;
            commands::get::run(plan, &Stop::on_signals()).await
        }
        Some(Command::Put(args)) => {
            let plan = jobs::put_plan(&args)?;
            commands::put::run(plan, &Stop::on_signals()).await
        }
        Some(Command::Bench(args)) => {
            let plan = jobs::bench_plan(&args)?;
            commands::bench::run(plan, &Stop::on_signals()).await
        }
        Some(Command::Demo(args)) => {
            commands::demo::run(jobs::demo_plan(&args), &Stop::on_signals()).await
        }
        Some(Command::Serve(args)) => {
            commands::serve::run(jobs::serve_plan(&args), &Stop::on_signals()).await
        }
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ftpseg", &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Error::io("cannot write", "standard output", e))
        }
    }
}

#[cfg(test)]
mod tests;
