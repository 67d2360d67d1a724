#!/bin/sh
# e2e sleeper: records its pid (= its process group id) and waits on a child, until it is stopped.
sleep 120 &
echo $$ > "$E2E_PID_FILE"
wait
