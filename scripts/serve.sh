#!/usr/bin/env bash
# Installs what is missing, builds the release binary and runs `orch serve` with the example config and the
# embedded SQLite database under ./var/. Environment variables (ORCH_*) pass through; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target orch
export ORCH_CONFIG="${ORCH_CONFIG:-examples/orch.toml}"
# The example project's remote is a local bare repository; make it (with one commit on main) the first time.
if [ "$ORCH_CONFIG" = examples/orch.toml ] && [ ! -d /tmp/orch-example/shop.git ]; then
  seed=$(mktemp -d)
  git init -q -b main "$seed"
  git -C "$seed" -c user.name=orch -c user.email=orch@localhost commit -q --allow-empty -m "initial commit"
  git clone -q --bare "$seed" /tmp/orch-example/shop.git
  rm -rf "$seed"
fi
export ORCH_DATA_DIR="${ORCH_DATA_DIR:-./var}"
exec build/release/orch serve "$@"
