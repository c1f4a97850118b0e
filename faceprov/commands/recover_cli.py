"""CLI of face-swap data and recovery training: `faceprov swap make`, `faceprov train ism|dfrec|drn|drfsi`.

Registered in faceprov/cli.py:

    app.add_typer(recover_cli.swap_app, name="swap")
    train_app.command("ism")(recover_cli.train_ism)
    train_app.command("detector")(recover_cli.train_detector)
    train_app.command("dfrec")(recover_cli.train_dfrec)
    train_app.command("drn")(recover_cli.train_drn)
    train_app.command("drfsi")(recover_cli.train_drfsi)

Progress bars go to stderr; with --json the JSON document is the last thing on stdout.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

swap_app = typer.Typer(no_args_is_help=True, help="Synthetic face swaps (training/test data for recovery).")


def _say(msg: str) -> None:
    sys.stderr.write(msg.rstrip("\n") + "\n")


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


@swap_app.command("make")
def swap_make(labels: Path = typer.Option(..., "--labels", help="TSV with header path<TAB>identity"),
              root: Path = typer.Option(..., "--root", help="folder the TSV paths are relative to"),
              method: str = typer.Option("landmark", "--method", help="landmark | affine | lowres | mesh"),
              n: int = typer.Option(..., "--n", min=1, help="number of (source, target) pairs to draw"),
              out: Path = typer.Option(..., "--out", help="output folder (swapped/, mask/, triplets.tsv)"),
              seed: int = typer.Option(0, "--seed"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Swap the face of a source person into a target photo of another person, N times.

    Source = the identity pasted in; target = the photo it is pasted into. Writes swapped/*.png,
    mask/*.png (changed region) and triplets.tsv (source, target relative to --root; swapped, mask
    relative to --out; source_identity, target_identity). Pairs without landmarks are skipped."""
    from ..swap import METHODS, make_triplets

    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(METHODS)}")
    from tqdm.auto import tqdm

    bars: dict = {}

    def cb(label: str, done: int, total: int) -> None:
        b = bars.get(label)
        if b is None:
            b = bars[label] = tqdm(total=total, desc=label, dynamic_ncols=True, leave=False, file=sys.stderr)
        b.n = done
        b.refresh()

    try:
        res = make_triplets(labels, root, method, n, out, seed=seed, progress=cb)
    finally:
        for b in bars.values():
            b.close()
    if as_json:
        _emit(res)
    else:
        _say(f"{res['made']} swaps ({method}) in {out}; {res['skipped']} pair(s) skipped "
             f"{res['skipped_by_reason']}")
    if res["made"] == 0:
        raise typer.Exit(3)


def train_ism(swaps: list[Path] = typer.Option([], "--swaps", help="triplet folder(s) from `swap make` (repeat)"),
              val_swaps: list[Path] = typer.Option([], "--val-swaps", help="held-out triplet folder(s) for eval"),
              root: Optional[Path] = typer.Option(None, "--root",
                                                   help="root of the triplets' source/target paths (default: LFW)"),
              out: Path = typer.Option(Path("runs/ism"), "--out",
                                        help="run folder: last.ckpt, model/, train.log.jsonl"),
              preset: str = typer.Option("default", "--preset", help="default | tiny"),
              sets: list[str] = typer.Option([], "--set", help="KEY=VALUE overrides, e.g. steps=500 model.size=128"),
              steps: Optional[int] = typer.Option(None, "--steps"),
              device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
              no_resume: bool = typer.Option(False, "--no-resume"),
              no_progress: bool = typer.Option(False, "--no-progress")) -> None:
    """Train the ISM (swap mask + real/fake); resumes from OUT/last.ckpt unless --no-resume."""
    from ..recover.train_ism import apply_overrides, preset as make_preset, train_ism as run

    try:
        cfg = apply_overrides(make_preset(preset), list(sets))
    except ValueError as e:
        raise typer.BadParameter(str(e))
    cfg.swaps = [str(s) for s in swaps] or cfg.swaps
    cfg.val_swaps = [str(s) for s in val_swaps] or cfg.val_swaps
    cfg.root = str(root) if root else cfg.root
    if steps is not None:
        cfg.steps = steps
    if device:
        cfg.device = device
    if not cfg.swaps and not (out / "last.ckpt").exists():
        raise typer.BadParameter("give at least one --swaps folder")
    res = run(cfg, out, resume=not no_resume, progress=not no_progress)
    _emit(res)


