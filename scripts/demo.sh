#!/usr/bin/env bash
# The quickstart: build, then attach two "containers" (network namespaces) through
# calico-cni on the embedded store, show that they ping each other and the host, that A's
# traffic to an "outside" netns (the internet) leaves NATed to the host's address, that B's
# mapped host port is reached from outside once the profile allows it (the seed's `calicoctl
# profile demo-net rule add inbound allow tcp to ports 80`), that `calicoctl container A ip
# add ipv4` gives A a second address B reaches, `nft list table inet calico` and `inet
# calico-policy`, `calicoctl ipam show` and `calicoctl endpoint show`, and clean everything
# up. Run as root on Debian 12.
#
# Nothing touches the machine's own network: a namespace plays the host, and the plugins
# run inside it exactly as a runtime living there would exec them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

source scripts/lib/demo-bin.sh
id=$$
H=calidemo-host-$id C1=calidemo-a-$id C2=calidemo-b-$id O=demo-outside-$id  # (no "cali" in it: the check below greps for cali links)
work=$(mktemp -d /tmp/calico-demo.XXXXXX)
cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  for ns in "$C1" "$C2" "$H" "$O"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a host netns whose uplink leads to an outside netns (10.255.255.2), and two container netns"
for ns in "$H" "$C1" "$C2" "$O"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$H" link add up0 type veth peer name up1 netns "$O"
ip -n "$H" addr add 10.255.255.1/30 dev up0
ip -n "$O" addr add 10.255.255.2/30 dev up1
ip -n "$H" link set up0 up && ip -n "$O" link set up1 up
ip -n "$H" route add default via 10.255.255.2
# The outside knows no route to the pool: only NATed traffic can get answers.

step "CNI_PATH with calico-cni (also as 'calico') and calico-ipam"
mkdir -p "$work/bin"
ln -s "$BIN/calico-cni" "$work/bin/calico"
ln -s "$BIN/calico-ipam" "$work/bin/calico-ipam"
ls -l "$work/bin"

export CALICO_DATASTORE_PATH=$work/calico-store.db
step "calicoctl pool add 10.77.0.0/24 --nat-outgoing"
"$BIN/calicoctl" pool add 10.77.0.0/24 --nat-outgoing
"$BIN/calicoctl" pool show
# Profiles are enforced: the network's profile (named after the network) admits only its own
# containers until a rule opens more. The seed's flow: allow inbound TCP to the mapped port.
step "calicoctl profile add demo-net; calicoctl profile demo-net rule add inbound allow tcp to ports 80"
"$BIN/calicoctl" profile add demo-net
"$BIN/calicoctl" profile demo-net rule add inbound allow tcp to ports 80
"$BIN/calicoctl" profile demo-net rule show

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
# B's: the same, with host port 8080 mapped to its port 80, as a runtime passes `-p 8080:80`
# to a plugin declaring the portMappings capability.
python3 - "$work/net.conf" "$work/ports.conf" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["capabilities"] = {"portMappings": True}
c["runtimeConfig"] = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
step "the netconf (B's adds capabilities and runtimeConfig.portMappings)"
cat "$work/net.conf"

cni() { # cni COMMAND CONTAINER-ID NETNS [CONF]
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/var/run/netns/$3 CNI_IFNAME=eth0 CNI_PATH=$work/bin \
    ip netns exec "$H" "$work/bin/calico" < "${4:-$work/net.conf}"
}
step "ADD container A, and container B with host port 8080 -> 80 (as a runtime would)"
cni ADD demo-a "$C1" | tee "$work/a.json"
cni ADD demo-b "$C2" "$work/ports.conf" | tee "$work/b.json"
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

step "outgoing NAT: A -> a listener in the outside netns, which sees the host's address"
ip netns exec "$O" timeout 10 nc -lvn 10.255.255.2 7000 2>"$work/nat.log" >/dev/null &
sleep 0.3
echo hello-from-A | ip netns exec "$C1" nc -N -w 3 10.255.255.2 7000
wait $! || true
cat "$work/nat.log"
grep -q "10.255.255.1 " "$work/nat.log" || { echo "the outside did not see the host's address" >&2; exit 1; }

step "port mapping: the outside -> 10.255.255.1:8080 reaches B's port 80"
ip netns exec "$C2" timeout 10 nc -lvn 80 2>"$work/port.log" >"$work/port.got" &
sleep 0.3
echo hello-from-outside | ip netns exec "$O" nc -N -w 3 10.255.255.1 8080
wait $! || true
echo "B got: $(cat "$work/port.got") ($(grep -o 'received on [0-9.]* ' "$work/port.log" || echo '?')- the client's own address)"
grep -q hello-from-outside "$work/port.got" || { echo "the mapped port did not reach B" >&2; exit 1; }

step "calicoctl container demo-a ip add ipv4 (run in the host netns): A gets a second address, and B reaches it"
ip netns exec "$H" "$BIN/calicoctl" container demo-a ip add ipv4 | tee "$work/ipadd.out"
ipa2=$(awk '{print $2}' "$work/ipadd.out")
ip -n "$C1" -4 addr show eth0
ip netns exec "$C2" ping -c 2 -W 2 "$ipa2"

step "nft list table inet calico (in the host netns): the pool sets and B's mapping"
ip netns exec "$H" nft list table inet calico
step "nft list table inet calico-policy: the endpoints' verdict maps, the profile's chains and tag set"
ip netns exec "$H" nft list table inet calico-policy

step "calicoctl ipam show; calicoctl endpoint show"
"$BIN/calicoctl" ipam show
"$BIN/calicoctl" endpoint show

step "DEL both, then check nothing is left"
cni DEL demo-a "$C1"
cni DEL demo-b "$C2" "$work/ports.conf"
if ip netns exec "$H" nft list table inet calico | grep -q "demo-net/"; then echo "a port mapping left behind!" >&2; exit 1; fi
"$BIN/calicoctl" ipam show
"$BIN/calicoctl" ipam check
if ip -n "$H" link | grep -q cali; then echo "cali links left behind!" >&2; exit 1; fi
step "demo finished: cleaning up the namespaces"
