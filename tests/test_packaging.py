"""Packaging: the wheel carries the Alembic migrations and can create its database with them;
optional packages live in extras (one OpenCV in a default install); ops/setup.sh installs the
extras the tests use.

The wheel is built from an sdist of a copy of the checkout (what `python -m build` does), so the
checkout gets no build/ or dist/ folder and no stale file from an earlier build. Installing it into
a fresh venv would download torch, so the built package is instead put first on sys.path of a
subprocess, which then migrates a new SQLite database from the wheel's own copy.
"""
from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# what the sdist is made from (the rest is tests, ops, docs, the extension)
TREE = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "faceprov", "server", "migrations"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("build")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in TREE:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        else:
            shutil.copy(p, src / name)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    sdist_dir = work / "sdist"
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                    "b.build_sdist(sys.argv[1])", str(sdist_dir)],
                   cwd=src, check=True, capture_output=True, text=True, timeout=300, env=env)
    (sdist,) = sdist_dir.glob("faceprov-*.tar.gz")
    with tarfile.open(sdist) as t:
        t.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    assert (unpacked / "migrations" / "env.py").is_file(), "the sdist lacks migrations/"
    out = work / "wheel"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(unpacked)], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    (whl,) = out.glob("faceprov-*.whl")
    return whl


def _metadata(whl: Path):
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(name).decode())


def test_wheel_ships_the_migrations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("env.py", "alembic.ini", "script.py.mako"):
        assert f"faceprov/migrations/{f}" in names
    for rev in (ROOT / "migrations" / "versions").glob("*.py"):
        assert f"faceprov/migrations/versions/{rev.name}" in names, rev.name
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("migrations/")]  # no top-level package named so


def test_wheel_ships_every_data_file_of_the_package(wheel):
    """Every tracked non-Python file under faceprov/ and server/ is in the wheel: a pip-installed
    faceprov without recognizers/thresholds.json could never measure protection (found by
    installing the wheel into a fresh venv: "no black-box recognizer with a calibrated threshold")."""
    import subprocess

    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "faceprov", "server"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    data = [f for f in tracked if not f.endswith(".py")]
    assert "faceprov/recognizers/thresholds.json" in data
    missing = [f for f in data if f not in names]
    assert not missing, missing


def test_installed_package_migrates_from_its_own_copy(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    dbf = tmp_path / "x" / "faceprov.db"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from faceprov.store import db; "
            "print(db.migrations_dir()); db.upgrade(sys.argv[2]); print(db.current(sys.argv[2]), db.head_revision())")
    env = {k: v for k, v in os.environ.items() if k not in ("FACEPROV_MIGRATIONS", "PYTHONPATH")}
    p = subprocess.run([sys.executable, "-c", code, str(site), f"sqlite:///{dbf}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    where, revs = p.stdout.strip().splitlines()[-2:]
    assert Path(where) == site / "faceprov" / "migrations"
    cur, head = revs.split()
    assert cur == head != "None"


def _norm(n: str) -> str:
    return re.sub(r"[-_.]+", "-", n).lower()


def test_extras_and_one_opencv(wheel):
    md = _metadata(wheel)
    reqs = [Requirement(r) for r in md.get_all("Requires-Dist")]
    core = {_norm(r.name) for r in reqs if r.marker is None or "extra" not in str(r.marker)}
    by_extra: dict[str, set[str]] = {}
    for r in reqs:
        m = re.search(r'extra == "([^"]+)"', str(r.marker or ""))
        if m:
            by_extra.setdefault(m.group(1), set()).add(_norm(r.name))
    assert {"arcface", "postgres", "test"} <= set(md.get_all("Provides-Extra"))
    # insightface pulls opencv-python itself; the extra only bounds its version (< 5.1, like the
    # headless one: both are the same cv2 module)
    assert by_extra["arcface"] == {"insightface", "opencv-python"}
    assert by_extra["postgres"] == {"asyncpg", "pgvector", "pgserver"}
    assert "pytest" in by_extra["test"]
    assert not core & {"insightface", "asyncpg", "pgvector", "pgserver", "opencv-python"}
    # what a default install resolves to, read from the packages installed here: one OpenCV
    seen, todo = set(), sorted(core)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        try:
            deps = metadata.requires(n) or []
        except metadata.PackageNotFoundError:
            continue
        for d in map(Requirement, deps):
            if d.marker is None or d.marker.evaluate({"extra": ""}):
                todo.append(_norm(d.name))
    assert "opencv-python-headless" in seen and "opencv-python" not in seen, sorted(seen)


def test_setup_sh_installs_the_extras_the_tests_use():
    text = (ROOT / "ops" / "setup.sh").read_text()
    m = re.search(r'WITH_TEST == 1 \]\] && EXTRAS="([^"]+)"', text)
    assert m, "ops/setup.sh --test no longer sets EXTRAS"
    assert {"server", "test", "postgres", "arcface"} <= set(m.group(1).split(","))


def test_missing_extras_name_the_pip_command(monkeypatch):
    import importlib.util

    from faceprov.cli import missing_extra_message
    from faceprov.store import db

    e = ModuleNotFoundError("No module named 'insightface'", name="insightface")
    assert missing_extra_message(e) == "insightface is not installed: pip install 'faceprov[arcface]'"
    assert missing_extra_message(ModuleNotFoundError("x", name="numpy")) is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "asyncpg" else real(n, *a))
    with pytest.raises(db.MissingExtra, match=r"pip install 'faceprov\[postgres\]'"):
        db.create_engine("postgresql://u@localhost/x")


def test_cli_says_which_extra_is_missing(tmp_path, monkeypatch, capsys):
    """`faceprov embed -r arcface-onnx` without insightface: one line naming the extra, exit 2."""
    from faceprov import cli
    from faceprov.config import reset_settings

    model = tmp_path / "model.onnx"
    model.write_bytes(b"not reached")
    monkeypatch.setenv("FACEPROV_ARCFACE_ONNX", str(model))
    reset_settings()
    for m in [m for m in sys.modules if m == "insightface" or m.startswith("insightface.")]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, "insightface", None)  # `import insightface` now fails
    monkeypatch.setattr(sys, "argv", ["faceprov", "embed", str(model), "-r", "arcface-onnx"])
    try:
        with pytest.raises(SystemExit) as ex:
            cli.main()
    finally:
        reset_settings()
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "insightface is not installed: pip install 'faceprov[arcface]'" in err, err
    assert "Traceback" not in err
