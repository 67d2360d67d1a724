#!/usr/bin/env bash
# bench/run.sh: runs every benchmark of bench/ (issue #9 and later) and records their medians in bench/RESULTS.md.
#
#   bench/run.sh                 build the release preset if needed, run everything --repeat times (default 3),
#                                print a summary and append a dated section to bench/RESULTS.md
#   bench/run.sh --tiny          each benchmark once at a tiny size; checks only that they work (exit codes, the
#                                exactly-once check); records nothing. CTest runs this as `bench: smoke`.
# Options: --repeat N, --only ingest,ceiling,replicas,handling,reconcile,tracker,startup,runners,routes,nogzip,peer, --build-dir DIR (default
# build/release), --no-build, --work DIR (default <build-dir>/bench-work; generated databases are cached there),
# --no-record (full run without touching RESULTS.md), --no-diagnostics (skip the A/B variants below).
# A full run also runs diagnostics, in the same rounds: ingest at c=64 against a process with only the webhook
# routes (no inbox processor, reconciler or workers), ingest without Accept-Encoding, and the ceiling's what-ifs.
# And `peer`: the FastAPI peer's side-by-side script (../shared/peer/side_by_side.sh, if that folder is there; it
# needs wrk, python3-fastapi and uvicorn, installed here) against orch and the tuned peer, --repeat rounds, after
# the others; its table (both rates, both p99s, the ratio) goes into the same section.
# Times are never asserted: the machine is shared and noisy; compare ratios within one run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
tiny=0 repeat=3 build=1 record=1 diagnostics=1 only="" build_dir="$root/build/release" work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) tiny=1; record=0 ;;
    --repeat) repeat="$2"; shift ;;
    --only) only="$2"; shift ;;
    --build-dir) build_dir="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift ;;
    --no-build) build=0 ;;
    --no-record) record=0 ;;
    --no-diagnostics) diagnostics=0 ;;
    --work) work="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$tiny" = 1 ] && repeat=1 diagnostics=0
work="${work:-$build_dir/bench-work}"

if [ "$build" = 1 ]; then
  "$root/scripts/install-deps.sh"
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    if [ "$build_dir" = "$root/build/release" ]; then
      (cd "$root" && cmake --preset release >/dev/null)
    else
      cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
  fi
  cmake --build "$build_dir" --target bench
fi
for b in orch bench/bench_ingest bench/bench_ceiling bench/bench_handling bench/bench_reconcile bench/bench_tracker \
         bench/bench_startup bench/bench_runners bench/bench_report; do
  [ -x "$build_dir/$b" ] || { echo "bench/run.sh: $build_dir/$b is missing (build the 'bench' target)" >&2; exit 1; }
done

mkdir -p "$work"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
if [ "$tiny" = 1 ]; then results="$work/tiny-results.jsonl"; else results="$work/results-$stamp.jsonl"; fi
: > "$results"
log="${results%.jsonl}.log"
: > "$log"

want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# The exact command of each benchmark, at the chosen size (kept for RESULTS.md).
B="$build_dir/bench"
O="$build_dir/orch"
if [ "$tiny" = 1 ]; then
  cmd_ceiling="$B/bench_ceiling --work $work --single 50 --batches 16 --batch-total 200"
  cmd_ingest="$B/bench_ingest --serve --orch $O --work $work --concurrency 4,16 --requests 600 --warmup 100"
  cmd_handling="$B/bench_handling --work $work --deliveries 20"
  cmd_reconcile="$B/bench_reconcile --work $work --sizes 1000 --passes 1"
  cmd_tracker="$B/bench_tracker --work $work --pages 2,4 --per-page 50"
  cmd_startup="$B/bench_startup --orch $O --work $work --tasks 1000 --runs 1"
  cmd_replicas="$B/bench_ingest --pg-replicas 1,2 --orch $O --work $work --concurrency 8 --requests 400 --warmup 100"
  cmd_runners="$B/bench_runners --orch $O --work $work --runners 8 --seconds 1 --rate 10 --backlog 100"
