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

want bird bird2                        # calico-node's BGP (the BIRD daemon and birdc)
# The IPIP tests boot Debian's own kernel under qemu (this machine's kernel has no
# CONFIG_NET_IPIP): its image, and qemu from backports (bookworm's 7.2 conflicts with the
# qemu-utils 10.x the machine ships). The tests boot the newest /boot/vmlinuz-*-amd64, whose
# modules must be there too (a half-installed image is installed again).
kernel=$(ls -1v /boot/vmlinuz-*-amd64 2>/dev/null | tail -n 1 || true)  # none yet: ls fails (pipefail)
[[ -n $kernel && -e /lib/modules/${kernel#/boot/vmlinuz-}/modules.dep ]] || need+=(linux-image-amd64)
need_backports=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_backports+=(qemu-system-x86)

backports=/etc/apt/sources.list.d/bookworm-backports.sources
if ((${#need[@]} + ${#need_backports[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  if ((${#need_backports[@]})) && ! grep -qs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/*; then
    # The same mirror and key as the bookworm entry of debian.sources. Backports has the
    # default low pin: nothing is upgraded from it unless asked for with -t.
    stanza=$(awk -v RS= '/(^|\n)Suites:[^\n]*bookworm( |\n|$)/' /etc/apt/sources.list.d/debian.sources | head -n 20)
    uris=$(sed -n 's/^URIs:[[:space:]]*//p' <<<"$stanza" | head -n 1)
    signed=$(sed -n 's/^Signed-By:[[:space:]]*//p' <<<"$stanza" | head -n 1)
    [[ -n $uris ]] || { echo "deps: no bookworm entry in /etc/apt/sources.list.d/debian.sources to copy for backports" >&2; exit 1; }
    echo "deps: adding $backports (from $uris)" >&2
    {
      echo "Types: deb"
      echo "URIs: $uris"
      echo "Suites: bookworm-backports"
      echo "Components: main"
      [[ -z $signed ]] || echo "Signed-By: $signed"
    } >"$backports"
  fi
  echo "deps: installing ${need[*]}${need_backports:+ ${need_backports[*]} (backports)}" >&2
  apt-get update -qq
  if ((${#need[@]})); then
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ((${#need_backports[@]})); then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need_backports[@]}" >/dev/null
  fi
fi

# virtme-ng (`vng`) boots that kernel with the host's root filesystem as the guest's.
if ! command -v vng >/dev/null 2>&1; then
  echo "deps: installing virtme-ng (pip)" >&2
  python3 -m pip install -q --root-user-action=ignore virtme-ng || python3 -m pip install -q --root-user-action=ignore --break-system-packages virtme-ng
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
  command -v vng >/dev/null 2>&1 || { echo "deps: vng is not on PATH after pip install virtme-ng" >&2; exit 1; }
fi

