"""Ship a trained ISM / DFREC / DRFSI / DRN run: copy RUN/model/ to faceprov/weights/<kind>/ with
a MODEL_CARD.md written from the run's own configuration and log (data, recognizers, steps,
losses, the last held-out evaluation). The card says where its numbers come from; the end-to-end
numbers are in docs/benchmarks.md (`ops/bench/recovery`).

    .venv/bin/python -m faceprov.recover.export RUN [DEST] [--max-mb 20]
        [--set sample_start=0.4 --why "ops/bench/drfsi_sampling on training triplets"]

`--set` changes an inference-only setting of the shipped config (DRFSI's `sample_start` and
`sample_steps`; nothing the weights depend on), and the card records it with `--why`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .verify import WEIGHTS_ROOT

NOTES = {
    "ism": "DFREC's Identity Segmentation Module: DeepLabv3+ on a randomly initialised timm EfficientNet-B0; "
           "outputs the manipulated-region mask and a real/fake score.",
    "dfrec": "DFREC: SIRM (attention UNet separating source/target identity features) + TIRM (ViT masked "
             "auto-encoder, semantic-guided masking from the ISM mask, Identity Fusion Decoder).",
    "drn": "DRN: UNet identity and attribute encoders with a shared decoder (disentangle and reverse).",
    "drfsi": "DRFSI: pixel-space conditional diffusion (diffusers UNet2DModel) with an AttributeNet, DDIM sampling.",
}


def _read_log(run: Path) -> list[dict]:
    f = run / "train.log.jsonl"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _load_any(kind: str, path: Path):
    from .verify import load_ism, load_recovery

    return load_ism(path) if kind == "ism" else load_recovery(kind, path)


#: per model, the config fields that only change inference (may be set at export)
INFERENCE_SETTINGS = {"drfsi": {"sample_start": float, "sample_steps": int}}


def export(run_dir: str | Path, dest: str | Path | None = None, max_mb: float = 20.0,
           dtype: str = "float16", settings: dict[str, str] | None = None, why: str = "") -> Path:
    """Weights are re-saved in `dtype` (float16 halves the repository's size; the loaders compute
    in float32); the card describes what was shipped. `settings`: inference-only config fields
    (INFERENCE_SETTINGS) to ship with other values than the run's, `why`: how they were chosen."""
    import torch

    from ..model_card import display_path, warm_start_history

    run = Path(run_dir)
    src = run / "model"
    info_f = src / "config.json"
    if not info_f.exists():
        raise FileNotFoundError(f"{src}: no exported model (has the run reached a checkpoint?)")
    info = json.loads(info_f.read_text())
    kind = info.get("model", "ism")
    dest = Path(dest) if dest else WEIGHTS_ROOT / kind
    model = _load_any(kind, src)
    changed = {}
    allowed = INFERENCE_SETTINGS.get(kind, {})
    for k, v in (settings or {}).items():
        if k not in allowed:
            raise ValueError(f"{k!r} is not an inference setting of {kind} "
                             f"(allowed: {', '.join(allowed) or 'none'})")
        old = getattr(model.config, k)
        setattr(model.config, k, allowed[k](v))
        changed[k] = (old, getattr(model.config, k))
    if changed and hasattr(model, "sample"):  # a value the model refuses fails here, not in use
        import torch as _t

        s = model.config.size
        model.sample(_t.rand(1, 3, s, s), _t.zeros(1, dtype=_t.long), steps=1)
    tmp = dest.with_name(dest.name + ".export-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, dtype=getattr(torch, dtype))
    size_mb = (tmp / "model.safetensors").stat().st_size / 1e6
    if size_mb > max_mb:
        shutil.rmtree(tmp)
        raise ValueError(f"{src}: {size_mb:.1f} MB is over the {max_mb:g} MB limit for shipped weights")
    info = json.loads((tmp / "config.json").read_text())
    cfg = json.loads((run / "train_config.json").read_text()) if (run / "train_config.json").exists() else {}
    log = _read_log(run)
    start = next((r for r in log if r.get("msg") == "start"), {})
    evals = [r for r in log if r.get("kind") == "eval"]
    trains = [r for r in log if r.get("kind") == "train"]
    # a warm-started run: keep the parent's training history (its card may be the one replaced)
    parent = warm_start_history(cfg.get("init_from"))
    if start == {}:  # resumed or warm-started logs: the first info line names the device
        start = next((r for r in log if r.get("kind") == "info" and r.get("device")), {})
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("model.safetensors", "config.json"):
        (tmp / f).replace(dest / f)
    shutil.rmtree(tmp)
    meta = info.get("metadata", {})
    mcfg = info.get("config", {})
    lines = [f"# faceprov {kind} model", "", NOTES.get(kind, ""), "",
             f"{info.get('parameters', 0):,} parameters, {size_mb:.1f} MB safetensors ({info.get('dtype')}); "
             f"config: `{json.dumps(mcfg)}`.", "", "## Training", "",
             f"- data: {meta.get('data') or 'faceprov swap make triplets from LFW peopleDevTrain people'}; "
             f"training folders {cfg.get('swaps')}, "
             + (f"held-out folders for evaluation {cfg.get('val_swaps')} (peopleDevTest people; see the run's "
                "make.json for the swap method and seed)" if cfg.get("val_swaps") else
                f"evaluation during training on {float(cfg.get('val_fraction') or 0):.0%} of the training triplets "
                "held out (same people split, other swaps)"),
             f"- steps: {meta.get('step')}, batch {cfg.get('batch_size')}, lr "
             f"{cfg.get('lr') or {'dfrec': 1e-4, 'drn': 3e-4, 'drfsi': 1e-4}.get(kind)}, "
             f"real ratio {cfg.get('real_ratio')}, device {start.get('device', 'cpu')}"]
    if kind != "ism":
        lines.append(f"- white-box recognizers (in the loss): {', '.join(cfg.get('recognizers') or [])}; "
                     f"black-box judge (never in a loss): {cfg.get('eval_recognizer')}")
        lines.append(f"- loss weights: {json.dumps(cfg.get(f'{kind}_loss'))}")
    else:
        lines.append(f"- losses: BCE {cfg.get('w_bce')} + Dice {cfg.get('w_dice')} on the mask, "
                     f"BCE {cfg.get('w_cls')} on the real/fake score")
        if cfg.get("self_blend"):
            lines.append(f"- self-blended pseudo-fakes (`faceprov/recover/self_blend.py`): "
                         f"{cfg['self_blend']:.0%} of the fake slots of each batch are real crops "
                         "blended with an altered copy of themselves in a moved, blurred face mask"
                         + (" (strong variant: the SBI paper's wider source transforms)" if cfg.get("self_blend_strong")
                            else "")
                         + ("; seam shapes varied (prior, ellipse, rounded box; the ellipse is also the seam of "
                            "the held-out `affine` method)" if cfg.get("self_blend_shapes") else ""))
        if cfg.get("jpeg"):
            lines.append(f"- JPEG re-encoding (quality 60-95) of {cfg['jpeg']:.0%} of the samples, real and fake")
    for k, (old, new) in changed.items():
        lines.append(f"- inference setting `{k}` = {new} (the run trained and evaluated with {old})"
                     + (f"; chosen by {why}" if why else ""))
    if cfg.get("init_from"):
        lines.append(f"- warm start from `{display_path(cfg['init_from'])}` (steps above are this run's only)")
        if parent:
            lines += ["", "### The warm start's own training", "", parent]
    if trains:
        lines.append(f"- last training log line: `{json.dumps({k: v for k, v in trains[-1].items() if k != 'time'})}`")
    lines += ["", "## Last held-out evaluation during training" if cfg.get("val_swaps") else
              f"## Last evaluation during training (a {cfg.get('val_fraction', 0.1):.0%} validation split of the "
              "training folders: same swap methods, other photos)", ""]
    if evals:
        e = {k: v for k, v in evals[-1].items() if k not in ("time", "kind")}
        lines.append(f"`{json.dumps(e)}`")
        if kind != "ism":
            lines.append("")
            lines.append("(racc_* / sim_* are measured with the black-box recognizer on the held-out folder; "
                         "base_* is the no-recovery baseline: the swapped face itself.)")
    else:
        lines.append("(none logged)")
    lines += ["", "End-to-end numbers (re-detected, through `faceprov.recover.verify`): docs/benchmarks.md, "
              "section *Face-swap detection and recovery* (`ops/bench/recovery`).", ""]
    (dest / "MODEL_CARD.md").write_text("\n".join(lines))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m faceprov.recover.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("dest", nargs="?")
    ap.add_argument("--max-mb", type=float, default=20.0)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an inference-only config setting to ship (e.g. sample_start=0.4)")
    ap.add_argument("--why", default="", help="how the --set values were chosen (goes on the card)")
    a = ap.parse_args(argv)
    settings = {}
    for kv in a.set:
        if "=" not in kv:
            ap.error(f"--set needs KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        settings[k] = v
    try:
        print(export(a.run, a.dest, a.max_mb, a.dtype, settings, a.why))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
