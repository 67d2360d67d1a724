#!/bin/sh
# examples/agents/reviewer.sh: the demo reviewer. It approves everything: exit 0 is APPROVED on a post_review stage
# (exit 3 would request changes), and its summary is the review's text.
set -eu
if [ -n "${ORCH_OUTPUT_DIR:-}" ]; then
  printf 'The example reviewer approves %s: the change is one line in CHANGES.md.\n' \
    "${ORCH_WORK_ITEM_KEY:-this change}" > "$ORCH_OUTPUT_DIR/summary.md"
fi
exit 0
