//! Shared helpers for the integration tests: a runtime-like driver that execs the real binaries.
