//! The `ftpseg` binary: parse the command line, run, exit with the documented code.

fn main() {
    std::process::exit(ftpseg::main());
}
