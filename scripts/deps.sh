#!/usr/bin/env bash
# Install what building, testing and demoing need, skipping what is already there.
# Debian 12, as root. Idempotent; safe to run before every test run.
set -euo pipefail

# Rust first: without it nothing below is of any use. rust-version in Cargo.toml is 1.89;
# the release build's hot-first linking needs 1.90+ on x86_64 (its rust-lld; README).
if ! command -v cargo >/dev/null 2>&1; then
  [[ -x $HOME/.cargo/bin/cargo ]] && export PATH=$HOME/.cargo/bin:$PATH
fi
rust_missing() {
  echo "deps: $1; Rust 1.89 or newer is required (https://rustup.rs, then: rustup update stable)" >&2
  exit 1
}
command -v cargo >/dev/null 2>&1 || rust_missing "cargo is not installed (or not on PATH)"
cargo_version=$(cargo -V 2>/dev/null | awk '{print $2}')
IFS=. read -r rust_major rust_minor _ <<<"${cargo_version:-0.0.0}"
if ! [[ $rust_major =~ ^[0-9]+$ && $rust_minor =~ ^[0-9]+$ ]] || ((rust_major == 1 && rust_minor < 89)); then
  rust_missing "cargo ${cargo_version:-?} is too old"
fi

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

