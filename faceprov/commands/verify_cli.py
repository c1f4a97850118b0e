"""`faceprov verify IMAGE` and `faceprov eval recovery`: thin wrappers over
`faceprov.recover.job.VerifyJob` and `faceprov.recover.evaluation.eval_recovery`.

Registered in faceprov/cli.py:

    app.command("verify")(verify_cli.verify)
    eval_app.command("recovery")(verify_cli.eval_recovery_cmd)

Messages go to stderr; with --json the JSON document is the last thing on stdout. A missing
model exits 4 with the command that trains it; a bad image exits 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .recover_cli import _emit, _say


def _load_verifier(model: str, ism: Optional[Path], model_dir: Optional[Path], recognizer: Optional[str],
                   device: Optional[str]):
    from ..recover.verify import RECOVERY_MODELS, ModelMissing, Verifier

    if model != "all" and model not in RECOVERY_MODELS:
        raise typer.BadParameter(f"--model must be one of {', '.join(RECOVERY_MODELS)} or all")
    if model_dir is not None and model == "all":
        raise typer.BadParameter("--model-dir needs one --model")
    try:
        return Verifier.load(model, device=device, ism_path=ism,
                             paths={model: model_dir} if model_dir else None, recognizer=recognizer)
    except ModelMissing as e:
        _say(f"missing model: {e}")
        raise typer.Exit(4)


def verify(image: Path = typer.Argument(..., help="the suspicious image"),
           model: str = typer.Option("all", "--model", help="dfrec | drfsi | drn | all"),
           gallery: Optional[Path] = typer.Option(None, "--gallery", help="TSV path<TAB>identity of known people"),
           root: Optional[Path] = typer.Option(None, "--root", help="folder the gallery paths are relative to"),
           db: Optional[str] = typer.Option(None, "--db", help="also search the identity registry at this database "
                                             "URL (default: none; FACEPROV_DB or the SQLite file with --registry)"),
           registry: bool = typer.Option(False, "--registry", help="search the default registry (FACEPROV_DB or "
                                         "the SQLite file under FACEPROV_HOME)"),
           evidence: Optional[Path] = typer.Option(None, "--evidence", help="write the evidence picture (PNG)"),
           always: bool = typer.Option(False, "--always-recover", help="run recovery even when the ISM says clean"),
           k: int = typer.Option(3, "--top", min=1, max=20, help="matches listed per recovered face"),
           ism: Optional[Path] = typer.Option(None, "--ism", help="ISM model folder (default: shipped)"),
           model_dir: Optional[Path] = typer.Option(None, "--model-dir", help="folder of the one --model"),
           recognizer: str = typer.Option("sface", "--recognizer", help="recognizer used to match recovered faces "
                                          "(the fused answer is calibrated for sface; another one abstains)"),
           device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default FACEPROV_DEVICE)"),
           no_record: bool = typer.Option(False, "--no-record", help="with a store: do not record the verification"),
           requester: Optional[str] = typer.Option(None, "--requester", help="account the verification is recorded "
                                                   "for (default: your user name)"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Is IMAGE a face swap? Restore the source and target faces and say whose they are.

    With a store (--db or --registry) the recovered faces are searched in its registry, the photo
    is traced to the cloak record it was made from, and the verification is recorded (verdict
    and the identities named, no pixels), as POST /v1/verify does."""
    import asyncio

    from ..config import local_user
    from ..faces.io import ImageError
    from ..recover.job import VerifyJob, VerifyOptions
    from ..recover.verify import Gallery

    if (gallery is None) != (root is None):
        raise typer.BadParameter("--gallery and --root go together")
    if not image.exists():
        raise ImageError(f"{image}: no such file", "not_found")
    data = image.read_bytes()
    v = _load_verifier(model, ism, model_dir, recognizer, device)
    gal = None
    if gallery is not None:
        if not gallery.exists():
            raise typer.BadParameter(f"gallery TSV {gallery} not found")
        gal = Gallery.from_tsv(gallery, root, v.recognizer, views=v.gallery_views())
    opts = VerifyOptions(recover="always" if always else "auto", k=k, evidence=evidence is not None,
                         record=not no_record)
    who = (requester or local_user()) if (db or registry) and not no_record else None

    async def run():
        # the one verify job (faceprov.recover.job) the server also runs
        repo = None
        if db or registry:
            from ..store.repo import open_repo

            repo = await open_repo(db, upgrade=True)
        try:
            return await VerifyJob(v, repo, gallery=gal).run(data, requester=who, options=opts)
        finally:
            if repo is not None:
                await repo.db.close()

    out = asyncio.run(run())
    res, prov = out.result, out.provenance
    doc = out.to_json()
    doc["input"] = str(image)
    if evidence is not None:
        evidence.parent.mkdir(parents=True, exist_ok=True)
        evidence.write_bytes(out.evidence)
        doc["evidence"] = str(evidence)
    if as_json:
        _emit(doc)
    else:
        p = res.manipulated_probability
        _say(f"{image}: {res.verdict}" + ("" if p is None else f" (manipulated probability {p:.2f})"))
        for f in res.faces:
            for side, who in (("source", "pasted in"), ("target", "whose photo")):
                a = f.to_json()[side]
                name = (f"{a['identity']} (similarity {a['similarity']:.2f}, confidence {a['confidence']:.2f})"
                        if a.get("identity") else a.get("decision", "abstain"))
                _say(f"  face {f.index} {side} ({who}): {name}")
            for kind, r in f.recovered.items():
                for side in ("source", "target"):
                    ms = getattr(r, f"{side}_matches")
                    best = (f"{ms[0].get('identity') or ms[0].get('identity_id')} {ms[0]['similarity']:.2f}"
                            f"{' (above the LFW threshold; not an identification)' if ms[0]['above_lfw_threshold'] else ' (below the LFW threshold)'}") if ms else "no gallery"
                    _say(f"    details: {kind} {side}: {best}")
        if prov is not None:
            for r in prov["records"][:3]:
                _say(f"  made from cloak record {r['record_id']} of {r['owner']} "
                     f"({r['by']}, distance {r['distance']})")
            if not prov["records"]:
                _say("  no cloak record matches the photo's context or the photo")
        if out.verification_id is not None:
            _say(f"recorded as verification {out.verification_id}")
        if evidence is not None:
            _say(f"evidence: {evidence}")