def train_detector(swaps: list[Path] = typer.Option([], "--swaps", help="triplet folder(s) from `swap make` (repeat)"),
                   root: Optional[Path] = typer.Option(None, "--root",
                                                        help="root of the triplets' source/target paths (default: LFW)"),
                   ism: Optional[Path] = typer.Option(None, "--ism", help="ISM folder whose score is fused (default: shipped)"),
                   out: Path = typer.Option(Path("runs/detector"), "--out", help="run folder; the model goes to OUT/model"),
                   steps: int = typer.Option(600, "--steps", min=1),
                   hidden: int = typer.Option(256, "--hidden", min=1),
                   no_ism: bool = typer.Option(False, "--no-ism", help="recognizer features only"),
                   view: str = typer.Option("both", "--view", help="ism | native | both (see faceprov.recover.feature_detector)"),
                   seed: int = typer.Option(0, "--seed"),
                   consistency: bool = typer.Option(False, "--consistency",
                                                    help="add the inner/outer identity distance (faceprov.recover."
                                                         "consistency), weighted by leave-one-method-out choice"),
                   consistency_photos: int = typer.Option(1500, "--consistency-photos", min=20,
                                                          help="clean training photos the consistency maps are fitted on"),
                   no_progress: bool = typer.Option(False, "--no-progress")) -> None:
    """Train the swap detector on frozen recognizer features (+ the ISM's score): minutes on a CPU.
    Then `ops/bench/detection --features OUT/model --write` sets its operating threshold."""
    from ..recover.feature_detector import FeatureDetectorConfig
    from ..recover.train_feature_detector import FeatureDetectorTrainConfig, train_feature_detector

    if not swaps:
        raise typer.BadParameter("give at least one --swaps folder (faceprov swap make on the training split)")
    for s in swaps:
        if not (s / "triplets.tsv").exists():
            raise typer.BadParameter(f"{s} has no triplets.tsv (make it with `faceprov swap make`)")
    cfg = FeatureDetectorTrainConfig(swaps=[str(s) for s in swaps], ism=str(ism) if ism else None,
                                     root=str(root) if root else None, steps=steps, seed=seed,
                                     consistency=consistency, consistency_photos=consistency_photos,
                                     model=FeatureDetectorConfig(hidden=hidden, ism_repeat=0 if no_ism else 16, view=view))
    path = train_feature_detector(cfg, out, progress=not no_progress)
    _emit({"model": str(path), **json.loads((path / "config.json").read_text())["metadata"]})


def _train_recover(kind: str):
    def command(swaps: list[Path] = typer.Option([], "--swaps", help="triplet folder(s) from `swap make` (repeat)"),
                val_swaps: list[Path] = typer.Option([], "--val-swaps", help="held-out triplet folder(s) for eval"),
                root: Optional[Path] = typer.Option(None, "--root",
                                                     help="root of the triplets' source/target paths (default: LFW)"),
                out: Path = typer.Option(Path(f"runs/{kind}"), "--out",
                                          help="run folder: last.ckpt, model/, train.log.jsonl"),
                preset: str = typer.Option("default", "--preset", help="default | tiny"),
                sets: list[str] = typer.Option([], "--set", help=f"KEY=VALUE overrides, e.g. {kind}.depth=4"),
                steps: Optional[int] = typer.Option(None, "--steps"),
                device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
                no_resume: bool = typer.Option(False, "--no-resume"),
                no_progress: bool = typer.Option(False, "--no-progress")) -> None:
        from ..recover.train_recover import apply_overrides, preset as make_preset, train_recover as run

        try:
            cfg = apply_overrides(make_preset(kind, preset), list(sets))
        except ValueError as e:
            raise typer.BadParameter(str(e))
        cfg.swaps = [str(s) for s in swaps] or cfg.swaps
        cfg.val_swaps = [str(s) for s in val_swaps] or cfg.val_swaps
        cfg.root = str(root) if root else cfg.root
        if steps is not None:
            cfg.steps = steps
        if device:
            cfg.device = device
        if not cfg.swaps and not (out / "last.ckpt").exists():
            raise typer.BadParameter("give at least one --swaps folder")
        try:
            res = run(cfg, out, resume=not no_resume, progress=not no_progress, resume_sets=list(sets))
        except ValueError as e:
            if "resumed run" in str(e):
                raise typer.BadParameter(str(e))
            raise
        _emit(res)

    command.__doc__ = {"dfrec": "Train DFREC (SIRM + TIRM) to restore source and target faces of a swap; resumable.",
                       "drn": "Train DRN (disentangle-and-reverse) to restore source and target faces; resumable.",
                       "drfsi": "Train DRFSI (conditional diffusion + AttributeNet) to restore source and target "
                                "faces; resumable."}[kind]
    return command


train_dfrec = _train_recover("dfrec")
train_drn = _train_recover("drn")
train_drfsi = _train_recover("drfsi")
