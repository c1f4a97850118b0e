#!/usr/bin/env bash
# Install faceprov into ./.venv on a fresh machine (idempotent) and fetch its pinned models.
#   bash ops/setup.sh            # runtime
#   bash ops/setup.sh --test     # + test tools, Postgres wheel, Chromium for extension tests
#   bash ops/setup.sh --bench    # --test + what ops/bench/ needs beyond it (matplotlib for plots)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WITH_TEST=0
WITH_BENCH=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
[[ "${1:-}" == "--bench" ]] && WITH_TEST=1 && WITH_BENCH=1

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# torch first, pinned: 2.14.1 + torchvision 0.29.1 work with facenet-pytorch 2.5.3 and lie on
# these machines' local disk; letting a resolver choose would download another multi-GB build.
if ! $VPY -c "import torch, torchvision" >/dev/null 2>&1; then
  $VPY -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
EXTRAS="server"
# the tests also run the PostgreSQL store (postgres: asyncpg, pgvector, pgserver) and the
# arcface-onnx recognizer (arcface: insightface)
[[ $WITH_TEST == 1 ]] && EXTRAS="server,test,postgres,arcface"
[[ $WITH_BENCH == 1 ]] && EXTRAS="$EXTRAS,bench"
$VPY -m pip install -q -e ".[${EXTRAS}]"
# Pretrained files (verified by sha256, cached under FACEPROV_HOME).
.venv/bin/faceprov assets fetch --all

if [[ $WITH_TEST == 1 ]]; then
  # Browser tests drive Debian's Chromium (Playwright's own browser download cannot work here).
  if [[ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
    if [[ $(id -u) == 0 ]]; then
      apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else
      sudo apt-get install -y -q chromium >/dev/null
    fi
  fi
  (cd extension && npm ci --no-audit --no-fund --loglevel=error)
fi
