"""One answer per face: who was pasted in (source), whose photo it was (target), or an honest
"no confident match".

Each recovery model gives a recovered source and target face; the swapped face itself is a
candidate for the source side (a swap shows the source's features). A *judge* recognizer (sface by
default: a black box, in no recovery loss) embeds them. For each side the rule names

- `inputs`: which of {swapped, swapped-inner (source side), swapped-outer (target side), dfrec,
  drn, drfsi} are fused. Each input is compared with the gallery through its own *view* of the
  judge: the swapped face's inner region (`<judge>-inner`, faceprov/recognizers/regions.py: where
  a swap puts the source) against the gallery's inner regions, its outer region (`<judge>-outer`:
  the target's head and hair) against theirs, everything else whole-face. The fused similarity to
  a person is the mean of the inputs' cosine similarities to that person (score-level fusion, so
  inputs from different views combine). Chosen by measurement on training triplets: the subset
  with the best gallery top-1, among inputs that beat the no-recovery baseline on their own (one
  that does not is excluded for that side, and the rule says so).
- `normalize`: "" (the fused cosine as it is) or "hub": each gallery person's score minus that
  person's mean similarity to the rest of the gallery (through the same views). Some people look
  like many others to the judge ("hubs") and collect wrong top-1s from soft or mixed faces; the
  offset removes that. Chosen like the inputs, by training top-1. A gallery too small to estimate
  it (< HUB_MIN_ROWS people) and registry records (no population to compare with at search time)
  get `hub_bound` instead: the largest offset of any calibration gallery person, so their scores
  are never more lenient than a gallery person's.
- `threshold`: the fused best match must reach it. Set so that at most `fmr` (1 %) of
  *non-mated* searches (the true person removed from the gallery: every name would be wrong)
  clear it, on recovered faces, not on clean LFW pairs.
- `margin`: the best match must beat the runner-up by it. The smallest margin for which, on the
  mated training searches, wrong names stay at or below `max_wrong` (1 %) of all searches.

`identity` is null unless both hold; `decision` says why. `confidence` is the share of the
training searches accepted by the rule at or above this fused similarity that named the right
person (an empirical precision, from `precision_curve`), not a probability of anything else.

The rule is stored as JSON (`faceprov/weights/fusion.json`), written by `ops/bench/fusion`.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

RULE_PATH = Path(__file__).resolve().parent.parent / "weights" / "fusion.json"
SIDES = ("source", "target")
SWAPPED = "swapped"
# region views of the swapped face: input name -> region of the judge it is seen through
REGION_INPUTS = {"swapped-inner": "inner", "swapped-outer": "outer"}
SIDE_REGION = {"source": "swapped-inner", "target": "swapped-outer"}
WHOLE = ""   # the whole-face view (the judge itself)
HUB = "hub"
NORMALIZATIONS = ("", HUB)
HUB_MIN_ROWS = 50   # fewer gallery people: the mean similarity to the others is too noisy to use


def view_of(name: str) -> str:
    """The judge's view an input is compared through: "inner", "outer" or "" (whole face)."""
    return REGION_INPUTS.get(name, WHOLE)


def view_recognizer(judge: str, view: str) -> str:
    """Recognizer name of a view of the judge (`sface`, `sface-inner`, `sface-outer`)."""
    return judge if view == WHOLE else f"{judge}-{view}"


def _galleries(g) -> dict:
    return dict(g) if isinstance(g, Mapping) else {WHOLE: g}


_HUBS: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}


def hub_offsets(m: np.ndarray) -> np.ndarray | None:
    """(n,) mean cosine of each gallery row to every other row, or None for fewer than
    HUB_MIN_ROWS rows. Cached per matrix object (a gallery is searched many times)."""
    hit = _HUBS.get(id(m))
    if hit is not None and hit[0] is m:
        return hit[1]
    m32 = np.asarray(m, np.float32)
    n = len(m32)
    out = None
    if n >= HUB_MIN_ROWS:
        tot = np.zeros(n, np.float64)
        for i in range(0, n, 2048):   # blocks: a 100k-person gallery never builds an n x n matrix
            tot[i:i + 2048] = (m32[i:i + 2048] @ m32.T).sum(1)
        diag = np.einsum("ij,ij->i", m32, m32)
        out = ((tot - diag) / (n - 1)).astype(np.float32)
    if len(_HUBS) > 16:
        _HUBS.clear()
    _HUBS[id(m)] = (m, out)
    return out


