#!/bin/sh
# examples/agents/reviewer.sh: the demo reviewer. It approves everything.
exit 0
