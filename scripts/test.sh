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

# Tests must not disturb the machine: everything they make lives in their own netns and temp
# dirs. What of the machine they could touch is listed before and after, and any difference
# fails the run, naming it: Calico's own paths, network namespaces, the host netns's links and
# nftables tables.
machine() {
  {
    ls -d /etc/calico /var/lib/calico /run/calico /etc/cni/net.d/*calico* /opt/cni/bin/calico* 2>/dev/null
    ip netns list 2>/dev/null | awk '{print "netns " $1}'
    ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print "link " $2}'
    nft list tables 2>/dev/null | sed 's/^/nft /'
  } | sort
}
before=$(machine)
rc=0
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" || rc=$?
after=$(machine)
if [[ $after != "$before" ]]; then
  echo "test.sh: the tests changed the machine (< before, > after):" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
exit "$rc"
