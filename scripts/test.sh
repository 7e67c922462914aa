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

# mkfs.ext2 (e2fsprogs) for the sparse-file test (tests/it/errors.rs loop-mounts an ext2 image:
# a file system without fallocate). Mounting needs root, so only root installs it.
if [[ $(id -u) -eq 0 ]] && command -v dpkg-query >/dev/null &&
  ! dpkg-query -W -f='${Status}' e2fsprogs 2>/dev/null | grep -q "install ok installed"; then
  apt=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 e2fsprogs)
  "${apt[@]}" || { apt-get update -qq && "${apt[@]}"; }
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
# A short seeded slice of the fault campaign (docs/reliability.md, "Fault campaign"): kill -9,
# freezes, frozen server sessions, refused logins and (where `unshare -n` is allowed) network
# outages, across the four real servers and the built-in one. Uses the debug binary `cargo test`
# just built; about a minute on 2 cores, bounded by --time-limit.
python3 scripts/fault-campaign.py --runs 24 --seed 20261208 --time-limit 240 --quiet \
  --ftpseg "${CARGO_TARGET_DIR:-target}/debug/ftpseg"
