#!/usr/bin/env bash
# Run a command and fail if it changed the working tree (used for nbdev_export / nbdev_clean).
set -u
before=$(git status --porcelain --untracked-files=all -- nbs diffstyler; git diff -- nbs diffstyler | sha1sum)
"$@" || { echo "FAILED: $*"; exit 1; }
after=$(git status --porcelain --untracked-files=all -- nbs diffstyler; git diff -- nbs diffstyler | sha1sum)
if [ "$before" != "$after" ]; then
  echo "FAILED: '$*' changed the working tree (library and notebooks out of sync, or notebooks not clean):"
  git status --short -- nbs diffstyler
  echo "Fix: run '$*' locally and commit the result."
  exit 1
fi
echo "ok: '$*' changed nothing"
