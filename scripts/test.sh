#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Installs what the tests need, then runs
# the whole suite. Safe to run again: every install step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust toolchain parts used by the checks (present on the project's machines; added if missing).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

cargo test --locked "$@"
