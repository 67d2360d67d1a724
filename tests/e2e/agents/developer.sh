#!/bin/sh
# e2e developer: commits one change on the task branch (orch pushes it and opens the PR).
set -e
f="change-$ORCH_WORK_ITEM_KEY.txt"
printf 'change for %s, visit of %s, attempt %s\n' "$ORCH_WORK_ITEM_KEY" "$ORCH_STAGE" "$ORCH_ATTEMPT" >> "$f"
git add -- "$f"
git -c user.name=e2e-dev -c user.email=dev@example.com -c commit.gpgsign=false commit -q -m "$ORCH_WORK_ITEM_KEY: change"
