# Sourced by scripts that need a throwaway etcd: start_etcd DIR starts one on two free
# loopback ports with its data in DIR/etcd, waits until it is healthy and sets ETCD_URL and
# ETCD_PID; stop_etcd stops it (call it from the caller's EXIT trap). With ETCD_NETNS set,
# etcd runs (and its health is checked) inside that network namespace.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_etcd() {
  local dir=$1 client_port peer_port
  client_port=$(free_port); peer_port=$(free_port)
  ETCD_URL=http://127.0.0.1:$client_port
  local in=()
  [[ -n ${ETCD_NETNS:-} ]] && in=(ip netns exec "$ETCD_NETNS")
  "${in[@]}" etcd --name local --data-dir "$dir/etcd" --log-level error \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "local=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 &
  ETCD_PID=$!
  for _ in $(seq 100); do
    ETCDCTL_API=3 "${in[@]}" etcdctl --endpoints "$ETCD_URL" --dial-timeout=1s endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$dir/etcd.log" >&2
  return 1
}

stop_etcd() {
  if [[ -n ${ETCD_PID:-} ]]; then kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; fi
}
