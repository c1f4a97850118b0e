"""Build tests/data/lfw-mini/: the few real LFW photos the test suite runs on when the full LFW
(../shared/data/lfw, or FACEPROV_LFW) is not on the machine.

    python ops/make_test_fixtures.py                 # from ../shared/data/lfw (or FACEPROV_LFW)
    python ops/make_test_fixtures.py --lfw DIR --out tests/data/lfw-mini

The choice is deterministic (fixed lists read from LFW's own split files and a seeded sample), so
running it again on the same LFW rewrites byte-identical files. Only the standard library is used:
the fixture must be rebuildable without the models.

What is copied, and why (the layout is LFW's: images/<Name>/<Name>_000N.jpg):
- train side (peopleDevTrain people only): the photos of the first two same-person and first two
  different-person pairs of pairsDevTrain.txt (tests/recognizers/test_tfjs.py reproduces exactly
  those pairs), and Aaron_Eckhart_0001 / Abel_Pacheco_0001, the single faces the detector,
  recognizer, cloak and server tests use. For each person photos 1..N are copied, N being the
  highest number needed, so that the people file's counts hold.
- test side (peopleDevTest people only): TEST_PEOPLE people drawn with a fixed seed from the
  peopleDevTest people who have at least PHOTOS_PER_TEST_PERSON photos, photos 1..that many of
  each. Galleries, identification, swaps and recovery evaluation in the tests use these.
- peopleDevTrain.txt / peopleDevTest.txt: LFW's format (count line, then `name<TAB>n`), the chosen
  people in LFW's file order, `n` = the number of photos copied (not LFW's count for that person).
- pairs.txt: LFW's View-2 format (`10<TAB>2`, then per fold 2 same and 2 different pairs) built
  from the test-side photos with a fixed seed. It is NOT LFW's official pairs.txt: its folds share
  people, so accuracies computed on it say nothing about LFW; it exists so that the 10-fold code
  path runs end to end.
"""
from __future__ import annotations

import argparse
import itertools
import random
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "lfw-mini"
TEST_PEOPLE = 8
PHOTOS_PER_TEST_PERSON = 3
SEED = 17
FOLDS, PAIRS_PER_FOLD = 10, 2
# single train-side photos named by tests (detector batch, dlib port vs native, server, swaps)
EXTRA_TRAIN = {"Aaron_Eckhart": 1, "Abel_Pacheco": 1}
MAX_BYTES = 2_000_000  # ../shared/DESIGN.md "Data": well under 2 MB in the repository


def _people(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text().strip().splitlines()[1:]
    return [(ln.split()[0], int(ln.split()[1])) for ln in lines]


def _first_dev_pairs(path: Path, k: int) -> list[tuple[str, int]]:
    """(name, index) of every photo in the first k same and first k different pairs of a Dev pairs file."""
    lines = path.read_text().strip().splitlines()
    n = int(lines[0].split()[0])
    same = [ln.split() for ln in lines[1:1 + n]][:k]
    diff = [ln.split() for ln in lines[1 + n:1 + 2 * n]][:k]
    out = [(r[0], int(i)) for r in same for i in (r[1], r[2])]
    out += [(r[0], int(r[1])) for r in diff] + [(r[2], int(r[3])) for r in diff]
    return out


def choose(lfw: Path) -> tuple[dict[str, int], dict[str, int]]:
    """({train name: photos}, {test name: photos}), deterministic for a given LFW."""
    train_people = dict(_people(lfw / "peopleDevTrain.txt"))
    test_people = dict(_people(lfw / "peopleDevTest.txt"))
    train: dict[str, int] = {}
    for name, idx in _first_dev_pairs(lfw / "pairsDevTrain.txt", 2) + list(EXTRA_TRAIN.items()):
        if name not in train_people:
            raise SystemExit(f"{name} is not a peopleDevTrain person; the train side must hold only those")
        train[name] = max(train.get(name, 0), idx)
    pool = sorted(n for n, c in test_people.items() if c >= PHOTOS_PER_TEST_PERSON)
    test = {n: PHOTOS_PER_TEST_PERSON for n in random.Random(SEED).sample(pool, TEST_PEOPLE)}
    assert not set(train) & set(test)  # LFW's View-1 splits are disjoint; so are ours
    return train, test


def make_pairs(test: dict[str, int]) -> list[str]:
    """pairs.txt lines: FOLDS folds of PAIRS_PER_FOLD same + PAIRS_PER_FOLD different pairs, no pair twice."""
    rng = random.Random(SEED)
    names = sorted(test)
    same = [(n, i, j) for n in names for i, j in itertools.combinations(range(1, test[n] + 1), 2)]
    diff = [(a, i, b, j) for a, b in itertools.combinations(names, 2)
            for i in range(1, test[a] + 1) for j in range(1, test[b] + 1)]
    need = FOLDS * PAIRS_PER_FOLD
    if len(same) < need:
        raise SystemExit(f"only {len(same)} same-person pairs for {need} needed")
    same, diff = rng.sample(same, need), rng.sample(diff, need)
    lines = [f"{FOLDS}\t{PAIRS_PER_FOLD}"]
    for f in range(FOLDS):
        lines += ["\t".join(map(str, r)) for r in same[f * PAIRS_PER_FOLD:(f + 1) * PAIRS_PER_FOLD]]
        lines += ["\t".join(map(str, r)) for r in diff[f * PAIRS_PER_FOLD:(f + 1) * PAIRS_PER_FOLD]]
    return lines


def build(lfw: Path, out: Path) -> int:
    if not (lfw / "images").is_dir():
        raise SystemExit(f"LFW not found at {lfw} (expected images/); pass --lfw or set FACEPROV_LFW")
    if out.resolve() == lfw.resolve():
        raise SystemExit("--out is the LFW folder itself")
    train, test = choose(lfw)
    if (out / "images").exists():
        shutil.rmtree(out / "images")  # rebuild from scratch: no photo of an earlier choice stays
    for name, n in {**train, **test}.items():
        (out / "images" / name).mkdir(parents=True)
        for i in range(1, n + 1):
            rel = f"images/{name}/{name}_{i:04d}.jpg"
            shutil.copyfile(lfw / rel, out / rel)  # the file itself, byte for byte
    for fname, chosen in (("peopleDevTrain.txt", train), ("peopleDevTest.txt", test)):
        order = [n for n, _ in _people(lfw / fname) if n in chosen]  # LFW's own order
        (out / fname).write_text(f"{len(order)}\n" + "".join(f"{n}\t{chosen[n]}\n" for n in order))
    (out / "pairs.txt").write_text("\n".join(make_pairs(test)) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    photos = sum(1 for _ in (out / "images").rglob("*.jpg"))
    print(f"{out}: {photos} photos of {len(train) + len(test)} people "
          f"({len(train)} peopleDevTrain, {len(test)} peopleDevTest), {total} bytes in all")
    if total > MAX_BYTES:
        raise SystemExit(f"{total} bytes is more than the {MAX_BYTES} allowed in the repository")
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, default=None, help="full LFW root (default: FACEPROV_LFW or ../shared/data/lfw)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    if a.lfw is None:
        sys.path.insert(0, str(ROOT))
        from faceprov.config import settings  # the same default the package uses

        a.lfw = settings().lfw_root
    build(a.lfw, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
