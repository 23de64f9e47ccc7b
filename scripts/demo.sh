#!/usr/bin/env bash
# The quickstart: build, then attach two "containers" (network namespaces) through
# calico-cni on the embedded store, show that they ping each other and the host, show
# `calicoctl ipam show`, and clean everything up. Run as root on Debian 12.
#
# Nothing touches the machine's own network: a namespace plays the host, and the plugins
# run inside it exactly as a runtime living there would exec them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

echo "demo: building the binaries (cargo build --bins)..." >&2
cargo build --bins --locked -q
source scripts/lib/target-dir.sh
BIN=$TARGET_DIR/debug
id=$$
H=calidemo-host-$id C1=calidemo-a-$id C2=calidemo-b-$id
work=$(mktemp -d /tmp/calico-demo.XXXXXX)
cleanup() {
  for ns in "$C1" "$C2" "$H"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a host netns with an uplink, and two container netns"
for ns in "$H" "$C1" "$C2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$H" link add up0 type veth peer name up1
ip -n "$H" addr add 10.255.255.1/30 dev up0
ip -n "$H" link set up0 up && ip -n "$H" link set up1 up
ip -n "$H" route add default via 10.255.255.2

step "CNI_PATH with calico-cni (also as 'calico') and calico-ipam"
mkdir -p "$work/bin"
ln -s "$BIN/calico-cni" "$work/bin/calico"
ln -s "$BIN/calico-ipam" "$work/bin/calico-ipam"
ls -l "$work/bin"

export CALICO_DATASTORE_PATH=$work/calico-store.db
step "calicoctl pool add 10.77.0.0/24 --nat-outgoing"
"$BIN/calicoctl" pool add 10.77.0.0/24 --nat-outgoing
"$BIN/calicoctl" pool show

cat > "$work/net.conf" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "demo-net",
  "type": "calico",
  "nodename": "demo-node",
  "mtu": 1500,
  "datastore_path": "$CALICO_DATASTORE_PATH",
  "log_level": "warning",
  "ipam": { "type": "calico-ipam", "ipv4_pools": ["10.77.0.0/24"] }
}
CONF
step "the netconf"
cat "$work/net.conf"

cni() { # cni COMMAND CONTAINER-ID NETNS
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/var/run/netns/$3 CNI_IFNAME=eth0 CNI_PATH=$work/bin \
    ip netns exec "$H" "$work/bin/calico" < "$work/net.conf"
}
step "ADD container A and container B (as a runtime would)"
cni ADD demo-a "$C1" | tee "$work/a.json"
cni ADD demo-b "$C2" | tee "$work/b.json"
ipa=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$work/a.json")
ipb=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$work/b.json")

step "inside container A"
ip -n "$C1" -4 addr show eth0
ip -n "$C1" route
step "on the host: one cali veth and one /32 route per container"
ip -n "$H" -br link show | grep cali
ip -n "$H" route | grep cali

step "A ($ipa) -> B ($ipb), B -> A, A -> host (10.255.255.1)"
ip netns exec "$C1" ping -c 2 -W 2 "$ipb"
ip netns exec "$C2" ping -c 2 -W 2 "$ipa"
ip netns exec "$C1" ping -c 2 -W 2 10.255.255.1

step "calicoctl ipam show"
"$BIN/calicoctl" ipam show

step "DEL both, then check nothing is left"
cni DEL demo-a "$C1"
cni DEL demo-b "$C2"
"$BIN/calicoctl" ipam show
"$BIN/calicoctl" ipam check
if ip -n "$H" link | grep -q cali; then echo "cali links left behind!" >&2; exit 1; fi
step "demo finished: cleaning up the namespaces"
