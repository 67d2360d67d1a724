#!/usr/bin/env bash
# bench/peer_once.sh ORCH TAG [CONNS]: one `orch serve` (binary ORCH) under the peer's wrk load (../shared/peer/),
# 3 s warm-up, 15 s measured; prints rate and latency, and from /metrics the group commits' durations and queue waits
# (histograms) and what the SQLite checkpoint thread did (rounds, restarts, its time holding the write gate); per
# thread name (engine/thread_name.h), the CPU time and the time spent runnable but waiting for a core during the
# measured window (/proc/<pid>/task/*/schedstat); and the listening socket's largest accept queue (ss, sampled).
# Run from the project's root after side_by_side.sh generated its templates (build/peer-run/templates.tsv).
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
threads() { for t in /proc/$pid/task/*; do echo "$(cat $t/comm) $(cat $t/schedstat)"; done 2>/dev/null || true; }
threads > $dir/sched0
( for _ in $(seq 1 30); do ss -Hltn "sport = :$port" | awk '{print $2}'; sleep 0.5; done > $dir/acceptq ) &
sampler=$!
PLANE_SECRET=peer-secret PLANE_WRK_STATS=$dir/wrk.json wrk -t2 -c$C -d15s --timeout 10s --latency -s $PEER/load/plane_webhook_unique.lua $URL -- $TPL > $dir/wrk.txt 2>&1
python3 -c "import json;w=json.load(open('$dir/wrk.json'));print('$TAG c=$C req/s %.0f p50 %.2f p99 %.2f max %.1f'%(w['req_per_s'],w['lat_p50_ms'],w['lat_p99_ms'],w['lat_max_ms']))"
threads > $dir/sched1
wait $sampler || true
python3 - $dir/sched0 $dir/sched1 <<'PY'
import collections, sys
def by_name(path):
    out = collections.defaultdict(lambda: [0, 0, 0])  # cpu ns, run-queue wait ns, threads
    for line in open(path):
        name, cpu, wait, _ = line.rsplit(maxsplit=3)
        out[name][0] += int(cpu); out[name][1] += int(wait); out[name][2] += 1
    return out
before, after = by_name(sys.argv[1]), by_name(sys.argv[2])
rows = sorted(((a[0] - before[n][0], a[1] - before[n][1], a[2], n) for n, a in after.items()), reverse=True)
print("threads (measured window): " + "; ".join(
    "%s x%d cpu %.2f s, waiting for a core %.2f s" % (n, k, c / 1e9, w / 1e9) for c, w, k, n in rows[:5]))
PY
echo "accept queue: max $(sort -n $dir/acceptq | tail -1) (sampled every 0.5 s)"
curl -fsS $URL/metrics > $dir/metrics.txt
for h in duration queue_wait; do
  echo -n "commit $h: "
  grep -E "^orch_inbox_commit_${h}_seconds_(bucket|count|sum)" $dir/metrics.txt | tr '\n' ' ' | sed "s/orch_inbox_commit_${h}_seconds_//g"; echo
done
grep -E "^orch_store_checkpoint" $dir/metrics.txt | tr '\n' ' '; echo
kill -TERM $pid; wait $pid || true
rm -rf $dir
