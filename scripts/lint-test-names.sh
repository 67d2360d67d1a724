#!/usr/bin/env bash
# CTest splits a test name at ';' (doctest_discover_tests registers each TEST_CASE by name), so a name with a
# semicolon is registered broken and "passes" without running. Refuse such names.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(grep -rnE 'TEST_CASE\("[^"]*;' tests || true)
if [ -n "$bad" ]; then
  echo "test names must not contain ';' (CTest splits on it):" >&2
  echo "$bad" >&2
  exit 1
fi