def eval_recovery_cmd(swaps: Path = typer.Option(..., "--swaps", help="folder from `faceprov swap make`"),
                      model: str = typer.Option("all", "--model", help="dfrec | drfsi | drn | all"),
                      recognizer: str = typer.Option("mobileface", "--recognizer",
                                                     help="black-box recognizer (never in a recovery loss)"),
                      labels: Optional[Path] = typer.Option(None, "--labels", help="default: the one in make.json"),
                      root: Optional[Path] = typer.Option(None, "--root", help="default: the one in make.json"),
                      limit: Optional[int] = typer.Option(None, "--limit", min=1),
                      ism: Optional[Path] = typer.Option(None, "--ism"),
                      model_dir: Optional[Path] = typer.Option(None, "--model-dir"),
                      device: Optional[str] = typer.Option(None, "--device"),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Swap detection and recovery on a triplet folder: R-Acc, gallery top-1, ISM AUC, next to no recovery."""
    from ..recover.evaluation import eval_recovery
    from ..recover.losses import BLACK_BOX

    if recognizer not in BLACK_BOX:
        _say(f"note: {recognizer} is not in the black-box set {sorted(BLACK_BOX)}; numbers are not black box")
    v = _load_verifier(model, ism, model_dir, None, device)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as p:
        tasks: dict = {}

        def cb(label, done, total):
            if label not in tasks:
                tasks[label] = p.add_task(label, total=total)
            p.update(tasks[label], completed=done, total=total)

        res = eval_recovery(swaps, v, recognizer=recognizer, labels=labels, root=root, limit=limit, progress=cb)
    if as_json:
        _emit(res)
        return
    i = res["ism"]
    _say(f"{res['swaps']} ({res['method']}): {res['evaluated']} swaps, gallery {res['gallery_identities']} people, "
         f"{recognizer} (black box)")
    _say(f"ISM: AUC {i['auc']}, TPR {i['tpr']}, FPR on clean {i['fpr_clean']}, mask IoU {i['mask_iou']}")
    for k, m in res["models"].items():
        _say(f"{k:9s} R-Acc target {m.get('racc_t')} source {m.get('racc_s')}; top-1 target {m.get('top1_t')} "
             f"source {m.get('top1_s')}; sim target {m.get('sim_t')} source {m.get('sim_s')}")
