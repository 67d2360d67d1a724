#!/usr/bin/env bash
# Installs what is missing, builds the release binary and runs `orch serve` with the example config and the
# embedded SQLite database under ./var/. Environment variables (ORCH_*) pass through; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target orch
export ORCH_CONFIG="${ORCH_CONFIG:-examples/orch.toml}"
export ORCH_DATA_DIR="${ORCH_DATA_DIR:-./var}"
exec build/release/orch serve "$@"
