#!/usr/bin/env bash
# Installs what is missing, builds and runs the whole test suite through CTest.
# Usage: scripts/test.sh [release|asan|tsan] [ctest arguments...]   (default: release, the whole suite)
# e.g. scripts/test.sh tsan -R '^(webhooks|app): '   runs only those suites under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
shift || true
scripts/install-deps.sh --with-browser
scripts/lint
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
runner=()
if [ "$preset" = tsan ]; then
  # gcc 12's libtsan maps its shadow memory at fixed addresses and dies with "FATAL: ThreadSanitizer: unexpected
  # memory mapping" when the kernel randomises mmap with more bits than it expects (vm.mmap_rnd_bits > 28, the
  # default of newer kernels). Running without address-space randomisation (inherited by every child, so by the
  # `orch` processes the e2e tests start) avoids that without a sysctl. Where setarch is refused, run as is.
  if setarch "$(uname -m)" -R true 2>/dev/null; then runner=(setarch "$(uname -m)" -R); fi
fi
"${runner[@]}" ctest --preset "$preset" "$@"
