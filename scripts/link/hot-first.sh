#!/usr/bin/env bash
# Linker wrapper for the release build (scripts/link/rustc-release.sh sets it as the
# linker of the workspace's optimized executables): links a plugin as usual, then links it
# again with the functions an ADD/CHECK/DEL executes placed first and together in .text.
#
# Why: a plugin process lives for a few milliseconds, and most of its peak RSS is its own
# code, mapped by page faults. The kernel maps 64 KiB around each faulting page ("fault
# around"), so code scattered across the binary costs RSS for its neighbours too: calico-cni
# executes about 1 MB of its 4.3 MB of code, yet mapped 3.4 MB. With the executed functions
# first, calico-cni's peak RSS for one ADD went from 4.5 to 3.2 MiB.
#
# The list (hot-symbols.txt, made by profile-hot.sh with callgrind) holds symbol names
# without Rust's per-build hash, so it survives rebuilds; the first link, unstripped, gives
# the current mangled names, and lld's --symbol-ordering-file takes them. A function missing
# from the list only lands in the cold part: a somewhat stale list costs RSS, never
# correctness. Any other output (calicoctl, build scripts...) is linked plainly at once.
#
# It fails the link, rather than quietly giving an unordered plugin, when the ordering cannot
# be applied: no lld (rustc >= 1.90 links x86_64-unknown-linux-gnu with its own rust-lld,
# `-fuse-ld=lld` among our arguments; otherwise a system ld.lld is tried), or fewer than
# HOT_FIRST_MIN_MATCH percent (default 50) of the list's Rust functions matching the binary's
# symbols (another mangling scheme, e.g. -C symbol-mangling-version=v0, or a list far out of
# date: run profile-hot.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
list=$here/hot-symbols.txt
min_match=${HOT_FIRST_MIN_MATCH:-50}

out=
prev=
lld=0
for arg in "$@"; do
  [[ $prev == -o ]] && out=$arg
  [[ $arg == -fuse-ld=lld ]] && lld=1
  prev=$arg
done
case $(basename "${out:-none}") in calico_cni-* | calico_ipam-*) ;; *) exec cc "$@" ;; esac

fail() {
  echo "hot-first.sh: $* -- the symbol ordering of $(basename "$out") was not applied." >&2
  echo "hot-first.sh: see README \"Release build\"; CALICO_PLAIN_BUILD=1 builds ordinary binaries instead." >&2
  exit 1
}
[[ -s $list ]] || fail "$list is missing or empty"
extra=()
if ((!lld)); then
  cc -fuse-ld=lld -Wl,--version >/dev/null 2>&1 \
    || fail "lld is needed (--symbol-ordering-file): use rustc >= 1.90 on x86_64-unknown-linux-gnu, or install lld"
  extra=(-fuse-ld=lld)
fi

tmp=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
# The same link without stripping, to read the mangled names.
args=()
prev=
for arg in "$@"; do
  if [[ $prev == -o ]]; then
    args+=("$tmp/named")
  else
    case $arg in -s | -Wl,--strip-all | -Wl,--strip-debug | -Wl,-s) ;; *) args+=("$arg") ;; esac
  fi
  prev=$arg
done
cc "${args[@]}" "${extra[@]}" || exit 1
# Names in list order: a legacy Rust name ends in 17h<16 hex>E, the part that changes
# between builds, and LLVM suffixes .N to a local symbol whose name it already had; compare
# without them (as profile-hot.sh writes the list). Type i is an IFUNC (memcpy, strlen...):
# callgrind names glibc's resolvers, which every static binary runs at start-up, after it.
nm --defined-only "$tmp/named" > "$tmp/nm" || fail "nm failed"
awk '
  NR == FNR { rank[$0] = FNR; next }
  NF == 3 && $2 ~ /^[tTwWi]$/ {
    key = $3; sub(/\.[0-9]+$/, "", key); sub(/17h[0-9a-f]+E$/, "E", key)
    if (key in rank) print rank[key], $3
  }' "$list" "$tmp/nm" | sort -n -s > "$tmp/ranked"
awk '!seen[$2]++ { print $2 }' "$tmp/ranked" > "$tmp/order"
# Count the listed Rust functions that matched (C functions match whatever the mangling;
# one listed name can match many symbols: a generic function's instances differ only in
# the hash).
listed=$(grep -cE '^_(ZN|R)' "$list")
matched=$(awk '$2 ~ /^_(ZN|R)/ && !seen[$1]++' "$tmp/ranked" | wc -l)
((matched * 100 >= listed * min_match)) \
  || fail "only $matched of the $listed Rust functions in hot-symbols.txt are in this binary (need $min_match%): another symbol mangling (the list has legacy _ZN names), or a stale list (run scripts/link/profile-hot.sh)"
# cargo shows a linker's stderr only when it fails: HOT_FIRST_LOG=FILE notes the match rate.
[[ -n ${HOT_FIRST_LOG:-} ]] && echo "hot-first.sh: $(basename "$out"): $matched of $listed listed Rust functions matched, $(wc -l < "$tmp/order") symbols placed first" >>"$HOT_FIRST_LOG"
cc "$@" "${extra[@]}" -Wl,--symbol-ordering-file="$tmp/order" -Wl,--no-warn-symbol-ordering \
  || fail "the ordered link failed"
