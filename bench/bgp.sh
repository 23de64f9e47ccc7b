#!/usr/bin/env bash
# BGP through BIRD (root, Debian 12, bird2): two hosts behind a top-of-rack router running its
# own BIRD, each host's calico-node driving BIRD. Figures: from the commit of a new block's
# affinity in etcd to its route on the ToR (a route monitor in the router), median over
# BGP_BENCH_TRIALS (20) blocks (goal <= 1 s); BIRD reconfigurations for those blocks (goal 0:
# BIRD learns each block's blackhole route from the kernel); with 200 global peers
# configured, one more rendered, checked with bird -p, written and loaded (goal <= 200 ms).
# Runs tests/tests/bgp_bench.rs against the release build and prints its FIGURE lines.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
source scripts/lib/release-test.sh
export BGP_BENCH_TRIALS="${BGP_BENCH_TRIALS:-20}"
release_test bgp_bench