def fused_scores(vectors: Mapping[str, np.ndarray], inputs: Iterable[str], galleries, normalize: str = "",
                 hub_bound: float | None = None) -> np.ndarray | None:
    """Fused similarity of a search to every gallery row: the mean over the inputs that are
    present of cos(input, the row seen through the input's view), with normalize="hub" minus the
    mean over the same views of the row's hub offset (`hub_offsets`; `hub_bound` for every row
    when the gallery is too small). `galleries` is a (n, d) matrix of the whole-face view or
    {view: matrix}, rows in the same order."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}")
    gs = _galleries(galleries)
    parts, hubs = [], []
    for k in inputs:
        v = vectors.get(k)
        if v is None:
            continue
        view = view_of(k)
        if view not in gs:
            raise KeyError(f"input {k!r} needs the gallery's {view!r} view, which it does not have")
        v = np.asarray(v, np.float32)
        parts.append(gs[view] @ (v / max(np.linalg.norm(v), 1e-12)))
        if normalize == HUB:
            hubs.append(hub_offsets(gs[view]))
    if not parts:
        return None
    s = np.mean(parts, axis=0)
    if normalize == HUB:
        if any(h is None for h in hubs):
            if hub_bound is None:
                raise ValueError(f"a gallery of {len(s)} people is too small for hub offsets and no hub_bound was given")
            return s - hub_bound
        s = s - np.mean(hubs, axis=0)
    return s


def hub_bound(gvec, inputs: Sequence[str]) -> float | None:
    """The largest fused hub offset of any row of a gallery, for these inputs' views."""
    gs = _galleries(gvec)
    hubs = [hub_offsets(gs[view_of(k)]) for k in inputs]
    return None if any(h is None for h in hubs) else round(float(np.max(np.mean(hubs, axis=0))), 6)


@dataclass
class SideRule:
    inputs: list[str]
    threshold: float
    margin: float
    excluded: dict[str, str] = field(default_factory=dict)   # model -> why it is not used
    precision_curve: list[list[float]] = field(default_factory=list)  # [[similarity, precision], ...] ascending
    calibration: dict = field(default_factory=dict)            # rates measured on the training searches
    normalize: str = ""                                        # "" or "hub" (see the module docstring)
    hub_bound: float | None = None                             # with "hub": offset of unknown rows


@dataclass
class FusionRule:
    judge: str
    fmr: float
    max_wrong: float
    sides: dict[str, SideRule]
    data: dict = field(default_factory=dict)                   # what it was calibrated on

    def to_json(self) -> dict:
        return {"judge": self.judge, "fmr": self.fmr, "max_wrong": self.max_wrong, "data": self.data,
                "sides": {k: asdict(v) for k, v in self.sides.items()}}

    @classmethod
    def from_json(cls, d: Mapping) -> "FusionRule":
        return cls(judge=d["judge"], fmr=float(d["fmr"]), max_wrong=float(d["max_wrong"]), data=dict(d.get("data", {})),
                   sides={k: SideRule(**v) for k, v in d["sides"].items()})

    def save(self, path: Path = RULE_PATH) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | None = None) -> "FusionRule | None":
        p = Path(path or RULE_PATH)
        return cls.from_json(json.loads(p.read_text())) if p.exists() else None


def decide(candidates: Sequence[Mapping], rule: SideRule | None) -> dict:
    """Apply a side's rule to the fused search's candidates ([{name, similarity, ...}], any
    order; gallery and registry hits together). Returns the side's answer dict."""
    cands = sorted(candidates, key=lambda c: -float(c["similarity"]))
    best = cands[0] if cands else None
    second = float(cands[1]["similarity"]) if len(cands) > 1 else None
    out = {"identity": None, "confidence": None,
           "similarity": None if best is None else round(float(best["similarity"]), 4),
           "runner_up_similarity": None if second is None else round(second, 4),
           "candidate": None if best is None else {k: v for k, v in best.items() if k != "similarity"}}
    if rule is None:
        out["decision"] = "abstain: no calibrated rule"
        return out
    out["threshold"], out["margin"] = round(rule.threshold, 4), round(rule.margin, 4)
    if best is None:
        out["decision"] = "abstain: nobody to compare with (empty gallery and registry)"
        return out
    s = float(best["similarity"])
    gap = s - (second if second is not None else -1.0)
    if s < rule.threshold:
        out["decision"] = f"abstain: best match {s:.2f} is below the threshold {rule.threshold:.2f}"
    elif best.get("complete") is False:
        out["decision"] = ("abstain: the best registry match is outside one input's nearest hits, so its fused "
                           "similarity is only bounded")
    elif gap < rule.margin:
        out["decision"] = (f"abstain: best match beats the runner-up by {gap:.2f}, less than the margin "
                           f"{rule.margin:.2f}")
    else:
        out["identity"] = best.get("name") or best.get("identity") or best.get("identity_id")
        out["confidence"] = round(_precision_at(rule.precision_curve, s), 3)
        out["decision"] = "named"
    return out


