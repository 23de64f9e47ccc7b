#!/usr/bin/env bash
# Regenerates hot-symbols.txt, the functions the plugins execute, for hot-first.sh.
# Run it (root, Debian 12) after changes that move a lot of code; a stale list only costs
# RSS. It builds unstripped release binaries in target/hot-profile, runs calico-cni ADD,
# CHECK and DEL and calico-ipam ADD, CHECK and DEL on the embedded store in throwaway netns
# under callgrind, and writes every function they executed, without Rust's hashes, sorted
# so that a regenerated list diffs cleanly.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh

export CARGO_TARGET_DIR=$PWD/target/hot-profile CARGO_PROFILE_RELEASE_STRIP=false
BIN=$(scripts/build-release.sh -q -p calico-cni -p calico-ipam -p calicoctl)
id=$$
H=calihot-h-$id C=calihot-c-$id
work=$(mktemp -d /tmp/calico-hot.XXXXXX)
cleanup() { ip netns del "$C" 2>/dev/null || true; ip netns del "$H" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$H"; ip netns add "$C"
ip -n "$H" link set lo up

mkdir "$work/bin"
ln -s "$BIN/calico-cni" "$work/bin/calico"
ln -s "$BIN/calico-ipam" "$work/bin/calico-ipam"
"$BIN/calicoctl" --datastore-path "$work/store.db" pool add 10.232.0.0/16 >/dev/null
conf() { # conf PREV_RESULT
  printf '{"cniVersion":"1.0.0","name":"hot","type":"calico","nodename":"hot","log_level":"warning","datastore_path":"%s","ipam":{"type":"calico-ipam"}%s}' \
    "$work/store.db" "${1:+,\"prevResult\":$1}"
}
n=0
run() { # run PLUGIN COMMAND ID [PREV_RESULT]
  n=$((n + 1))
  conf "${4:-}" | CNI_COMMAND=$2 CNI_CONTAINERID=$3 CNI_NETNS=/var/run/netns/$C CNI_IFNAME=eth0 \
    CNI_PATH=$work/bin ip netns exec "$H" valgrind -q --tool=callgrind --demangle=no \
    --callgrind-out-file="$work/cg.$(printf %03d $n).%p" "$1"
}
for round in 1 2; do
  result=$(run "$work/bin/calico" ADD "hot$round")
  run "$work/bin/calico" CHECK "hot$round" "$result" >/dev/null
  run "$work/bin/calico" DEL "hot$round" >/dev/null
  result=$(run "$work/bin/calico-ipam" ADD "ipam$round")
  run "$work/bin/calico-ipam" CHECK "ipam$round" "$result" >/dev/null
  run "$work/bin/calico-ipam" DEL "ipam$round" >/dev/null
done

# fn=(id) name lines, first appearance first; drop callgrind's pseudo-entries and addresses.
for f in "$work"/cg.*; do cat "$f"; done \
  | sed -nE 's/^c?fn=\([0-9]+\) (.*)$/\1/p' \
  | sed -E "s/'[0-9]+$//; s/17h[0-9a-f]{16}E$/E/" \
  | grep -vE '^(0x[0-9a-f]+|\(below main\))$' \
  | LC_ALL=C sort -u > scripts/link/hot-symbols.txt
echo "scripts/link/hot-symbols.txt: $(wc -l < scripts/link/hot-symbols.txt) functions" >&2
