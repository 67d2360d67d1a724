#!/bin/sh
# e2e analyst: writes its analysis into the worktree (not committed) and succeeds.
set -e
printf 'analysis of %s (attempt %s)\n' "$ORCH_WORK_ITEM_KEY" "$ORCH_ATTEMPT" > analysis.md
test -s "$ORCH_TASK_JSON"
