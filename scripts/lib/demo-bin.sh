# Sourced by the demos, from the workspace root: sets BIN to the directory of the binaries they
# run. CALICO_BIN_DIR names binaries built already (the tests run the demos on theirs);
# otherwise the debug build, built first (a no-op when it is up to date).
if [[ -n ${CALICO_BIN_DIR:-} ]]; then
  BIN=$CALICO_BIN_DIR
else
  echo "$(basename "$0" .sh): building the binaries (cargo build --bins)..." >&2
  cargo build --bins --locked -q
  source scripts/lib/target-dir.sh
  BIN=$TARGET_DIR/debug
fi
