#!/usr/bin/env bash
# The `student` surrogate recognizer (faceprov/recognizers/student.py), end to end on 2 CPU cores:
# MTCNN landmarks + dlib/facenet embeddings of LFW peopleDevTrain (~6 min, cached in runs/student),
# STEPS distillation steps (~0.35 s each; resumable: rerun with a larger STEPS to train on), export
# to faceprov/weights/student, then the transfer study that says whether it helps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-5000}
OUT=${OUT:-runs/student}
$PY -m faceprov.recognizers.distill --out "$OUT" --steps "$STEPS" --threads 2 2>&1 | tee -a "$OUT.log"
$PY -m faceprov.recognizers.distill --out "$OUT" --export faceprov/weights/student
FACEPROV_THREADS=2 $PY ops/bench/transfer --preset student --max-identities 50 --batch 25
