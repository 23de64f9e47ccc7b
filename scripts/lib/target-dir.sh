# Sourced by scripts that run built binaries: sets TARGET_DIR to cargo's target directory as
# cargo itself resolves it (CARGO_TARGET_DIR, build.target-dir in a config file, or
# <workspace>/target). Run from the workspace root, after cargo is known to be there.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) \
  || TARGET_DIR=
if [[ -z $TARGET_DIR ]]; then
  TARGET_DIR=${CARGO_TARGET_DIR:-target}
  [[ $TARGET_DIR == /* ]] || TARGET_DIR=$PWD/$TARGET_DIR
fi
