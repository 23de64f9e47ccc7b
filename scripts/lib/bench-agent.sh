# Sourced by the bench scripts that run calico-node beside the plugins: `start_agent NETNS
# LOG_LEVEL` gives the bench host netns an uplink (10.229.0.1/24 on a veth whose ends are
# both inside it, so nothing leaves the netns), starts calico-node there on the bench's
# embedded store ($work/store.db, MTU file and log in $work), sets `agent` to its pid (the
# caller's cleanup kills it), and waits until it has written the MTU file.
start_agent() {
  local ns=$1 level=$2
  ip -n "$ns" link add up0 type veth peer name up1
  ip -n "$ns" addr add 10.229.0.1/24 dev up0
  ip -n "$ns" link set up0 up; ip -n "$ns" link set up1 up
  ip netns exec "$ns" "$BIN/calico-node" --nodename bench --ip 10.229.0.1/24 --datastore-path "$work/store.db" \
    --mtu-file "$work/mtu" --bgp=none --log-level "$level" 2>"$work/agent.log" &
  agent=$!
  for _ in $(seq 100); do [[ -s $work/mtu ]] && break; sleep 0.05; done
  [[ -s $work/mtu ]] || { echo "calico-node did not start:"; cat "$work/agent.log"; exit 1; }
}
