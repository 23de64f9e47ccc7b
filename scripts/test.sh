#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that exec the real binaries in
# throwaway network namespaces against a real etcd. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
