#!/usr/bin/env bash
# Install faceprov with its test tools on a fresh machine and run the whole test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh --test || { echo "setup failed" >&2; exit 1; }
.venv/bin/python -m pytest -q -ra --durations=15 "$@"
rc=$?
# pytest exit code 5 = "no tests collected": nothing failed.
if [[ $rc == 5 ]]; then
  echo "pytest collected no tests"
  exit 0
fi
exit $rc
