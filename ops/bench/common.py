"""Helpers for benchmark scripts: machine description, peak RSS, writing docs sections.

Every table in docs/benchmarks.md sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
markers and is rewritten only by the script that measured it.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "docs" / "results"

HEADER = """# faceprov benchmarks

Every table below is written by a script in `ops/bench/` from a run anyone can repeat; the
command, the machine and the data split are given with each table. Do not edit tables by hand.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{gpu}, Python {platform.python_version()}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def write_section(name: str, markdown: str, path: Path | None = None, prefix: str = "") -> None:
    """Replace (or append) the block between `<!-- name:begin -->` and `<!-- name:end -->` in
    docs/benchmarks.md, or in `path` (the README's status figures). `prefix` starts every line of
    the block after the begin marker (e.g. "> " inside a blockquote)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    target = path or DOCS
    if path is not None and not (target.exists() and begin in target.read_text()):
        raise SystemExit(f"{target} has no {begin} marker to write into")
    text = target.read_text() if target.exists() else HEADER
    body = "\n".join(prefix + ln if ln else prefix.rstrip() for ln in markdown.rstrip().splitlines())
    block = f"{begin}\n{body}\n{prefix}{end}"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def save_json(name: str, obj) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / f"{name}.json"
    p.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return p