def _precision_at(curve: Sequence[Sequence[float]], s: float) -> float:
    if not curve:
        return float("nan")
    xs = [c[0] for c in curve]
    i = int(np.searchsorted(xs, s, side="right")) - 1
    return float(curve[max(i, 0)][1])


# --------------------------------------------------------------------------------------------
# calibration


@dataclass
class Search:
    """One side of one training triplet: the judge's embeddings of every input, the truth."""
    side: str
    truth: str
    vectors: dict[str, np.ndarray]


def _best_two(s: np.ndarray, exclude: int | None = None) -> tuple[int, float, float]:
    s = s.copy()
    if exclude is not None:
        s[exclude] = -np.inf
    o = np.argpartition(-s, 1)[:2] if len(s) > 1 else np.array([int(np.argmax(s))])
    o = o[np.argsort(-s[o])]
    return int(o[0]), float(s[o[0]]), float(s[o[1]]) if len(o) > 1 else -1.0


def evaluate_inputs(searches: Sequence[Search], ids: Sequence[str], gvec, inputs: Sequence[str],
                    normalize: str = "", hub_bound: float | None = None) -> dict:
    """Mated top-1 of one input subset + the arrays the rule needs. `gvec`: the gallery's
    whole-face matrix or {view: matrix} (see `fused_scores`)."""
    index = {n: i for i, n in enumerate(ids)}
    best_m, gap_m, ok_m, best_n, gap_n = [], [], [], [], []
    for s in searches:
        if s.truth not in index:
            continue
        sc = fused_scores(s.vectors, inputs, gvec, normalize, hub_bound)
        if sc is None:
            continue
        i, b, r = _best_two(sc)
        best_m.append(b), gap_m.append(b - r), ok_m.append(ids[i] == s.truth)
        _, b, r = _best_two(sc, exclude=index[s.truth])
        best_n.append(b), gap_n.append(b - r)
    a = lambda x: np.asarray(x, np.float64)  # noqa: E731
    return {"n": len(ok_m), "top1": float(np.mean(ok_m)) if ok_m else 0.0, "best_m": a(best_m), "gap_m": a(gap_m),
            "ok_m": np.asarray(ok_m, bool), "best_n": a(best_n), "gap_n": a(gap_n)}


