#!/usr/bin/env bash
# calico-node at scale (root, Debian 12): 1,000 simulated nodes x 4 blocks in an etcd of its
# own, one real host (a netns) whose agent programs the 4,000 routes; then 50 single block
# changes timed from their etcd commit to the route (a route monitor in the host), the
# agent's RSS, and its idle CPU over 60 s. Runs tests/tests/node_scale.rs against the release
# build and prints its FIGURE lines. NODE_SCALE_NODES, NODE_SCALE_TRIALS and
# NODE_SCALE_IDLE_SECS change the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
source scripts/lib/release-test.sh
export NODE_SCALE_IDLE_SECS="${NODE_SCALE_IDLE_SECS:-60}"
release_test node_scale
