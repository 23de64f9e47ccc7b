#!/usr/bin/env bash
# Regenerates hot-symbols.txt, the functions the plugins execute, for hot-first.sh.
# Run it (root, Debian 12) after changes that move a lot of code; a stale list only costs
# RSS. It builds unstripped release binaries in <target dir>/hot-profile, runs calico-cni ADD,
# CHECK and DEL and calico-ipam ADD, CHECK and DEL on the embedded store in throwaway netns
# under callgrind, then the same against a throwaway etcd, and writes every function they
# executed, without Rust's hashes: the embedded store's first, then those only etcd runs,
# each part sorted so that a regenerated list diffs cleanly.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh

# Its own target dir: unstripped binaries would otherwise replace the release ones. The list
# is being remade, so hot-first.sh must not insist that the old one still matches.
source scripts/lib/target-dir.sh
export CARGO_TARGET_DIR=$TARGET_DIR/hot-profile CARGO_PROFILE_RELEASE_STRIP=false HOT_FIRST_MIN_MATCH=0
BIN=$(scripts/build-release.sh -q -p calico-cni -p calico-ipam -p calicoctl)
id=$$
H=calihot-h-$id C=calihot-c-$id
work=$(mktemp -d /tmp/calico-hot.XXXXXX)
source scripts/lib/etcd.sh
cleanup() {
  stop_etcd
  ip netns del "$C" 2>/dev/null || true; ip netns del "$H" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$H"; ip netns add "$C"
ip -n "$H" link set lo up
ETCD_NETNS=$H start_etcd "$work"

mkdir "$work/bin" "$work/cg-embedded" "$work/cg-etcd"
ln -s "$BIN/calico-cni" "$work/bin/calico"
ln -s "$BIN/calico-ipam" "$work/bin/calico-ipam"
"$BIN/calicoctl" --datastore-path "$work/store.db" pool add 10.232.0.0/16 >/dev/null
ip netns exec "$H" "$BIN/calicoctl" --etcd-endpoints "$ETCD_URL" pool add 10.233.0.0/16 >/dev/null
store=
conf() { # conf PREV_RESULT
  printf '{"cniVersion":"1.0.0","name":"hot","type":"calico","nodename":"hot","log_level":"warning",%s,"ipam":{"type":"calico-ipam","lock_file":"%s/ipam.lock"}%s}' \
    "$store" "$work" "${1:+,\"prevResult\":$1}"
}
n=0
# CALICO_DETACH_FORK: a DEL's detached helper is a forked copy, which valgrind follows; it kills
# a process at the helper's usual clone(CLONE_VM) (not a thread). The plugin's own path is the
# same either way (crates/detach).
run() { # run OUT_DIR PLUGIN COMMAND ID [PREV_RESULT]
  n=$((n + 1))
  conf "${5:-}" | CALICO_DETACH_FORK=1 CNI_COMMAND=$3 CNI_CONTAINERID=$4 CNI_NETNS=/var/run/netns/$C CNI_IFNAME=eth0 \
    CNI_PATH=$work/bin ip netns exec "$H" valgrind -q --tool=callgrind --demangle=no \
    --callgrind-out-file="$1/cg.$(printf %03d $n).%p" "$2"
}
cycles() { # cycles OUT_DIR: ADD, CHECK and DEL of both plugins, twice
  local result round
  for round in 1 2; do
    result=$(run "$1" "$work/bin/calico" ADD "hot$round")
    run "$1" "$work/bin/calico" CHECK "hot$round" "$result" >/dev/null
    run "$1" "$work/bin/calico" DEL "hot$round" >/dev/null
    result=$(run "$1" "$work/bin/calico-ipam" ADD "ipam$round")
    run "$1" "$work/bin/calico-ipam" CHECK "ipam$round" "$result" >/dev/null
    run "$1" "$work/bin/calico-ipam" DEL "ipam$round" >/dev/null
  done
}
store="\"datastore_path\":\"$work/store.db\""
cycles "$work/cg-embedded"
store="\"etcd_endpoints\":\"$ETCD_URL\""
cycles "$work/cg-etcd"

# fn=(id) name lines; drop callgrind's pseudo-entries and addresses, and what changes between
# builds: Rust's hashes, and the .N suffix LLVM gives a local symbol whose name it had
# already seen (hot-first.sh compares names the same way).
names() { cat "$1"/cg.* | sed -nE 's/^c?fn=\([0-9]+\) (.*)$/\1/p' \
  | sed -E "s/'[0-9]+$//; s/\.[0-9]+$//; s/17h[0-9a-f]{16}E$/E/" | grep -vE '^(0x[0-9a-f]+|\(below main\))$' \
  | LC_ALL=C sort -u; }
# glibc picks a string function's variant for the CPU at start-up, and valgrind's CPU has
# AVX2 but neither AVX-512 nor RTM: for each function profiled in one of its variants
# (__strlen_avx2, __memcpy_avx_unaligned_erms...), also list the variants a CPU with those
# picks (__X_evex..., __X_avx512..., __X_avx..._rtm), 16 KiB in all. Measured here, calico-cni
# ADD ran __strlen_evex, __strrchr_evex, __memchr_evex_rtm, __strstr_avx512 and
# __memmove_avx512_unaligned_erms, each faulting in a cold 64 KiB window of its own.
cpu_variants() { # cpu_variants NAMES_FILE
  sed -nE 's/^__([a-z0-9]+)_(avx|avx2|evex|sse2|sse42|ssse3)(_.*)?$/\1/p' "$1" | LC_ALL=C sort -u > "$work/bases"
  nm --defined-only "$BIN/calico-cni" | awk 'NR == FNR { base[$0] = 1; next }
    $2 ~ /^[tT]$/ && match($3, /^__[a-z0-9]+_/) {
      b = substr($3, 3, RLENGTH - 3); v = substr($3, RLENGTH + 1)
      if ((b in base) && (v ~ /^(evex|avx512)/ || v ~ /^avx.*_rtm$/)) print $3
    }' "$work/bases" - | LC_ALL=C sort -u
}
# What the embedded store runs first; then what only etcd runs, so that a plugin on the
# embedded store never faults in the etcd client's pages.
names "$work/cg-embedded" > "$work/profiled.txt"
# Start-up code that callgrind never shows, yet every start runs: frame_dummy (crtbegin's
# .init_array entry), and glibc's set-up of the kernel's vDSO (valgrind hides the vDSO). Each
# faulted in a cold window of its own, measured with perf's page-fault addresses.
startup() { printf '%s\n' frame_dummy _dl_new_object _dl_setup_hash _dl_add_to_namespace_list check_match; }
{ cpu_variants "$work/profiled.txt"; startup; } | cat "$work/profiled.txt" - | LC_ALL=C sort -u > "$work/embedded.txt"
names "$work/cg-etcd" | LC_ALL=C comm -13 "$work/embedded.txt" - > "$work/etcd-only.txt"
cat "$work/embedded.txt" "$work/etcd-only.txt" > scripts/link/hot-symbols.txt
echo "scripts/link/hot-symbols.txt: $(wc -l < "$work/embedded.txt") functions, then $(wc -l < "$work/etcd-only.txt") for etcd only" >&2