def calibrate_side(searches: Sequence[Search], ids: Sequence[str], gvec, candidates: Sequence[str], *,
                   fmr: float = 0.01, max_wrong: float = 0.01, baseline: str = SWAPPED) -> tuple[SideRule, dict]:
    """Choose inputs, threshold and margin for one side (see the module docstring)."""
    singles = {k: evaluate_inputs(searches, ids, gvec, [k]) for k in candidates}
    base = singles.get(baseline, {}).get("top1")
    excluded = {}
    usable = []
    for k, r in singles.items():
        if r["n"] == 0:
            excluded[k] = "no output on the training searches"
        elif k != baseline and base is not None and r["top1"] <= base:
            excluded[k] = f"gallery top-1 {r['top1']:.3f} does not beat the no-recovery baseline {base:.3f}"
        else:
            usable.append(k)
    subsets = {}
    for norm in NORMALIZATIONS:
        if norm == HUB and any(hub_offsets(m) is None for m in _galleries(gvec).values()):
            continue   # calibration gallery too small to measure the offsets on
        for n in range(1, len(usable) + 1):
            for sub in itertools.combinations(usable, n):
                subsets[(norm, sub)] = evaluate_inputs(searches, ids, gvec, list(sub), norm)
    if not subsets:
        raise ValueError("no usable input for this side")
    # best top-1; ties -> no normalisation, fewer inputs (cheaper, and nothing without a measured benefit)
    norm, choice = max(subsets, key=lambda k: (round(subsets[k]["top1"], 6), k[0] == "", -len(k[1])))
    r = subsets[(norm, choice)]
    thr = float(np.quantile(r["best_n"], 1 - fmr, method="higher")) + 1e-6 if len(r["best_n"]) else 1.0
    total = len(r["ok_m"]) + len(r["best_n"])
    margin, acc = None, None
    for m in np.round(np.arange(0.0, 0.5001, 0.005), 4):
        acc_m = (r["best_m"] >= thr) & (r["gap_m"] >= m)
        acc_n = (r["best_n"] >= thr) & (r["gap_n"] >= m)
        wrong = int((acc_m & ~r["ok_m"]).sum() + acc_n.sum())
        if wrong <= max_wrong * total:
            margin, acc = float(m), (acc_m, acc_n, wrong)
            break
    if margin is None:  # nothing is safe enough: a rule that never names anyone
        margin = 1.0
        acc = (np.zeros_like(r["ok_m"]), np.zeros(len(r["best_n"]), bool), 0)
    acc_m, acc_n, wrong = acc
    # precision curve over the accepted training searches (mated right / all accepted) by similarity
    sims = np.r_[r["best_m"][acc_m], r["best_n"][acc_n]]
    right = np.r_[r["ok_m"][acc_m], np.zeros(int(acc_n.sum()), bool)]
    curve = []
    if len(sims):
        for q in np.unique(np.quantile(sims, np.linspace(0, 0.9, 10))):
            sel = sims >= q
            curve.append([round(float(q), 4), round(float(right[sel].mean()), 4)])
    cal = {"searches_mated": int(len(r["ok_m"])), "searches_non_mated": int(len(r["best_n"])),
           "top1_fused": round(r["top1"], 4),
           "named_right": round(float((acc_m & r["ok_m"]).mean()), 4) if len(acc_m) else 0.0,
           "named_wrong_mated": round(float((acc_m & ~r["ok_m"]).mean()), 4) if len(acc_m) else 0.0,
           "named_non_mated": round(float(acc_n.mean()), 4) if len(acc_n) else 0.0,
           "abstained_mated": round(float((~acc_m).mean()), 4) if len(acc_m) else 0.0,
           "single_top1": {k: round(v["top1"], 4) for k, v in singles.items()},
           "subset_top1": {("hub: " if nm else "") + "+".join(k): round(v["top1"], 4)
                           for (nm, k), v in subsets.items()}}
    return SideRule(inputs=list(choice), threshold=round(thr, 6), margin=margin, excluded=excluded,
                    precision_curve=curve, calibration=cal, normalize=norm,
                    hub_bound=hub_bound(gvec, choice) if norm == HUB else None), r


def calibrate(searches: Sequence[Search], ids: Sequence[str], gvec, models: Sequence[str], *,
              judge: str, fmr: float = 0.01, max_wrong: float = 0.01, data: dict | None = None) -> FusionRule:
    """`gvec`: whole-face gallery matrix or {view: matrix}; a side's region input is a candidate
    when the gallery has its view and the searches carry it."""
    gs = _galleries(gvec)
    sides = {}
    for side in SIDES:
        ss = [s for s in searches if s.side == side]
        region = SIDE_REGION[side]
        cands = [SWAPPED, *([region] if view_of(region) in gs and any(s.vectors.get(region) is not None
                                                                    for s in ss) else []), *models]
        sides[side], _ = calibrate_side(ss, ids, gvec, cands, fmr=fmr, max_wrong=max_wrong)
    return FusionRule(judge=judge, fmr=fmr, max_wrong=max_wrong, sides=sides, data=dict(data or {}))


