#!/usr/bin/env bash
# Dataplane steps alone, in process: one workload's ADD (create_veth, setup_container,
# setup_host) and DEL (teardown) in throwaway netns, with the netlink requests per ADD
# (asserted: 6 for IPv4, 7 dual-stack). Root, Debian 12. Not part of the test suite: it prints
# timings, which a test must not assert.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
exec cargo test -p dataplane --release --test measure -- --nocapture --test-threads=1
