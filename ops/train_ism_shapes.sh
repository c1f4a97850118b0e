#!/usr/bin/env bash
# ISM experiment (issue 15 item 4): does varying the self-blend seam shape (self_blend_shapes)
# help on the held-out swap method? Two arms from the shipped ISM, the same steps, data, seed
# and batches; the only difference is the option. Then ops/bench/detection measures both with
# the shipped model beside them. Resumable: swap folders and runs are reused when present.
#
#   [ARMS="control shapes"] bash ops/train_ism_shapes.sh [STEPS]   (default 600; ~25 min per arm on 2 CPU cores)
#
# Needs ../shared/data/lfw. Writes runs/bench-fusion/{train,test}-* (faceprov swap make, the
# seeds ops/bench/fusion and ops/bench/detection use) and runs/ism-shapes/{control,shapes}/.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-600}"
PY=.venv/bin/python
SW=runs/bench-fusion
mkdir -p "$SW" runs/ism-shapes

$PY - "$SW" <<'EOF'
import sys
from pathlib import Path
from faceprov.data import lfw
from faceprov.swap import make_triplets

out = Path(sys.argv[1])
for split in ("train", "test"):
    if not (out / f"{split}.tsv").exists():
        lfw.write_tsv(split, out / f"{split}.tsv", min_images=2)
for split, method, seed in (("train", "landmark", 11), ("train", "lowres", 12),
                            ("test", "landmark", 1), ("test", "affine", 2), ("test", "lowres", 3)):
    d = out / f"{split}-{method}"
    if not (d / "triplets.tsv").exists():
        s = make_triplets(out / f"{split}.tsv", lfw.root(), method, 400, d, seed=seed)
        print(d, s.get("written", s), flush=True)
EOF

ARMS="${ARMS:-control shapes}"
for arm in $ARMS; do
  extra=()
  [ "$arm" = shapes ] && extra=(--set self_blend_shapes=true)
  $PY -m faceprov.cli train ism --swaps "$SW/train-landmark" --swaps "$SW/train-lowres" \
    --out "runs/ism-shapes/$arm" --set steps="$STEPS" --set lr=0.0002 --set self_blend=0.5 \
    --set self_blend_strong=true --set jpeg=0.5 --set init_from=faceprov/weights/ism \
    --set val_fraction=0.1 --set seed=7 --set model.size=128 --set "model.aspp_rates=[1,2,3]" "${extra[@]}"
done

models=()
for arm in shapes control; do [ -f "runs/ism-shapes/$arm/model/config.json" ] && models+=(--ism "runs/ism-shapes/$arm/model"); done
$PY ops/bench/detection --swaps "$SW" "${models[@]}" --ism faceprov/weights/ism --section detection-ism-shapes
