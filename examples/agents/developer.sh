#!/bin/sh
# examples/agents/developer.sh: the demo developer. It appends a line to CHANGES.md and commits it on the task
# branch (the engine pushes it and opens the PR).
set -eu
printf 'change for %s, attempt %s\n' "${ORCH_WORK_ITEM_KEY:-unknown}" "${ORCH_ATTEMPT:-1}" >> CHANGES.md
git add CHANGES.md
git -c user.name=orch-developer -c user.email=developer@orch.invalid \
  commit --quiet -m "${ORCH_WORK_ITEM_KEY:-orch}: update CHANGES.md"
