#!/usr/bin/env bash
# IPAM benchmark: one ADD+DEL cycle of calico-ipam on the embedded store and on etcd against
# Debian's host-local, in the same hyperfine run and through the same driver; pool-size
# independence (/8 with 10,000 addresses in use vs /24); peak RSS of one calico-ipam ADD;
# for etcd also the time to the first RPC and the round trips per ADD and per DEL.
# Starts its own etcd on free loopback ports and stops it on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
BIN=$(scripts/build-release.sh -q -p calico-ipam -p calicoctl -p calico-tests)
scripts/build-release.sh -q -p datastore --example etcd_first_rpc >/dev/null
RUNS=${RUNS:-300}
work=$(mktemp -d /tmp/calico-bench.XXXXXX)
source scripts/lib/etcd.sh
cleanup() { stop_etcd; rm -rf "$work"; }
trap cleanup EXIT
# etcd on free loopback ports, its data in the bench's temp dir (same disk as the others).
start_etcd "$work"

conf() { # conf NAME DB POOL
  printf '{"cniVersion":"1.0.0","name":"%s","type":"calico","nodename":"bench","log_level":"warning","datastore_path":"%s","ipam":{"type":"calico-ipam","ipv4_pools":["%s"]}}' "$1" "$2" "$3"
}
etcd_conf() { # etcd_conf NODE LOG_LEVEL
  printf '{"cniVersion":"1.0.0","name":"etcd","type":"calico","nodename":"%s","log_level":"%s","etcd_endpoints":"%s","ipam":{"type":"calico-ipam","ipv4_pools":["10.230.0.0/16"],"lock_file":"%s/etcd.lock"}}' "$1" "$2" "$ETCD_URL" "$work"
}
conf small "$work/small.db" 10.210.0.0/24 > "$work/small.json"
conf big "$work/big.db" 10.0.0.0/8 > "$work/big.json"
etcd_conf bench warning > "$work/etcd.json"
printf '{"cniVersion":"1.0.0","name":"hl","type":"host-local","ipam":{"type":"host-local","ranges":[[{"subnet":"10.220.0.0/24"}]],"dataDir":"%s/hl"}}' "$work" > "$work/hl.json"

"$BIN/calicoctl" --datastore-path "$work/small.db" pool add 10.210.0.0/24 >/dev/null
"$BIN/calicoctl" --datastore-path "$work/big.db" pool add 10.0.0.0/8 >/dev/null
"$BIN/calicoctl" --etcd-endpoints "$ETCD_URL" pool add 10.230.0.0/16 >/dev/null
echo "filling the /8 pool with 10,000 allocations..." >&2
"$BIN/cni-cycle" "$BIN/calico-ipam" "$work/big.json" --id fill --fill 10000
"$BIN/calicoctl" --datastore-path "$work/big.db" ipam show | sed -n 1,2p  # sed reads it all: no EPIPE

hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$work/ipam.json" \
  -n "host-local" "$BIN/cni-cycle /usr/lib/cni/host-local $work/hl.json" \
  -n "calico-ipam /24" "$BIN/cni-cycle $BIN/calico-ipam $work/small.json" \
  -n "calico-ipam /8 with 10k used" "$BIN/cni-cycle $BIN/calico-ipam $work/big.json" \
  -n "calico-ipam etcd" "$BIN/cni-cycle $BIN/calico-ipam $work/etcd.json"

python3 - "$work/ipam.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
for stat in ("mean", "median"):
    r = {x["command"]: x[stat] * 1000 for x in results}
    hl, small, big, etcd = r["host-local"], r["calico-ipam /24"], r["calico-ipam /8 with 10k used"], r["calico-ipam etcd"]
    print(f"[{stat}] ADD+DEL cycle: host-local {hl:.2f} ms, calico-ipam {small:.2f} ms -> ratio {small/hl:.2f} (goal <= 0.5)")
    print(f"[{stat}] pool size: /8 with 10k used {big:.2f} ms vs /24 {small:.2f} ms -> ratio {big/small:.2f} (goal <= 1.2)")
    print(f"[{stat}] etcd: ADD+DEL cycle {etcd:.2f} ms -> {etcd/hl:.2f}x host-local (goal <= 1.0), {etcd/small:.2f}x the embedded store")
PY

