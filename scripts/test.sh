#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Installs what the tests need, starts the
# real FTP servers of the interop suite, runs the whole suite, and stops what it started.
# Safe to run again: every install step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust toolchain parts used by the checks (present on the project's machines; added if missing).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# vsftpd, proftpd, pure-ftpd and pyftpdlib on 127.0.0.1 (tests/it/interop.rs). `start` is
# idempotent: on servers already running it adds missing served files and restarts instances
# whose config changed. Stopped at the end only if this script started them.
if bash scripts/ftp-servers.sh status >/dev/null 2>&1; then
  bash scripts/ftp-servers.sh start
else
  bash scripts/ftp-servers.sh start
  trap 'bash scripts/ftp-servers.sh stop' EXIT
fi

cargo test --locked "$@"
# The library embedded by a program (examples/download.rs), against the built-in server.
cargo run --locked --quiet --example download
