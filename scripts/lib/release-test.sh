# Sourced by the bench scripts that measure through an integration test: `release_test NAME`
# builds the release binaries (scripts/build-release.sh), runs tests/tests/NAME.rs against
# them (CALICO_BIN_DIR) one test at a time, and prints its FIGURE lines and its result.
release_test() {
  CALICO_BIN_DIR=$(scripts/build-release.sh --bins)
  export CALICO_BIN_DIR
  cargo test -p calico-tests --test "$1" -- --nocapture --test-threads=1 2>&1 | grep -E 'FIGURE|test result|panicked'
}
