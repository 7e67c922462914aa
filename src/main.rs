//! The `ftpseg` binary: parse the command line, run, exit with the documented code.

use clap::Parser;

fn main() {
    let cli = ftpseg::cli::Cli::parse();
    std::process::exit(ftpseg::cli::run(cli));
}
