"""Shared pieces of the MODEL_CARD.md files that the exporters write."""
from __future__ import annotations

from pathlib import Path


def display_path(p: str | Path | None) -> str | None:
    """A path as a model card may print it: relative to the project (or the working folder)
    when inside it, else just its last two parts; never this machine's absolute path."""
    if p is None:
        return None
    path = Path(p)
    if not path.is_absolute():
        return str(p)
    for base in (Path(__file__).resolve().parent.parent, Path.cwd().resolve()):
        try:
            return str(path.resolve().relative_to(base))
        except ValueError:
            continue
    return str(Path(*path.parts[-2:]))


def warm_start_history(init_from: str | Path | None) -> str | None:
    """The "## Training" section of the card beside a warm start's weights (read before an
    export replaces that card), or None when there is no warm start or no such section."""
    if not init_from:
        return None
    card = Path(init_from) / "MODEL_CARD.md"
    if not card.exists():
        return None
    txt = card.read_text()
    if "## Training" not in txt:
        return None
    return txt.split("## Training", 1)[1].split("\n## ", 1)[0].strip()
