#!/usr/bin/env bash
# The project's CI check: format, lints, then every service's tests (memory store, in-process broker:
# nothing to install).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
