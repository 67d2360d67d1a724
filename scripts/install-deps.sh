#!/usr/bin/env bash
# Installs the Debian 12 packages orch needs to build, run and test, and only those that are missing.
# Usage: scripts/install-deps.sh [--with-browser] [--with-peer]   (run as root, or with sudo available)
# --with-peer: what bench/run.sh's side-by-side run with the FastAPI peer needs (../shared/peer/).
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config git ca-certificates clang-format
  libcpp-httplib-dev nlohmann-json3-dev libsqlitecpp-dev libsqlite3-dev libcurl4-openssl-dev
  libspdlog-dev doctest-dev libtoml11-dev libcli11-dev prometheus-cpp-dev libssl-dev
  libpq-dev postgresql  # the PostgreSQL store; the tests' throwaway servers run its initdb, pg_ctl and postgres
)
for arg in "$@"; do
  case "$arg" in
    --with-browser) packages+=(chromium) ;;
    --with-peer) packages+=(wrk python3-fastapi uvicorn sqlite3 curl iproute2) ;;  # iproute2: ss, for bench/peer_once.sh
    *) echo "install-deps: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
