#!/bin/sh
# e2e reviewer: looks and succeeds; the verdict comes from the PR review in Gitea.
exit 0
