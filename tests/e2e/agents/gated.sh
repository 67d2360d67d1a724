#!/bin/sh
# e2e gated agent: runs until the test opens and closes the fifo $E2E_RELEASE_FIFO (one release per run), then does
# what $E2E_GATED_THEN (an agent script beside this one, default analyst.sh) does.
set -e
cat "$E2E_RELEASE_FIFO" > /dev/null
echo "released: analysing $ORCH_WORK_ITEM_KEY"
exec /bin/sh "$(dirname "$0")/${E2E_GATED_THEN:-analyst.sh}"
