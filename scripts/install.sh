#!/usr/bin/env bash
# Install calico-cni, calico-ipam, calicoctl and the `calico` link into a CNI bin directory,
# and a conflist into a CNI config directory. Run as root for the default directories.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=/opt/cni/bin
conf_dir=/etc/cni/net.d
conf_file=$repo/netconf-examples/cnitool-podman.conflist
conf_name=10-calico.conflist
from=
force=0

usage() {
  cat <<EOF
Usage: $0 [options]

Installs calico-cni, calico-ipam and calicoctl, plus the link calico -> calico-cni (so
netconfs with "type": "calico" work), and a conflist for runtimes to read.

Options:
  --bin-dir DIR     where the plugins go (default: /opt/cni/bin)
  --conf-dir DIR    where the conflist goes (default: /etc/cni/net.d)
  --conf-file FILE  the conflist to install (default: netconf-examples/cnitool-podman.conflist:
                    calico + portmap on the embedded store /var/lib/calico/calico-store.db)
  --conf-name NAME  its name in --conf-dir (default: 10-calico.conflist)
  --from DIR        take the binaries from DIR (default: built by scripts/build-release.sh)
  --force           replace an installed conflist that differs from --conf-file
  -h, --help        this text

Binaries and the calico link are replaced when they differ (atomically: a running plugin
keeps its copy). An installed conflist that differs is left alone unless --force; an
identical one is a no-op.
Exit status: 0 done (or nothing to do), 1 refused or failed, 2 bad usage.
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }

while (($#)); do
  case $1 in
    --bin-dir|--conf-dir|--conf-file|--conf-name|--from)
      (($# >= 2)) || { echo "install.sh: $1 needs a value" >&2; usage >&2; exit 2; }
      case $1 in
        --bin-dir) bin_dir=$2 ;;
        --conf-dir) conf_dir=$2 ;;
        --conf-file) conf_file=$2 ;;
        --conf-name) conf_name=$2 ;;
        --from) from=$2 ;;
      esac
      shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

bins=(calico-cni calico-ipam calicoctl)

if [[ -z $from ]]; then
  # The shipping build (static, non-PIE: see scripts/build-release.sh); cargo makes it a
  # no-op when the binaries are up to date.
  from=$("$repo/scripts/build-release.sh" -q -p calico-cni -p calico-ipam -p calicoctl) \
    || die "building the release binaries failed"
fi
for b in "${bins[@]}"; do
  [[ -f $from/$b && -x $from/$b ]] || die "$from/$b is missing or not executable"
done
[[ -f $conf_file && -r $conf_file ]] || die "conflist $conf_file is missing"
[[ $conf_name != */* && -n $conf_name ]] || die "--conf-name must be a file name, not $conf_name"

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

mkdir -p "$bin_dir" "$conf_dir"

# Copy $1 to $2 through a temporary file beside it, then rename: readers never see half a
# file, and a plugin being exec'd keeps its inode.
put() {
  local tmp
  tmp=$(mktemp "$(dirname "$2")/.$(basename "$2").XXXXXX")
  if ! install -m "$3" "$1" "$tmp"; then rm -f "$tmp"; die "writing $2 failed"; fi
  mv -f "$tmp" "$2"
}

for b in "${bins[@]}"; do
  dest=$bin_dir/$b
  if [[ -f $dest && ! -L $dest ]] && cmp -s "$from/$b" "$dest"; then
    echo "unchanged  $dest"
  else
    [[ -e $dest || -L $dest ]] && what=updated || what=installed
    put "$from/$b" "$dest" 0755
    printf '%-10s %s\n' "$what" "$dest"
  fi
done

link=$bin_dir/calico
if [[ -L $link && $(readlink "$link") == calico-cni ]]; then
  echo "unchanged  $link -> calico-cni"
else
  [[ -d $link && ! -L $link ]] && die "$link is a directory"
  ln -sfn calico-cni "$link.tmp.$$" && mv -fT "$link.tmp.$$" "$link"
  echo "linked     $link -> calico-cni"
fi

case $conf_action in
  keep) echo "unchanged  $dest_conf" ;;
  install) put "$conf_file" "$dest_conf" 0644; echo "installed  $dest_conf" ;;
  replace) put "$conf_file" "$dest_conf" 0644; echo "replaced   $dest_conf" ;;
esac
