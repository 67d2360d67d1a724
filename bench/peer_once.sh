#!/usr/bin/env bash
# bench/peer_once.sh ORCH TAG [CONNS]: one `orch serve` (binary ORCH) under the peer's wrk load (../shared/peer/),
# 3 s warm-up, 15 s measured; prints rate and latency, and from /metrics the group commits' durations and queue waits
# (histograms) and what the SQLite checkpoint thread did (rounds, restarts, its time holding the write gate). Run from the project's root after side_by_side.sh
# generated its templates (build/peer-run/templates.tsv).
set -euo pipefail
ORCH=$1; TAG=$2; C=${3:-64}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; cd "$root"
PEER="$(dirname "$root")/shared/peer"; TPL="$root/build/peer-run/templates.tsv"
dir=$(mktemp -d /tmp/m-$TAG.XXXX); port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$port
ORCH_CONFIG=examples/orch.toml ORCH_DATA_DIR=$dir ORCH_LISTEN=127.0.0.1:$port ORCH_PLANE_WEBHOOK_SECRET=peer-secret \
  ORCH_RECONCILE_ENABLED=false $ORCH serve > $dir/server.log 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS -o /dev/null $URL/healthz 2>/dev/null && break; sleep 0.1; done
PLANE_SECRET=peer-secret PLANE_WRK_STATS=$dir/warm.json wrk -t2 -c$C -d3s --timeout 10s -s $PEER/load/plane_webhook_unique.lua $URL -- $TPL > /dev/null 2>&1
PLANE_SECRET=peer-secret PLANE_WRK_STATS=$dir/wrk.json wrk -t2 -c$C -d15s --timeout 10s --latency -s $PEER/load/plane_webhook_unique.lua $URL -- $TPL > $dir/wrk.txt 2>&1
python3 -c "import json;w=json.load(open('$dir/wrk.json'));print('$TAG c=$C req/s %.0f p50 %.2f p99 %.2f max %.1f'%(w['req_per_s'],w['lat_p50_ms'],w['lat_p99_ms'],w['lat_max_ms']))"
curl -fsS $URL/metrics > $dir/metrics.txt
for h in duration queue_wait; do
  echo -n "commit $h: "
  grep -E "^orch_inbox_commit_${h}_seconds_(bucket|count|sum)" $dir/metrics.txt | tr '\n' ' ' | sed "s/orch_inbox_commit_${h}_seconds_//g"; echo
done
grep -E "^orch_store_checkpoint" $dir/metrics.txt | tr '\n' ' '; echo
kill -TERM $pid; wait $pid || true
rm -rf $dir