else
  cmd_ceiling="$B/bench_ceiling --work $work --single 3000 --batches 16,64,512 --batch-total 30000"
  cmd_ingest="$B/bench_ingest --serve --orch $O --work $work --concurrency 16,64 --requests 60000 --warmup 3000"
  cmd_handling="$B/bench_handling --work $work --deliveries 2000"
  cmd_reconcile="$B/bench_reconcile --work $work --sizes 1000,10000,100000,1000000 --passes 3"
  cmd_tracker="$B/bench_tracker --work $work --pages 10,100 --per-page 100"
  cmd_startup="$B/bench_startup --orch $O --work $work --tasks 100000 --runs 1"
  cmd_replicas="$B/bench_ingest --pg-replicas 1,2,3 --orch $O --work $work --concurrency 64 --requests 60000 --warmup 3000"
  cmd_runners="$B/bench_runners --orch $O --work $work --runners 50 --seconds 10 --rate 20 --backlog 2000"
  cmd_ceiling="$cmd_ceiling --whatif 64"
  cmd_routes="$B/bench_ingest --serve --server routes --work $work --concurrency 64 --requests 60000 --warmup 3000 --label ingest_routes_only"
  cmd_nogzip="$B/bench_ingest --serve --orch $O --work $work --concurrency 64 --requests 60000 --warmup 3000 --no-gzip --label ingest_no_gzip"
fi
[ "$diagnostics" = 1 ] || cmd_ceiling="${cmd_ceiling% --whatif 64}"

failures=()
run() {  # run NAME: one invocation, its RESULT line appended to $results
  local name="$1" cmd_var="cmd_$1"
  want "$name" || return 0
  echo "== $name: ${!cmd_var} --out $results" | tee -a "$log"
  set +e
  ${!cmd_var} --out "$results" 2>&1 | tee -a "$log" | grep -v '^RESULT '
  local rc="${PIPESTATUS[0]}"
  set -e
  if [ "$rc" != 0 ]; then
    echo "!! $name exited $rc" | tee -a "$log"
    failures+=("$name")
  fi
}

started=$(date +%s)
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= repeat; r++)); do
  [ "$repeat" -gt 1 ] && echo "==== round $r of $repeat" | tee -a "$log"
  # The ceiling and the ingest run back to back in every round, so their ratio compares one moment of the machine.
  run ceiling
  run ingest
  run replicas  # the same load on 1, 2, 3 replicas sharing a PostgreSQL database, beside the SQLite node's
  run handling
  run reconcile
  run tracker
  run startup
  run runners  # 50 runners long-polling one server: idle CPU, enqueue -> offer, a backlog's drain (issue 22)
  if [ "$diagnostics" = 1 ]; then
    run routes
    run nogzip
  fi
done
peer_script="$(dirname "$root")/shared/peer/side_by_side.sh"
peer_table=""
if [ "$tiny" = 0 ] && want peer; then
  if [ -x "$peer_script" ] || [ -f "$peer_script" ]; then
    "$root/scripts/install-deps.sh" --with-peer
    peer_out="$work/peer-$stamp"
    echo "== peer: ROUNDS=$repeat SERVERS=\"peer-inline orch\" ORCH=$build_dir/orch OUT_DIR=$peer_out $peer_script" | tee -a "$log"
    set +e
    (cd "$root" && ROUNDS="$repeat" SERVERS="peer-inline orch" ORCH="$build_dir/orch" OUT_DIR="$peer_out" \
        bash "$peer_script") >> "$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" != 0 ] || [ ! -s "$peer_out/summary.tsv" ]; then
      echo "!! peer exited $rc" | tee -a "$log"
      failures+=(peer)
    else
      # One row per round and concurrency: orch beside the peer of the same round.
      peer_table="$(python3 - "$peer_out/summary.tsv" <<'PYEOF'
