#!/usr/bin/env bash
# Cloak v2 training recipe (issue 14): warm start from the shipped cloak (white box dlib +
# faceres-deep), white box now {dlib, faceres, facenet}: three families; sface and mobileface stay
# out of every loss (the black boxes the benchmark headlines). faceres-deep is left out of this
# CPU run because its backward pass is the slowest of the four (5.9 s vs faceres 4.1 s for 8 faces
# on one contended core) and faceres is the same family; it is reported as "related". Budgets are drawn from 3..12/255 so the
# budget-conditioned network covers the whole frontier; the named strengths are then chosen from
# the measured frontier (ops/bench/protection). Resumable: run it again to continue.
#   bash ops/train_cloak_v2.sh [runs/cloak-v2] [extra --set KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/cloak-v2}; shift || true
exec .venv/bin/python -m faceprov.cloak.train --out "$OUT" --no-progress \
  --set init_from=faceprov/weights/cloak \
  --set model.size=112 \
  --set 'model.budgets={"low": 0.0196078431372549, "mid": 0.03137254901960784, "high": 0.047058823529411764}' \
  --set model.budget_scale=0.03137254901960784 \
  --set 'train_budget_range=[3, 12]' \
  --set 'identity.recognizers=["dlib", "faceres", "facenet"]' \
  --set identity.target=true --set identity.feature=true --set identity.jitter=true \
  --set context_margin=24 \
  --set psnr_floor=35.5 --set ssim_floor=0.93 \
  --set batch_size=6 --set lr=0.0001 --set lr_d=0.0001 --set adv_start=200 \
  --set steps=20000 --set ckpt_every=100 --set eval_every=250 --set eval_n=32 --set log_every=10 \
  --set max_identities=1000 \
  --set threads=${THREADS:-2} "$@"
