#!/usr/bin/env bash
# The workspace's rustc wrapper (build.rustc-wrapper in .cargo/config.toml): cargo runs
# `rustc-release.sh RUSTC ARGS...` for every compilation, so `cargo build --release` and
# `cargo install --path calico-cni` (which reads the workspace's .cargo/config.toml too) build
# the binaries we ship, not slower ordinary ones.
#
# For an optimized build of one of this workspace's executables (not a test, not a build
# script) for a linux-gnu target, it adds:
#   -C target-feature=+crt-static -C relocation-model=static   static glibc, non-PIE
#   -C linker=scripts/link/hot-first.sh                         the hot functions first
# A plugin process lives a few milliseconds and its cost is mostly faulting in code; see
# README "Release build". Everything else (debug builds, tests, libraries, build scripts,
# proc-macros) is compiled exactly as without the wrapper: the flags cannot go in
# [target.<triple>] rustflags, which would also reach proc-macros (a proc-macro cannot be
# built with +crt-static) unless every build passed --target.
#
# With fat LTO all Rust code is generated in the executable's own rustc run, so the flags
# given to that run alone decide its relocation model. CALICO_PLAIN_BUILD=1 turns the wrapper
# off (ordinary dynamically linked binaries; cargo does not notice the change, so
# `cargo clean --release` first).
set -uo pipefail
rustc=$1
shift
[[ -n ${CALICO_PLAIN_BUILD:-} ]] && exec "$rustc" "$@"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=${here%/scripts/link}
bin=0 opt=0 test=0 name= target=
prev=
for arg in "$@"; do
  case $prev in
    --crate-type) [[ $arg == bin ]] && bin=1 ;;
    --crate-name) name=$arg ;;
    --target) target=$arg ;;
    -C) case $arg in opt-level=0) ;; opt-level=*) opt=1 ;; esac ;;
  esac
  [[ $arg == --test ]] && test=1
  prev=$arg
done
member=0
[[ ${CARGO_MANIFEST_DIR:-} == "$repo" || ${CARGO_MANIFEST_DIR:-} == "$repo"/* ]] && member=1
if ((bin && opt && !test && member)) && [[ $name != build_script_* ]] \
  && [[ -z $target || $target == *-linux-gnu* ]]; then
  exec "$rustc" "$@" -C target-feature=+crt-static -C relocation-model=static -C "linker=$here/hot-first.sh"
fi
exec "$rustc" "$@"
