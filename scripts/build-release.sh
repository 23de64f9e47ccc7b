#!/usr/bin/env bash
# Build the release binaries, exactly as `cargo build --release` does (which is the shipped
# build: .cargo/config.toml's rustc wrapper, scripts/link/rustc-release.sh, links the
# workspace's executables statically, non-PIE, with the plugins' hot functions first).
# Extra arguments go to cargo (e.g. -p calico-ipam, -q).
# Prints the directory holding the binaries on stdout; cargo's output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked "$@" >&2
source scripts/lib/target-dir.sh
echo "$TARGET_DIR/release"
