#!/usr/bin/env bash
# Install calico-cni, calico-ipam, calicoctl and the `calico` link into a CNI bin directory,
# calicoctl and calico-node onto the PATH, a conflist into a CNI config directory, a systemd
# unit for calico-node (written, not started), and the IP pools that conflist names. Run as
# root for the default directories.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=
bin_dir=
conf_dir=
ctl_dir=
unit_dir=
node=1
conf_file=$repo/netconf-examples/cnitool-podman.conflist
conf_name=10-calico.conflist
from=
force=0
pools=1

usage() {
  cat <<EOF
Usage: $0 [options]

Installs calico-cni, calico-ipam and calicoctl, plus the link calico -> calico-cni (so
netconfs with "type": "calico" work), the link calicoctl in --ctl-dir, and a conflist for
runtimes to read. Installs the agent, calico-node, into --ctl-dir, and its systemd unit
calico-node.service into --unit-dir, with the conflist's datastore (and nodename, if it
has one); the unit is neither enabled nor started. Then creates, with calicoctl, the IP
pools the conflist's ipam section names (ipv4_pools, ipv6_pools) in the datastore it names,
unless they exist.

Before installing anything it checks that every other plugin the conflist chains (the
default one chains portmap) is in --bin-dir, /opt/cni/bin or /usr/lib/cni; a missing
plugin of Debian's containernetworking-plugins package is installed with apt-get.

Options:
  --prefix DIR      put the default directories below DIR (e.g. DIR/opt/cni/bin); the
                    datastore the conflist names is used as it is
  --bin-dir DIR     where the plugins go (default: /opt/cni/bin)
  --conf-dir DIR    where the conflist goes (default: /etc/cni/net.d)
  --ctl-dir DIR     where the calicoctl link and calico-node go (default: /usr/local/bin)
  --unit-dir DIR    where calico-node.service goes (default: /etc/systemd/system)
  --conf-file FILE  the conflist to install (default: netconf-examples/cnitool-podman.conflist:
                    calico + portmap on the embedded store /var/lib/calico/calico-store.db,
                    pool 10.199.0.0/24)
  --conf-name NAME  its name in --conf-dir (default: 10-calico.conflist)
  --from DIR        take the binaries from DIR (default: built by scripts/build-release.sh,
                    i.e. cargo build --release, with cargo's progress on stderr)
  --force           replace an installed conflist or unit that differs from ours
  --no-pool         do not create the conflist's pools
  --no-node         install neither calico-node nor its unit
  -h, --help        this text

Binaries and links are replaced when they differ (atomically: a running plugin keeps its
copy). An installed conflist or unit that differs is left alone unless --force; an
identical one is a no-op. An existing pool is left as it is. Without BIRD (bird2) on the
PATH, the unit runs calico-node with --bgp=none, and says so.
Exit status: 0 done (or nothing to do), 1 refused or failed, 2 bad usage.
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }

while (($#)); do
  case $1 in
    --prefix|--bin-dir|--conf-dir|--ctl-dir|--unit-dir|--conf-file|--conf-name|--from)
      (($# >= 2)) || { echo "install.sh: $1 needs a value" >&2; usage >&2; exit 2; }
      case $1 in
        --prefix) prefix=$2 ;;
        --bin-dir) bin_dir=$2 ;;
        --conf-dir) conf_dir=$2 ;;
        --ctl-dir) ctl_dir=$2 ;;
        --unit-dir) unit_dir=$2 ;;
        --conf-file) conf_file=$2 ;;
        --conf-name) conf_name=$2 ;;
        --from) from=$2 ;;
      esac
      shift 2 ;;
    --force) force=1; shift ;;
    --no-pool) pools=0; shift ;;
    --no-node) node=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

prefix=${prefix%/}
bin_dir=${bin_dir:-$prefix/opt/cni/bin}
conf_dir=${conf_dir:-$prefix/etc/cni/net.d}
ctl_dir=${ctl_dir:-$prefix/usr/local/bin}
unit_dir=${unit_dir:-$prefix/etc/systemd/system}
bins=(calico-cni calico-ipam calicoctl)

