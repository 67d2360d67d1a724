#!/bin/sh
# examples/agents/analyst.sh: the demo analyst. It writes a summary (ORCH_OUTPUT_DIR/summary.md, which orch posts to
# the work item) and keeps the task file as ANALYSIS.md. It never reads the task file: the title and description in
# it are attacker-controlled text, and a shell script is no place to parse them. It names the item by its key only.
set -eu
: "${ORCH_TASK_JSON:?ORCH_TASK_JSON is not set}"
: "${ORCH_OUTPUT_DIR:?ORCH_OUTPUT_DIR is not set}"
cp -- "$ORCH_TASK_JSON" ANALYSIS.md
cat > "$ORCH_OUTPUT_DIR/summary.md" <<SUMMARY
Analysis of ${ORCH_WORK_ITEM_KEY:-the work item} (attempt ${ORCH_ATTEMPT:-1}) by the example analyst.

Plan: add one line to CHANGES.md on branch ${ORCH_BRANCH:-the task branch}, open a pull request, and let CI and the
reviewer have their say.
SUMMARY
# What the run cost, as a real agent would report it (docs/contracts.md, "The agent's environment"): a made-up price
# for the demo, summed on /queue and checked against the budgets (budget_usd, budget_usd_per_task).
printf '{"tokens_in": 1200, "tokens_out": 300, "model": "%s", "cost_usd": 0.02}\n' "${MODEL:-example}" \
  > "$ORCH_OUTPUT_DIR/usage.json"
