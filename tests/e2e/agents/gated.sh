#!/bin/sh
# e2e gated analyst: runs until the test opens and closes the fifo $E2E_RELEASE_FIFO (one release per run), then
# does what the analyst does.
set -e
cat "$E2E_RELEASE_FIFO" > /dev/null
exec "$(dirname "$0")/analyst.sh"