[[ -f $conf_file && -r $conf_file ]] || die "conflist $conf_file is missing"
[[ $conf_name != */* && -n $conf_name ]] || die "--conf-name must be a file name, not $conf_name"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read the conflist"
# What the conflist needs, as lines: "plugin TYPE" (each chained plugin), "store OPTION VALUE"
# (calicoctl's datastore options, from the calico plugin's netconf), "nodename NAME" and
# "pool CIDR".
read_conf='
import json, sys
try:
    conf = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"install.sh: {sys.argv[1]}: not a valid netconf: {e}")
calico = None
for p in conf.get("plugins", [conf]):
    t = p.get("type", "")
    if t in ("calico", "calico-cni"):
        calico = calico or p
    elif t:
        print("plugin", t)
if calico:
    for key, opt in (("etcd_endpoints", "--etcd-endpoints"), ("etcd_key_file", "--etcd-key-file"),
                     ("etcd_cert_file", "--etcd-cert-file"), ("etcd_ca_cert_file", "--etcd-ca-cert-file"),
                     ("datastore_path", "--datastore-path")):
        if calico.get(key):
            print("store", opt, calico[key])
    if calico.get("nodename"):
        print("nodename", calico["nodename"])
    ipam = calico.get("ipam") or {}
    if ipam.get("type") == "calico-ipam":
        for cidr in (ipam.get("ipv4_pools") or []) + (ipam.get("ipv6_pools") or []):
            print("pool", cidr)
'
needs=$(python3 -c "$read_conf" "$conf_file") || exit 1

# Every chained plugin must be where a runtime looks (podman's default cni_plugin_dirs hold
# /opt/cni/bin and /usr/lib/cni): a refusal changes nothing.
declare -A debian_plugin=([bandwidth]=1 [bridge]=1 [dhcp]=1 [firewall]=1 [host-device]=1
  [host-local]=1 [ipvlan]=1 [loopback]=1 [macvlan]=1 [portmap]=1 [ptp]=1 [sbr]=1 [static]=1
  [tuning]=1 [vlan]=1 [vrf]=1)
find_plugin() {
  local d
  for d in "$bin_dir" /opt/cni/bin /usr/lib/cni; do [[ -x $d/$1 ]] && return 0; done
  return 1
}
missing=()
while read -r kind name; do
  [[ $kind == plugin ]] && ! find_plugin "$name" && missing+=("$name")
done <<<"$needs"
if ((${#missing[@]})); then
  for m in "${missing[@]}"; do
    [[ -n ${debian_plugin[$m]:-} ]] \
      || die "the conflist chains the plugin \"$m\", which is in none of $bin_dir, /opt/cni/bin, /usr/lib/cni: install it first"
  done
  command -v apt-get >/dev/null 2>&1 \
    || die "the conflist chains ${missing[*]}, in none of $bin_dir, /opt/cni/bin, /usr/lib/cni: install the CNI reference plugins (containernetworking-plugins)"
  echo "install.sh: the conflist chains ${missing[*]}: installing containernetworking-plugins (into /usr/lib/cni)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends containernetworking-plugins >&2 \
    || die "installing containernetworking-plugins failed; install it, or put ${missing[*]} into $bin_dir"
  for m in "${missing[@]}"; do
    find_plugin "$m" || die "$m is still missing after installing containernetworking-plugins"
  done
fi

if [[ -z $from ]]; then
  # The shipped build (static, non-PIE, hot functions first: README "Release build"); cargo
  # makes it a no-op when the binaries are up to date.
  echo "install.sh: building the release binaries (cargo build --release; a first build takes a few minutes)" >&2
  build=(-p calico-cni -p calico-ipam -p calicoctl)
  ((node)) && build+=(-p calico-node)
  from=$("$repo/scripts/build-release.sh" "${build[@]}") \
    || die "building the release binaries failed"
fi
absent=()
for b in "${bins[@]}" $( ((node)) && echo calico-node); do
  [[ -f $from/$b && -x $from/$b ]] || absent+=("$b")
done
((${#absent[@]} == 0)) || die "missing or not executable in $from: ${absent[*]}"

# Decide about the conflist first: a refusal changes nothing.
dest_conf=$conf_dir/$conf_name
conf_action=install
if [[ -e $dest_conf ]]; then
  if cmp -s "$conf_file" "$dest_conf"; then
    conf_action=keep
  elif ((force)); then
    conf_action=replace
  else
    die "$dest_conf exists and differs from $conf_file; not replacing it (use --force)"
  fi
fi

# calico-node's unit: the conflist's datastore (the plugins' and the agent's must be one),
# as the environment variables calico-node reads, and its nodename.
store=()
node_name=
while read -r kind a b; do
  case $kind in
    store) store+=("$a" "$b") ;;
    nodename) node_name=$a ;;
  esac
done <<<"$needs"
ds=/var/lib/calico/calico-store.db
etcd=0
for ((i = 0; i < ${#store[@]}; i += 2)); do
  case ${store[i]} in
    --datastore-path) ds=${store[i + 1]} ;;
    --etcd-endpoints) etcd=1 ;;
  esac
done
bgp=
command -v bird >/dev/null 2>&1 || bgp=" --bgp=none"
unit() {
  local i var
  cat <<EOF
# Written by scripts/install.sh for its conflist (README "calico-node: the host agent").
[Unit]
Description=calico-node: this host's routes to the other hosts' blocks, NAT and profiles
Wants=network-online.target
After=network-online.target

[Service]
EOF
  for ((i = 0; i < ${#store[@]}; i += 2)); do
    var=${store[i]#--}
    var=${var//-/_}
    [[ $var == datastore_path ]] && continue
    echo "Environment=\"${var^^}=${store[i + 1]}\""
  done
  ((etcd)) || echo "Environment=\"CALICO_DATASTORE_PATH=$ds\""
  [[ -n $node_name ]] && echo "Environment=\"NODENAME=$node_name\""
  cat <<EOF
ExecStart=$ctl_dir/calico-node --health-listen 127.0.0.1:9099$bgp
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
}
dest_unit=$unit_dir/calico-node.service
unit_action=none
if ((node)); then
  unit_text=$(unit)
  unit_action=install
  if [[ -e $dest_unit ]]; then
    if [[ $(<"$dest_unit") == "$unit_text" ]]; then
      unit_action=keep
    elif ((force)); then
      unit_action=replace
    else
      die "$dest_unit exists and differs from the unit for this conflist; not replacing it (use --force)"
    fi
  fi
fi

mkdir -p "$bin_dir" "$conf_dir" "$ctl_dir"
((node)) && mkdir -p "$unit_dir"

# Copy $1 to $2 through a temporary file beside it, then rename: readers never see half a
# file, and a plugin being exec'd keeps its inode.
put() {
  local tmp
  tmp=$(mktemp "$(dirname "$2")/.$(basename "$2").XXXXXX")
  if ! install -m "$3" "$1" "$tmp"; then rm -f "$tmp"; die "writing $2 failed"; fi
  mv -f "$tmp" "$2"
}

# put_binary NAME DIR: $from/NAME into DIR, unless the same file is there.
put_binary() {
  local dest=$2/$1 what
  if [[ -f $dest && ! -L $dest ]] && cmp -s "$from/$1" "$dest"; then
    echo "unchanged  $dest"
  else
    [[ -e $dest || -L $dest ]] && what=updated || what=installed
    put "$from/$1" "$dest" 0755
    printf '%-10s %s\n' "$what" "$dest"
  fi
}
for b in "${bins[@]}"; do
  put_binary "$b" "$bin_dir"
done
((node)) && put_binary calico-node "$ctl_dir"

# link LINK TARGET: make LINK a symlink to TARGET, atomically.
link() {
  if [[ -L $1 && $(readlink "$1") == "$2" ]]; then
    echo "unchanged  $1 -> $2"
  else
    [[ -d $1 && ! -L $1 ]] && die "$1 is a directory"
    ln -sfn "$2" "$1.tmp.$$" && mv -fT "$1.tmp.$$" "$1"
    echo "linked     $1 -> $2"
  fi
}
link "$bin_dir/calico" calico-cni
link "$ctl_dir/calicoctl" "$(cd "$bin_dir" && pwd)/calicoctl"

case $conf_action in
  keep) echo "unchanged  $dest_conf" ;;
  install) put "$conf_file" "$dest_conf" 0644; echo "installed  $dest_conf" ;;
  replace) put "$conf_file" "$dest_conf" 0644; echo "replaced   $dest_conf" ;;
esac
case $unit_action in
  keep) echo "unchanged  $dest_unit" ;;
  install | replace)
    tmp_unit=$(mktemp) || die "mktemp failed"
    trap 'rm -f "$tmp_unit"' EXIT
    printf '%s\n' "$unit_text" >"$tmp_unit"
    put "$tmp_unit" "$dest_unit" 0644
    [[ $unit_action == install ]] && echo "installed  $dest_unit" || echo "replaced   $dest_unit"
    [[ -n $bgp ]] && echo "note       bird (bird2) is not installed: the unit runs calico-node$bgp (no BGP); install bird2 and remove the flag for BGP"
    echo "note       not started: systemctl daemon-reload && systemctl enable --now calico-node"
    ;;
esac

# The pools the conflist names, in the datastore it names: calico-ipam refuses an ADD from a
# pool that does not exist.
((pools)) || exit 0
pool_list=()
while read -r kind a _; do
  [[ $kind == pool ]] && pool_list+=("$a")
done <<<"$needs"
if ((${#pool_list[@]} == 0)); then
  echo "note       the conflist names no pool: the first ADD creates 192.168.0.0/16 (or: calicoctl pool add CIDR)"
  exit 0
fi
ctl() { "$bin_dir/calicoctl" "${store[@]}" "$@"; }
where=etcd
if ((!etcd)); then
  mkdir -p "$(dirname "$ds")"
  where="embedded store $ds"
fi
existing='[]'
# A store that does not exist yet holds no pool (calicoctl's read-only commands refuse to
# create one); `pool add` below creates it.
if [[ $where == etcd || -e $ds ]]; then
  existing=$(ctl pool show -o json) || die "reading the pools from the $where failed: calicoctl ${store[*]} pool show"
fi
for cidr in "${pool_list[@]}"; do
  if python3 -c 'import json, sys; sys.exit(not any(p["cidr"] == sys.argv[1] for p in json.loads(sys.argv[2])))' \
    "$cidr" "$existing"; then
    echo "unchanged  pool $cidr ($where)"
  else
    ctl pool add "$cidr" >/dev/null || die "creating pool $cidr failed: calicoctl ${store[*]} pool add $cidr"
    echo "created    pool $cidr ($where)"
  fi
done
