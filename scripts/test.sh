#!/usr/bin/env bash
# Installs what is missing, builds and runs the whole test suite through CTest.
# Usage: scripts/test.sh [release|asan|tsan]   (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
scripts/install-deps.sh --with-browser
scripts/lint-test-names.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset"
