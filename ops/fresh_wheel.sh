#!/usr/bin/env bash
# Try faceprov as a new user would: build the wheel, install it into a brand-new venv (no
# editable checkout on sys.path), then cloak a photo into a new folder with the embedded store
# (SQLite) and check that it was recorded, signed (C2PA) and reported.
#   bash ops/fresh_wheel.sh [WORKDIR]      # default: a new temporary folder
# Uses the models already cached under FACEPROV_HOME (or fetches them: faceprov assets fetch).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
W=${1:-$(mktemp -d -t faceprov-fresh-XXXXXX)}
mkdir -p "$W"
PY=${PYTHON:-python3}
echo "== work folder: $W"

echo "== build the wheel"
rm -rf "$W/dist"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$W/dist" "$REPO" 2>/dev/null \
  || .venv/bin/python -m pip wheel -q --no-deps -w "$W/dist" "$REPO"
WHEEL=$(ls "$W"/dist/faceprov-*.whl)
echo "   $(basename "$WHEEL")"

echo "== a fresh venv, torch pinned first (as ops/setup.sh does), then the wheel"
rm -rf "$W/venv"
"$PY" -m venv "$W/venv"
V="$W/venv/bin"
t0=$(date +%s)
"$V/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
"$V/python" -m pip install -q "$WHEEL"
echo "   installed in $(( $(date +%s) - t0 )) s"
# nothing of the checkout may leak in
( cd "$W" && "$V/python" -c "import faceprov, sys; p = faceprov.__file__; print('   faceprov from', p); sys.exit(p.startswith('$REPO'))" )

echo "== faceprov cloak photo.jpg -o out/"
cd "$W"
# a home of its own (database, C2PA credentials); the pinned files already fetched on this machine
# are reused through a link (assets fetch verifies each by sha256 and fetches what is missing)
SHARED_ASSETS=$("$V/python" -c "from faceprov.config import settings; print(settings().home / 'assets')")
export FACEPROV_HOME="$W/home"
rm -rf out "$FACEPROV_HOME"
mkdir -p "$FACEPROV_HOME"
[[ -d "$SHARED_ASSETS" ]] && ln -s "$SHARED_ASSETS" "$FACEPROV_HOME/assets"
"$V/faceprov" assets fetch --all
SAMPLE=$("$V/python" -c "from faceprov import assets; print(assets.path('sample1'))")
cp "$SAMPLE" photo.jpg
"$V/faceprov" cloak photo.jpg -o out/ --report out/
ls -l out/

echo "== recorded, signed, reported"
"$V/faceprov" audit history --json > history.json
"$V/python" - <<'EOF'
import json, pathlib, sys
items = json.load(open("history.json"))
items = items.get("items", items) if isinstance(items, dict) else items
assert len(items) == 1, f"expected one cloak record, got {len(items)}"
rec = items[0]
out = sorted(p for p in pathlib.Path("out").iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
assert out, "no cloaked photo in out/"
print("   record", rec.get("id") or rec.get("record_id"), "owner", rec.get("owner"), "faces", len((rec.get("report") or {}).get("faces", [])))
reports = list(pathlib.Path("out").glob("*.html"))
assert reports, "no HTML report in out/"
print("   report", reports[0].name, reports[0].stat().st_size, "bytes")
EOF
"$V/faceprov" provenance read out/photo.jpg
echo "== fresh wheel: OK"
