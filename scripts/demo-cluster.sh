#!/usr/bin/env bash
# A three-host cluster in VXLAN mode: three "hosts" (network namespaces on one bridge),
# etcd in a namespace of its own, a calico-node on each host, one container per host added
# by calico-cni; the containers ping each other across hosts, then `calicoctl node show`,
# then everything is cleaned up. Run as root on Debian 12.
#
# Nothing touches the machine's own network: every address lives in namespaces made here.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
command -v etcd >/dev/null || { echo "demo-cluster: etcd is missing (apt-get install etcd-server)" >&2; exit 1; }

source scripts/lib/demo-bin.sh
id=$$
BR=calidc-br-$id ETCD=calidc-etcd-$id
HOSTS=(calidc-h1-$id calidc-h2-$id calidc-h3-$id)
CTRS=(calidc-c1-$id calidc-c2-$id calidc-c3-$id)
ETCD_URL=http://10.99.0.100:2379
work=$(mktemp -d /tmp/calico-demo-cluster.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in "${CTRS[@]}" "${HOSTS[@]}" "$ETCD" "$BR"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
attach() { # attach NETNS PORT ADDRESS: a veth from the bridge into NETNS as eth0
  ip -n "$BR" link add "$2" type veth peer name eth0 netns "$1"
  ip -n "$BR" link set "$2" master br0 up
  ip -n "$1" addr add "$3/24" dev eth0
  ip -n "$1" link set eth0 up
}

step "a bridge, etcd at 10.99.0.100 and three hosts at 10.99.0.1-3, each a netns"
for ns in "$BR" "$ETCD" "${HOSTS[@]}" "${CTRS[@]}"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link set br0 up
attach "$ETCD" pe 10.99.0.100
for i in 0 1 2; do attach "${HOSTS[$i]}" "p$i" "10.99.0.$((i + 1))"; done
ip netns exec "$ETCD" etcd --data-dir "$work/etcd" --listen-client-urls "$ETCD_URL" \
  --advertise-client-urls "$ETCD_URL" --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
  --log-level error >"$work/etcd.log" 2>&1 &
pids+=($!)

ctl() { ETCD_ENDPOINTS=$ETCD_URL ip netns exec "${HOSTS[0]}" "$BIN/calicoctl" "$@"; }
for _ in $(seq 100); do ctl pool show >/dev/null 2>&1 && break; sleep 0.1; done
step "calicoctl pool add 10.98.0.0/16 --vxlan"
ctl pool add 10.98.0.0/16 --vxlan

step "calico-node on each host (logs in $work/host*.log)"
for i in 0 1 2; do
  ip netns exec "${HOSTS[$i]}" "$BIN/calico-node" --nodename "host$((i + 1))" --etcd-endpoints "$ETCD_URL" \
    --health-listen 127.0.0.1:9099 --mtu-file "$work/mtu$i" \
    --bird-config "$work/bird$i.conf" --bird-socket "$work/bird$i.ctl" >"$work/host$((i + 1)).log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    ip netns exec "${HOSTS[$i]}" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9099 && printf "GET /readiness HTTP/1.0\r\n\r\n" >&3 && grep -q " 200 " <&3' \
      2>/dev/null && break
    sleep 0.1
  done
done

mkdir -p "$work/bin"
ln -s "$BIN/calico-cni" "$work/bin/calico"
ln -s "$BIN/calico-ipam" "$work/bin/calico-ipam"
ips=()
step "one container per host, added by calico-cni"
for i in 0 1 2; do
  cat >"$work/net$i.conf" <<CONF
{ "cniVersion": "1.0.0", "name": "demo-cluster", "type": "calico", "nodename": "host$((i + 1))",
  "etcd_endpoints": "$ETCD_URL", "mtu_file": "$work/mtu$i", "log_level": "warning",
  "ipam": { "type": "calico-ipam", "lock_file": "$work/ipam$i.lock" } }
CONF
  CNI_COMMAND=ADD CNI_CONTAINERID=demo-$i CNI_NETNS=/var/run/netns/${CTRS[$i]} CNI_IFNAME=eth0 \
    CNI_PATH=$work/bin ip netns exec "${HOSTS[$i]}" "$work/bin/calico" <"$work/net$i.conf" >"$work/c$i.json"
  ips+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$work/c$i.json")")
  echo "host$((i + 1)): container ${ips[$i]}"
done
sleep 0.5

step "host1's routes (proto 80), its vxlan.calico, and the MTU it gave workloads"
ip -n "${HOSTS[0]}" route show proto 80
ip -n "${HOSTS[0]}" -d link show vxlan.calico | sed -n '1,3p'
ip netns exec "${HOSTS[0]}" bridge fdb show dev vxlan.calico
echo "MTU file: $(cat "$work/mtu0"); container 1: $(ip -n "${CTRS[0]}" -o link show eth0 | grep -o 'mtu [0-9]*')"

step "pings across hosts"
ip netns exec "${CTRS[0]}" ping -c 2 -W 2 "${ips[1]}"
ip netns exec "${CTRS[1]}" ping -c 2 -W 2 "${ips[2]}"
ip netns exec "${CTRS[2]}" ping -c 2 -W 2 "${ips[0]}"

step "calicoctl node show (host1's BGP sessions, from its BIRD)"
ctl node show --bird-socket "$work/bird0.ctl"
step "demo finished: stopping the agents and etcd, deleting the namespaces"
