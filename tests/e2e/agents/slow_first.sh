#!/bin/sh
# e2e slow-first agent: its first attempt records its pid (= its process group id) in $E2E_PID_FILE and waits until
# it is stopped; any later attempt does what the analyst does.
if [ "$ORCH_ATTEMPT" = "1" ]; then
  sleep 120 &
  echo $$ > "$E2E_PID_FILE"
  wait
  exit 1
fi
exec /bin/sh "$(dirname "$0")/analyst.sh"
