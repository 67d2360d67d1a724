#!/bin/sh
# examples/agents/analyst.sh: the demo analyst. It copies the task file to ANALYSIS.md without reading it:
# the title and description in it are attacker-controlled text, and a shell script is no place to parse them.
set -eu
: "${ORCH_TASK_JSON:?ORCH_TASK_JSON is not set}"
cp -- "$ORCH_TASK_JSON" ANALYSIS.md