def apply_rule(searches: Sequence[Search], ids: Sequence[str], gvec, rule: FusionRule) -> dict:
    """Held-out numbers of a rule: per side top-1 of the fused search, share named right, named
    wrong (a wrong person), abstained; and on non-mated searches the share that names anyone."""
    out = {}
    for side in SIDES:
        ss = [s for s in searches if s.side == side]
        sr = rule.sides[side]
        r = evaluate_inputs(ss, ids, gvec, sr.inputs, sr.normalize, sr.hub_bound)
        if r["n"] == 0:
            out[side] = {"n": 0}
            continue
        acc_m = (r["best_m"] >= sr.threshold) & (r["gap_m"] >= sr.margin)
        acc_n = (r["best_n"] >= sr.threshold) & (r["gap_n"] >= sr.margin)
        out[side] = {"n": r["n"], "top1_fused": round(r["top1"], 4),
                     "named_right": round(float((acc_m & r["ok_m"]).mean()), 4),
                     "named_wrong": round(float((acc_m & ~r["ok_m"]).mean()), 4),
                     "abstained": round(float((~acc_m).mean()), 4),
                     "non_mated_named": round(float(acc_n.mean()), 4)}
        base = evaluate_inputs(ss, ids, gvec, [SWAPPED])
        out[side]["top1_swapped_face"] = round(base["top1"], 4)
        region = SIDE_REGION[side]
        if view_of(region) in _galleries(gvec) and any(s.vectors.get(region) is not None for s in ss):
            out[side]["top1_swapped_region"] = round(evaluate_inputs(ss, ids, gvec, [region])["top1"], 4)
    return out


# --------------------------------------------------------------------------------------------
# collecting the judge's embeddings of recovered faces


def collect(swaps: Path, verifier, judge, *, labels: Path | None = None, root: Path | None = None,
            limit: int | None = None, progress: Callable[[str, int, int], None] | None = None):
    """Judge embeddings of every input (swapped face, each model's recovered source and target)
    for the triplets of a `faceprov swap make` folder, through the verifier's own ISM alignment
    and recovery, plus the swapped face's inner (source side) and outer (target side) region views.
    Returns (searches, clean, gallery): `clean` = the judge's embeddings of the true source/target
    photos (the ceiling), gallery = one photo per identity of the labels TSV that is in no triplet,
    with its region views."""
    from ..data.landmarks import landmarks_for
    from ..faces import io as fio
    from ..swap.make import read_triplets
    from .verify import Gallery

    swaps = Path(swaps)
    make = json.loads((swaps / "make.json").read_text()) if (swaps / "make.json").exists() else {}
    root = Path(root or make.get("root") or "")
    labels = Path(labels or make.get("labels") or "")
    rows = read_triplets(swaps)[:limit]
    lm_sw, miss = landmarks_for(swaps, [r["swapped"] for r in rows])
    st = list(dict.fromkeys(p for r in rows for p in (r["source"], r["target"])))
    lm_st, miss_st = landmarks_for(root, st)

    from .. import recognizers as R

    regions = {name: R.get(view_recognizer(judge.name, view_of(name)), str(judge.device))
               for name in SIDE_REGION.values()}
    gallery = Gallery.from_tsv(labels, root, judge, exclude=st, views=list(regions.values()))
    searches, clean = [], []
    for i, r in enumerate(rows):
        if progress:
            progress("recover", i, len(rows))
        if r["swapped"] in miss:
            continue
        rgb = fio.read(swaps / r["swapped"]).rgb
        lm = lm_sw[r["swapped"]]
        fc = verifier.analyse_faces(rgb, [lm], recover="always")[0]
        vec_s = {SWAPPED: judge.embed_faces([(rgb, lm)])[0]}
        vec_t = {SWAPPED: vec_s[SWAPPED]}
        vec_s[SIDE_REGION["source"]] = regions[SIDE_REGION["source"]].embed_faces([(rgb, lm)])[0]
        vec_t[SIDE_REGION["target"]] = regions[SIDE_REGION["target"]].embed_faces([(rgb, lm)])[0]
        for kind, rec in fc.recovered.items():
            e = verifier.embed_recovered(np.stack([rec.source, rec.target]), kind, recognizer=judge)
            vec_s[kind], vec_t[kind] = e[0], e[1]
        searches.append(Search("source", r["source_identity"], vec_s))
        searches.append(Search("target", r["target_identity"], vec_t))
        for side, p, who in (("source", r["source"], r["source_identity"]), ("target", r["target"], r["target_identity"])):
            if p not in miss_st:
                clean.append(Search(side, who, {"clean": judge.embed_faces([(fio.read(root / p).rgb, lm_st[p])])[0]}))
    if progress:
        progress("recover", len(rows), len(rows))
    return searches, clean, gallery
