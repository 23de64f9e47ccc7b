#!/usr/bin/env bash
# IPAM benchmark: one ADD+DEL cycle of calico-ipam (embedded store) against Debian's
# host-local, in the same run and through the same driver; pool-size independence (/8 with
# 10,000 addresses in use vs /24); peak RSS of one calico-ipam process.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo build --release --bins --locked -q
BIN=$PWD/target/release
RUNS=${RUNS:-300}
work=$(mktemp -d /tmp/calico-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

conf() { # conf NAME DB POOL
  printf '{"cniVersion":"1.0.0","name":"%s","type":"calico","nodename":"bench","log_level":"warning","datastore_path":"%s","ipam":{"type":"calico-ipam","ipv4_pools":["%s"]}}' "$1" "$2" "$3"
}
conf small "$work/small.db" 10.210.0.0/24 > "$work/small.json"
conf big "$work/big.db" 10.0.0.0/8 > "$work/big.json"
printf '{"cniVersion":"1.0.0","name":"hl","type":"host-local","ipam":{"type":"host-local","ranges":[[{"subnet":"10.220.0.0/24"}]],"dataDir":"%s/hl"}}' "$work" > "$work/hl.json"

"$BIN/calicoctl" --datastore-path "$work/small.db" pool add 10.210.0.0/24 >/dev/null
"$BIN/calicoctl" --datastore-path "$work/big.db" pool add 10.0.0.0/8 >/dev/null
echo "filling the /8 pool with 10,000 allocations..." >&2
"$BIN/cni-cycle" "$BIN/calico-ipam" "$work/big.json" --id fill --fill 10000
"$BIN/calicoctl" --datastore-path "$work/big.db" ipam show | head -2

hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$work/ipam.json" \
  -n "host-local" "$BIN/cni-cycle /usr/lib/cni/host-local $work/hl.json" \
  -n "calico-ipam /24" "$BIN/cni-cycle $BIN/calico-ipam $work/small.json" \
  -n "calico-ipam /8 with 10k used" "$BIN/cni-cycle $BIN/calico-ipam $work/big.json"

python3 - "$work/ipam.json" <<'PY'
import json, sys
r = {x["command"]: x["mean"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
hl, small, big = r["host-local"], r["calico-ipam /24"], r["calico-ipam /8 with 10k used"]
print(f"ADD+DEL cycle: host-local {hl:.2f} ms, calico-ipam {small:.2f} ms -> ratio {small/hl:.2f} (goal <= 0.5)")
print(f"pool size: /8 with 10k used {big:.2f} ms vs /24 {small:.2f} ms -> ratio {big/small:.2f} (goal <= 1.2)")
PY

rss() { # rss PLUGIN CONF -> peak KiB of one ADD
  local out
  out=$( { CNI_COMMAND=ADD CNI_CONTAINERID=rss$RANDOM CNI_NETNS=/var/run/netns/none CNI_IFNAME=eth0 CNI_PATH="$(dirname "$1")" \
      /usr/bin/time -v "$1" < "$2" >/dev/null; } 2>&1 | awk '/Maximum resident/ {print $6}')
  echo "$out"
}
echo "peak RSS of one ADD: calico-ipam $(rss "$BIN/calico-ipam" "$work/small.json") KiB (goal <= 4096), host-local $(rss /usr/lib/cni/host-local "$work/hl.json") KiB"
