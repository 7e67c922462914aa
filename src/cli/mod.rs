//! Command-line interface: the arguments, and turning them into a run with an exit code.
//!
//! `ftpseg [OPTIONS] <URL>` downloads one file; `ftpseg demo` runs the built-in demonstration.
//! Two stages, as ripgrep's: [`args`] is what clap parses (the shared flags declared once, in
//! [`groups`]), [`jobs`] turns it into the checked job or plan a command of
//! [`crate::commands`] runs with the one [`Stop`]. Every failure prints one line,
//! `ftpseg: error: ...`, and exits with the code documented in README.md (see
//! [`crate::error::exit`]).

pub mod args;
pub mod config;
mod credentials;
pub mod groups;
pub mod jobs;
pub mod parse;

pub use args::{Cli, Command};
pub use parse::parse_size;

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

use crate::commands::{self, Stop};
use crate::error::{Error, exit};
use args::ConfigCommand;
use config::{Choice, ForRun, Section};

/// Parses `argv` (the config file's settings added, [`config`]), runs what it asks for and
/// returns the exit code. clap's own errors, `--help` and `--version` end the process here,
/// as `Cli::parse` would.
pub fn main(argv: Vec<OsString>) -> i32 {
    match with_config(argv) {
        Ok(cli) => run(cli),
        Err(e) => {
            eprintln!("ftpseg: error: {e}");
            e.exit_code()
        }
    }
}

/// The command line with the config file's settings under its flags: parsed once as typed,
/// to learn the command, the file and the flags given, then again with the file's settings
/// that no flag replaces. Host tables go into the options they apply to.
fn with_config(argv: Vec<OsString>) -> Result<Cli, Error> {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .chain(["help".to_owned()])
        .collect();
    let argv = config::config_first(argv, &names);
    let typed = Cli::command()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&typed).unwrap_or_else(|e| e.exit());
    let section = match &cli.command {
        None => Section::Get,
        Some(Command::Put(_)) => Section::Put,
        Some(Command::Bench(_)) => Section::Bench,
        // `config` reads the file itself; the others take no settings from it.
        _ => return Ok(cli),
    };
    let choice = Choice::from(cli.config.clone(), cli.no_config);
    let loaded = config::load(&choice)?;
    let own = match section.subcommand() {
        None => &typed,
        Some(name) => typed
            .subcommand_matches(name)
            .expect("the subcommand was given"),
    };
    let run = ForRun::new(loaded.as_ref(), section, &config::given_ids(own));
    if run.used.is_empty() && run.hosts.is_empty() {
        return Ok(cli);
    }
    let file = run.path.clone().unwrap_or_default();
    let argv = config::with_words(&argv, &run.words());
    let matches = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(|e| Error::Config {
            file: file.clone(),
            line: 0,
            message: config::check::clap_reason(&e),
        })?;
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (hosts, tls) = match &mut cli.command {
        None => {
            cli.get.bulk.dir_from_file = run.sets("dir");
            (&mut cli.get.download.hosts, &mut cli.get.download.tls)
        }
        Some(Command::Put(a)) => (&mut a.hosts, &mut a.tls),
        Some(Command::Bench(a)) => (&mut a.hosts, &mut a.tls),
        _ => return Ok(cli),
    };
    *hosts = run.hosts.clone();
    tls.from_file |= run.sets("ca_file") || run.sets("insecure");
    Ok(cli)
}

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
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ftpseg", &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Man) => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| Error::io("cannot write", "standard output", e)),
        Some(Command::Config(what)) => {
            let choice = Choice::from(cli.config, cli.no_config);
            match what {
                ConfigCommand::Path => {
                    let shown = match choice.path() {
                        Some(p) if p.exists() => p.display().to_string(),
                        Some(p) => format!("{} (not there)", p.display()),
                        None => "none (--no-config, or no home folder)".to_owned(),
                    };
                    println!("{shown}");
                }
                ConfigCommand::Show { args } => print!("{}", config::show::show(choice, &args)?),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