import csv, sys
rows = {(r["round"], int(r["conns"]), r["server"]): r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
print("| round | c | orch req/s | peer req/s | ratio | orch p99 ms | peer p99 ms | orch stored |")
print("|---:|---:|---:|---:|---:|---:|---:|---|")
for rnd, c in sorted({(k[0], k[1]) for k in rows}):
    o, q = rows.get((rnd, c, "orch")), rows.get((rnd, c, "peer-inline"))
    if not o or not q:
        continue
    ratio = float(o["req_s"]) / max(1.0, float(q["req_s"]))
    print(f"| {rnd} | {c} | {o['req_s']} | {q['req_s']} | {ratio:.2f} | {o['p99_ms']} | {q['p99_ms']} | {o['db_check']} |")
PYEOF
)"
      echo "$peer_table"
    fi
  else
    echo "== peer: skipped ($peer_script is not there)" | tee -a "$log"
  fi
fi
elapsed=$(( $(date +%s) - started ))
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

section="$("$B/bench_report" --results "$results")"
echo
echo "$section"
echo
echo "bench/run.sh: $(wc -l < "$results") results in ${elapsed}s; raw results in $results, output in $log"

if [ "$record" = 1 ]; then
  cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  src="$(df -P "$work" | awk 'NR == 2 {print $1}')"
  fs="$(findmnt -n -o FSTYPE,OPTIONS -T "$work" 2>/dev/null | head -1 || true)"
  dev="$(basename "$src")"
  rot="$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo '?')"
  virt="$(systemd-detect-virt 2>/dev/null || true)"
  [ -z "$virt" ] && grep -q hypervisor /proc/cpuinfo && virt="virtual machine"
  virt="${virt:-bare metal?}"
  commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  dirty="$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo ' plus uncommitted changes in the tree' || true)"
  compiler="$(grep -m1 'CMAKE_CXX_COMPILER:' "$build_dir/CMakeCache.txt" | cut -d= -f2)"
  cxx_version="$("$compiler" --version 2>/dev/null | head -1 || echo unknown)"
  build_type="$(grep -m1 'CMAKE_BUILD_TYPE:' "$build_dir/CMakeCache.txt" | cut -d= -f2)"
  sqlite_version="$(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || dpkg-query -W -f='${Version}' libsqlite3-0)"
  {
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — full run, medians of $repeat"
    echo
    echo "- machine: $(nproc) CPUs ($cpu), $mem RAM, $virt; kernel $(uname -r)"
    echo "- disk: $src ($fs), rotational=$rot"
    echo "- build: $build_type, $cxx_version; SQLite $sqlite_version"
    echo "- commit: $commit$dirty"
    echo "- took ${elapsed}s; load average (1, 5, 15 min) at the start $load_start, at the end $load_end"
    echo "  (other work shares this machine: a load above 2 means the benchmarks did not have both cores)"
    echo "- raw results: \`${results//$root\//}\`"
    echo "- commands (each run $repeat times, interleaved per round; paths relative to the repository):"
    echo
    echo '```sh'
    for n in ceiling ingest replicas handling reconcile tracker startup runners routes nogzip; do
      want "$n" || continue
      if [ "$diagnostics" != 1 ] && { [ "$n" = routes ] || [ "$n" = nogzip ]; }; then continue; fi
      v="cmd_$n"
      echo "${!v//$root\//}"
    done
    if [ -n "$peer_table" ]; then
      echo "ROUNDS=$repeat SERVERS=\"peer-inline orch\" ORCH=${build_dir//$root\//}/orch ../shared/peer/side_by_side.sh"
    fi
    echo '```'
    echo
    echo "$section"
    if [ -n "$peer_table" ]; then
      echo
      echo "### Beside the peer (the same wrk load, the tuned FastAPI peer and orch in turn, each round)"
      echo
      echo "$peer_table"
    fi
  } >> "$here/RESULTS.md"
  echo "bench/run.sh: appended a section to bench/RESULTS.md"
fi

if [ ${#failures[@]} -gt 0 ]; then
  echo "bench/run.sh: FAILED: ${failures[*]}" >&2
  exit 1
fi
echo "bench/run.sh: every benchmark ran and passed its checks"
