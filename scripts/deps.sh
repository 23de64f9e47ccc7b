#!/usr/bin/env bash
# Install what building, testing and demoing need, skipping what is already there.
# Debian 12, as root. Idempotent; safe to run before every test run.
set -euo pipefail

need=()
want() { # want <command-or-path> <debian package>
  if [[ $1 == /* ]]; then [[ -e $1 ]] || need+=("$2"); else command -v "$1" >/dev/null 2>&1 || need+=("$2"); fi
}
want protoc protobuf-compiler          # etcd-client compiles its protos at build time
want /usr/include/google/protobuf/descriptor.proto libprotobuf-dev  # ...and imports these
want /usr/bin/etcd etcd-server         # real etcd for the tests
want etcdctl etcd-client
want /usr/lib/cni/host-local containernetworking-plugins  # chaining + performance baseline
want hyperfine hyperfine               # benchmarks
want iptables iptables
want nft nftables                      # podman e2e: drop the nat tables portmap made on the host
want ip iproute2
want ping iputils-ping
want /usr/bin/time time                # peak RSS in the benchmark
want podman podman                     # a real runtime in the e2e tests
want runc runc
want /bin/busybox busybox-static       # rootfs for podman containers
want nc netcat-openbsd
want openssl openssl                   # TLS certificates for the etcd TLS test
want cc gcc
want nm binutils                       # scripts/link/hot-first.sh reads symbol names
want valgrind valgrind                 # scripts/link/profile-hot.sh
want strace strace                     # bench: counts process execs per ADD
want bc bc

if ((${#need[@]})); then
  echo "deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [[ -x $HOME/.cargo/bin/cargo ]] && export PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || { echo "deps: cargo (Rust 1.89+) is required" >&2; exit 1; }
