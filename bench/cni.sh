#!/usr/bin/env bash
# Dataplane benchmark: one ADD+DEL cycle of calico-cni + calico-ipam (embedded store)
# against Debian's ptp + host-local, in the same hyperfine run, through the same driver
# (cni-cycle), both run inside a netns playing the host. Also: peak RSS per plugin process,
# and what one ADD costs in execs and netlink requests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
BIN=$(scripts/build-release.sh -q -p calico-cni -p calico-ipam -p calicoctl -p calico-node -p calico-tests)
RUNS=${RUNS:-200}
id=$$
H=calibench-h-$id C=calibench-c-$id
work=$(mktemp -d /tmp/calico-bench.XXXXXX)
agent=
cleanup() {
  if [[ -n $agent ]]; then kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; fi
  ip netns del "$C" 2>/dev/null || true; ip netns del "$H" 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$H"; ip netns add "$C"
ip -n "$H" link set lo up; ip -n "$C" link set lo up

mkdir -p "$work/bin"
for p in calico-cni calico-ipam; do ln -s "$BIN/$p" "$work/bin/$p"; done
ln -s "$BIN/calico-cni" "$work/bin/calico"
for p in ptp host-local; do ln -s "/usr/lib/cni/$p" "$work/bin/$p"; done

"$BIN/calicoctl" --datastore-path "$work/store.db" pool add 10.230.0.0/16 >/dev/null
cat > "$work/calico.json" <<CONF
{"cniVersion":"1.0.0","name":"bench","type":"calico","nodename":"bench","log_level":"warning",
 "datastore_path":"$work/store.db","mtu_file":"$work/mtu","ipam":{"type":"calico-ipam"}}
CONF
cat > "$work/ptp.json" <<CONF
{"cniVersion":"1.0.0","name":"bench-ptp","type":"ptp",
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.231.0.0/16"}]],"dataDir":"$work/hl"}}
CONF

export CNI_PATH=$work/bin
ip netns exec "$H" hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/cni.json" \
  -n "ptp+host-local" "$BIN/cni-cycle $work/bin/ptp $work/ptp.json --netns /var/run/netns/$C --id b1" \
  -n "calico-cni+calico-ipam" "$BIN/cni-cycle $work/bin/calico $work/calico.json --netns /var/run/netns/$C --id b2"

ratio() { # ratio JSON LABEL GOAL: the same-run ratio of one hyperfine export
  python3 - "$@" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
ptp, cal = r["ptp+host-local"]["mean"] * 1e3, r["calico-cni+calico-ipam"]["mean"] * 1e3
print(f"{sys.argv[2]}: ptp+host-local {ptp:.2f} ms, calico-cni+calico-ipam {cal:.2f} ms -> ratio {cal/ptp:.2f} ({sys.argv[3]})")
open(sys.argv[1] + ".ratio", "w").write(f"{cal/ptp}")
PY
}
ratio "$work/cni.json" "ADD+DEL cycle" "goal <= 0.25"

for plugin in ptp calico; do
  conf=$work/ptp.json; [[ $plugin == calico ]] && conf=$work/calico.json
  echo "split, $plugin: $(ip netns exec "$H" "$BIN/cni-cycle" "$work/bin/$plugin" "$conf" --netns "/var/run/netns/$C" --id split --split 50)"
done

step_time() { # mean ms of a bare `ip link del` of a veth pair, the kernel's share of any DEL
  local t0 t1 total=0 n=20
  for _ in $(seq $n); do
    ip -n "$H" link add vb0 type veth peer name eth9 netns "$C"
    t0=$(date +%s%N); ip -n "$H" link del vb0; t1=$(date +%s%N)
    total=$((total + t1 - t0))
  done
  echo "scale=2; $total / $n / 1000000" | bc
}
echo "kernel floor: 'ip link del' of one veth pair takes $(step_time) ms (incl. ~1 ms for the ip exec)"

one() { # one PLUGIN CONF COMMAND ID: run once inside the host netns with debug logs
  CNI_COMMAND=$3 CNI_CONTAINERID=$4 CNI_NETNS=/var/run/netns/$C CNI_IFNAME=eth0 \
    ip netns exec "$H" "$@" >/dev/null
}
rss() { # peak RSS (KiB) of one ADD of PLUGIN, then DEL it
  local kib
  kib=$( { CNI_COMMAND=ADD CNI_CONTAINERID=$3 CNI_NETNS=/var/run/netns/$C CNI_IFNAME=eth0 \
      ip netns exec "$H" /usr/bin/time -v "$1" < "$2" >/dev/null; } 2>&1 | awk '/Maximum resident/ {print $6}')
  CNI_COMMAND=DEL CNI_CONTAINERID=$3 CNI_NETNS=/var/run/netns/$C CNI_IFNAME=eth0 ip netns exec "$H" "$1" < "$2" >/dev/null
  echo "$kib"
}
echo "peak RSS of one ADD (KiB, goal <= 4096): calico-cni $(rss "$work/bin/calico" "$work/calico.json" r1), ptp $(rss "$work/bin/ptp" "$work/ptp.json" r2)"
echo "peak RSS of one calico-ipam ADD (KiB): $(CNI_COMMAND=ADD CNI_CONTAINERID=r3 CNI_NETNS=/x CNI_IFNAME=eth0 /usr/bin/time -v "$BIN/calico-ipam" < "$work/calico.json" 2>&1 >/dev/null | awk '/Maximum resident/ {print $6}')"

sed 's/"log_level":"warning"/"log_level":"debug"/' "$work/calico.json" > "$work/debug.json"
log=$(CNI_COMMAND=ADD CNI_CONTAINERID=cnt CNI_NETNS=/var/run/netns/$C CNI_IFNAME=eth0 \
      ip netns exec "$H" strace -f -qq -e trace=execve -o "$work/strace" "$work/bin/calico" < "$work/debug.json" 2>&1 >/dev/null || true)
echo "per ADD: $(grep -c 'execve(' "$work/strace" 2>/dev/null || echo '?') process exec(s) (calico-ipam runs inside calico-cni);" \
     "$(grep -o 'netlink_requests=[0-9]*' <<<"$log" | tail -1)"
CNI_COMMAND=DEL CNI_CONTAINERID=cnt CNI_NETNS=/var/run/netns/$C CNI_IFNAME=eth0 ip netns exec "$H" "$work/bin/calico" < "$work/calico.json"

# The same comparison with calico-node running on this host (watching the same store, its
# routes and MTU file in the bench's own netns and work dir): the plugins must stay as fast.
source scripts/lib/bench-agent.sh
start_agent "$H" warning
ip netns exec "$H" hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/agent.json" \
  -n "ptp+host-local" "$BIN/cni-cycle $work/bin/ptp $work/ptp.json --netns /var/run/netns/$C --id a1" \
  -n "calico-cni+calico-ipam" "$BIN/cni-cycle $work/bin/calico $work/calico.json --netns /var/run/netns/$C --id a2" >/dev/null
ratio "$work/agent.json" "with calico-node running" "goal: within 5% of the ratio without it"
kill -0 "$agent" || { echo "calico-node exited during the run:"; cat "$work/agent.log"; exit 1; }
echo "with/without calico-node: $(python3 -c "import sys; print(f'{float(open(sys.argv[1]).read())/float(open(sys.argv[2]).read()):.3f}')" "$work/agent.json.ratio" "$work/cni.json.ratio")x (goal <= 1.05)"