# The plugins' own time, as a runtime waits for it: cni-cycle --split times each ADD and
# DEL exec (fork, exec, run, wait) and leaves out its own start-up, which the cycle above
# adds to both sides of every ratio. Rounds of 50 cycles, the plugins interleaved, so that
# the host's drift (which moves the figures above by half between runs here) falls on all.
ROUNDS=${ROUNDS:-6}
split() { "$BIN/cni-cycle" "$1" "$2" --id "split$3" --split 50 | tr '\n' ' '; echo; }
for round in $(seq "$ROUNDS"); do
  echo "host-local $(split /usr/lib/cni/host-local "$work/hl.json" "h$round")"
  echo "small $(split "$BIN/calico-ipam" "$work/small.json" "c$round")"
  echo "big $(split "$BIN/calico-ipam" "$work/big.json" "b$round")"
  echo "etcd $(split "$BIN/calico-ipam" "$work/etcd.json" "e$round")"
done > "$work/split.txt"
python3 - "$work/split.txt" "$ROUNDS" <<'PY'
import re, sys
tot = {}
for line in open(sys.argv[1]):
    name = line.split()[0]
    med = [float(x) for x in re.findall(r"(?:ADD|DEL) ([\d.]+) ms", line)[:2]]
    mean = [float(x) for x in re.findall(r"mean ([\d.]+)", line)]
    t = tot.setdefault(name, [0.0, 0.0])
    t[0] += sum(mean) / int(sys.argv[2])
    t[1] += sum(med) / int(sys.argv[2])
hl, c, b, e = tot["host-local"], tot["small"], tot["big"], tot["etcd"]
f = lambda x, y: f"{x[0]/y[0]:.2f} / {x[1]/y[1]:.2f}"
print(f"plugin time, ADD+DEL, mean / median ({sys.argv[2]} interleaved rounds of 50):")
print(f"  host-local {hl[0]:.2f} / {hl[1]:.2f} ms, calico-ipam {c[0]:.2f} / {c[1]:.2f} ms -> ratio {f(c, hl)} (goal <= 0.5)")
print(f"  /8 with 10k used {b[0]:.2f} / {b[1]:.2f} ms -> {f(b, c)}x the /24 (goal <= 1.2)")
print(f"  etcd {e[0]:.2f} / {e[1]:.2f} ms -> {f(e, hl)}x host-local (goal <= 1.0)")
PY

echo "--- etcd: one fresh process's first RPC (examples/etcd_first_rpc.rs) ---"
"$BIN/examples/etcd_first_rpc" "$ETCD_URL"

# One plugin run, as a runtime execs it: `cni VERB ID CONF` prints its stderr.
cni() {
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/var/run/netns/none CNI_IFNAME=eth0 CNI_PATH="$BIN" \
    "$BIN/calico-ipam" < "$3" 2>&1 >/dev/null
}
trips() { grep -o 'round_trips=[0-9]*' | head -1 | cut -d= -f2; }
etcd_conf bench-rt debug > "$work/etcd-debug.json"
first=$(cni ADD rt0 "$work/etcd-debug.json" | trips)
steady=$(cni ADD rt1 "$work/etcd-debug.json" | trips)
del=$(cni DEL rt1 "$work/etcd-debug.json" | trips)
cni DEL rt0 "$work/etcd-debug.json" >/dev/null
echo "etcd round trips: first ADD of a host (claims a block) $first, steady-state ADD $steady, DEL $del"

rss() { # rss PLUGIN CONF -> peak KiB of one ADD
  local out
  out=$( { CNI_COMMAND=ADD CNI_CONTAINERID=rss$RANDOM CNI_NETNS=/var/run/netns/none CNI_IFNAME=eth0 CNI_PATH="$(dirname "$1")" \
      /usr/bin/time -v "$1" < "$2" >/dev/null; } 2>&1 | awk '/Maximum resident/ {print $6}')
  echo "$out"
}
echo "peak RSS of one ADD: calico-ipam $(rss "$BIN/calico-ipam" "$work/small.json") KiB (goal <= 4096), host-local $(rss /usr/lib/cni/host-local "$work/hl.json") KiB"
echo "peak RSS of one ADD on etcd: calico-ipam $(rss "$BIN/calico-ipam" "$work/etcd.json") KiB (goal <= 6144)"
