#!/usr/bin/env bash
# The shipped swap detector (faceprov/weights/detector), end to end on 2 CPU cores (~45 min):
# swap folders of LFW peopleDevTrain people (landmark, lowres, mesh; affine is kept out as the
# held-out method) and the peopleDevTest folders the benchmark reads, the recognizer-feature head
# with the inner/outer identity-consistency term, then ops/bench/detection --write (threshold,
# model card, docs section *detection*, README sentence). Resumable: existing folders and runs
# are reused; the recognizer features are cached under the cache dir.
#
#   bash ops/train_detector.sh [OUT]        (default runs/detector; needs ../shared/data/lfw)
#
# Review the benchmark before shipping: cp OUT/model/* faceprov/weights/detector/
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/detector}"
PY=.venv/bin/python
SW=runs/bench-fusion
mkdir -p "$SW"

$PY - "$SW" <<'EOF'
import sys
from pathlib import Path
from faceprov.data import lfw
from faceprov.swap import make_triplets

out = Path(sys.argv[1])
for split in ("train", "test"):
    if not (out / f"{split}.tsv").exists():
        lfw.write_tsv(split, out / f"{split}.tsv", min_images=2)
# the seeds ops/bench/fusion, ops/bench/detection and the shipped models were made with
for name, split, method, seed, n in (
        ("train-landmark", "train", "landmark", 11, 400), ("train-lowres", "train", "lowres", 12, 400),
        ("train-landmark-b", "train", "landmark", 21, 800), ("train-lowres-b", "train", "lowres", 22, 800),
        ("train-mesh", "train", "mesh", 13, 400), ("train-mesh-b", "train", "mesh", 23, 800),
        ("test-landmark", "test", "landmark", 1, 400), ("test-affine", "test", "affine", 2, 400),
        ("test-lowres", "test", "lowres", 3, 400), ("test-mesh", "test", "mesh", 4, 400)):
    d = out / name
    if not (d / "triplets.tsv").exists():
        s = make_triplets(out / f"{split}.tsv", lfw.root(), method, n, d, seed=seed)
        print(d, s["made"], "made", s["skipped_by_reason"], flush=True)
EOF

if [ ! -f "$OUT/model/config.json" ]; then
  $PY -m faceprov.cli train detector --consistency --out "$OUT" \
    --swaps "$SW/train-landmark" --swaps "$SW/train-lowres" --swaps "$SW/train-landmark-b" \
    --swaps "$SW/train-lowres-b" --swaps "$SW/train-mesh" --swaps "$SW/train-mesh-b"
fi
$PY ops/bench/detection --swaps "$SW" --features "$OUT/model" --section detection-candidate
