#!/bin/sh
# e2e analyst: writes its analysis into the worktree (not committed) and succeeds.
set -e
printf 'analysis of %s (attempt %s)\n' "$ORCH_WORK_ITEM_KEY" "$ORCH_ATTEMPT" > analysis.md
test -s "$ORCH_TASK_JSON"
# The summary orch posts to Plane (ORCH_OUTPUT_DIR, issue 20), with markup that must arrive as text.
if [ -n "$ORCH_OUTPUT_DIR" ]; then
  printf 'Plan for %s: <script>alert(1)</script> <img src=x onerror=alert(2)>\n\nSteps: **one**, two.\n' \
    "$ORCH_WORK_ITEM_KEY" > "$ORCH_OUTPUT_DIR/summary.md"
fi
