#!/usr/bin/env bash
# Edge benchmark: what outgoing NAT and port mapping add to calico-cni's ADD+DEL cycle, each
# figure a same-run hyperfine ratio through the same driver (cni-cycle), inside a netns
# playing the host (its own `inet calico` table, its own iptables for portmap):
#   1. a nat-outgoing pool vs a plain pool (goal <= 1.05);
#   2. one port mapping, native (calico-cni alone, capability portMappings) vs calico-cni
#      with Debian's portmap chained (goal <= 0.15), and vs our own plain cycle (<= 1.15);
#   3. with 1,000 port mappings present: an ADD+DEL with one more vs one with none
#      (goal <= 1.1), and the ADDs alone (--split medians).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
BIN=$(scripts/build-release.sh -q -p calico-cni -p calico-ipam -p calicoctl -p calico-tests)
RUNS=${RUNS:-100}
id=$$
H=caliedge-h-$id C=caliedge-c-$id F=caliedge-f-$id
work=$(mktemp -d /tmp/calico-edge.XXXXXX)
cleanup() {
  for ns in "$C" "$F" "$H"; do ip netns del "$ns" 2>/dev/null || true; done; rm -rf "$work"
}
trap cleanup EXIT
for ns in "$H" "$C" "$F"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done

mkdir -p "$work/bin"
ln -s "$BIN/calico-cni" "$work/bin/calico"
ln -s "$BIN/calico-ipam" "$work/bin/calico-ipam"
ln -s /usr/lib/cni/portmap "$work/bin/portmap"
ctl() { "$BIN/calicoctl" --datastore-path "$work/store.db" "$@" >/dev/null; }
ctl pool add 10.230.0.0/16 --nat-outgoing
ctl pool add 10.232.0.0/16

# calico's netconf on POOL, with EXTRA fields (JSON members, may be empty).
calico() {
  echo "{\"cniVersion\":\"1.0.0\",\"name\":\"bench\",\"type\":\"calico\",\"nodename\":\"bench\",\"log_level\":\"warning\",
   \"datastore_path\":\"$work/store.db\",\"mtu_file\":\"$work/mtu\",\"ipam\":{\"type\":\"calico-ipam\",\"ipv4_pools\":[\"$1\"]}$2}"
}
one='{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}'
calico 10.230.0.0/16 "" > "$work/nat.json"
calico 10.232.0.0/16 "" > "$work/plain.json"
calico 10.232.0.0/16 ",\"capabilities\":{\"portMappings\":true},\"runtimeConfig\":$one" > "$work/native.json"
python3 - "$work" "$one" <<'PY'
import json, sys
work, one = sys.argv[1], json.loads(sys.argv[2])
calico = json.load(open(f"{work}/plain.json"))
for k in ("cniVersion", "name"):
    del calico[k]
portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True, "runtimeConfig": one}
json.dump({"cniVersion": "1.0.0", "name": "bench", "plugins": [calico, portmap]}, open(f"{work}/chained.conflist", "w"))
fill = json.load(open(f"{work}/native.json"))
fill["runtimeConfig"] = {"portMappings": [
    {"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"} for i in range(1000)]}
json.dump(fill, open(f"{work}/fill.json", "w"))
PY

export CNI_PATH=$work/bin
cycle() { echo "$BIN/cni-cycle $work/bin/calico $work/$1 --netns /var/run/netns/$C --id $2"; }
bench() { # bench NAME -- hyperfine's -n/command pairs
  local name=$1; shift
  ip netns exec "$H" hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/out-$name.json" "$@"
}
ratio() { # ratio NAME A B GOAL: mean(A)/mean(B) of one run
  python3 - "$work/out-$1.json" "$2" "$3" "$4" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
a, b = r[sys.argv[2]], r[sys.argv[3]]
m = lambda k: (a[k] * 1e3, b[k] * 1e3, a[k] / b[k])
print("{} / {}: mean {:.2f} / {:.2f} ms -> {:.3f}, median {:.2f} / {:.2f} ms -> {:.3f} ({})".format(
    sys.argv[2], sys.argv[3], *m("mean"), *m("median"), sys.argv[4]))
PY
}

bench nat -n "nat-outgoing pool" "$(cycle nat.json n1)" -n "plain pool" "$(cycle plain.json p1)"
bench ports -n "native mapping" "$(cycle native.json m1)" \
  -n "calico-cni+portmap" "$BIN/cni-cycle $work/bin/calico $work/chained.conflist --netns /var/run/netns/$C --id c1" \
  -n "plain" "$(cycle plain.json p2)"

# Mapping vs plain on their own, in both orders (hyperfine runs one command's runs, then
# the other's: on a noisy host the order matters), without portmap's iptables in between.
bench mp1 -n "native mapping" "$(cycle native.json m3)" -n "plain" "$(cycle plain.json p4)"
bench mp2 -n "plain" "$(cycle plain.json p5)" -n "native mapping" "$(cycle native.json m4)"

# 1,000 mappings held by one container of its own (host ports 20000-20999).
ip netns exec "$H" "$BIN/cni-cycle" "$work/bin/calico" "$work/fill.json" --netns "/var/run/netns/$F" --id fill --fill 1
held=$(ip netns exec "$H" nft list map inet calico ports4 | grep -o 'comment' | wc -l)
bench thousand -n "one more mapping" "$(cycle native.json m2)" -n "no mapping" "$(cycle plain.json p3)"
split() { ip netns exec "$H" "$BIN/cni-cycle" "$work/bin/calico" "$work/$1" --netns "/var/run/netns/$C" --id "$2" --split 50; }
split_one=$(split native.json s1)
split_none=$(split plain.json s2)

echo
echo "== bench/edge.sh, $RUNS runs each, ADD+DEL cycles (same-run ratios) =="
ratio nat "nat-outgoing pool" "plain pool" "goal <= 1.05"
ratio ports "native mapping" "calico-cni+portmap" "goal <= 0.15"
ratio ports "native mapping" "plain" "after portmap's runs; goal <= 1.15"
ratio mp1 "native mapping" "plain" "mapping first"
ratio mp2 "native mapping" "plain" "plain first"
python3 - "$work/out-mp1.json" "$work/out-mp2.json" <<'PY'
import json, sys
tot = {}
for f in sys.argv[1:]:
    for x in json.load(open(f))["results"]:
        tot.setdefault(x["command"], []).append((x["mean"], x["median"]))
(am, amed), (bm, bmed) = [tuple(sum(v) / 2 for v in zip(*tot[c])) for c in ("native mapping", "plain")]
print(f"native mapping / plain, both orders: mean {am/bm:.3f}, median {amed/bmed:.3f} (goal <= 1.15)")
PY
echo "with $held port mappings present:"
ratio thousand "one more mapping" "no mapping" "goal <= 1.1"
echo "  ADD alone: one more mapping: $split_one; no mapping: $split_none"
python3 - "$work/out-mp1.json" "$work/out-thousand.json" <<'PY'
import json, sys
m = lambda f, c: {x["command"]: x["mean"] * 1e3 for x in json.load(open(f))["results"]}[c]
a, b = m(sys.argv[2], "one more mapping"), m(sys.argv[1], "native mapping")
print(f"  (across runs) a mapped cycle with 1,000 present {a:.2f} ms vs with none {b:.2f} ms -> {a/b:.3f}")
PY
