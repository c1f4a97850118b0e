"""Fixtures for the store and provenance tests: a real PostgreSQL (+pgvector) and a SQLite file.

PostgreSQL comes from the `pgserver` wheel (ops/pg.py). If it cannot start, the tests that
need it FAIL — they never skip.
"""
from __future__ import annotations

import asyncio
import io
import importlib.util
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_pg():
    spec = importlib.util.spec_from_file_location("faceprov_ops_pg", ROOT / "ops" / "pg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pg = _load_pg()


def arun(coro):
    return asyncio.run(coro)


def unit(rng, dim):
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="session")
def pg_server():
    d = pg.scratch_dir()
    try:
        url, srv = pg.start(d / "data", fast=True)
    except Exception as e:  # never a silent skip
        pytest.fail(f"PostgreSQL with pgvector could not start: {e}")
    yield srv
    srv.cleanup()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    from faceprov.config import reset_settings

    monkeypatch.setenv("FACEPROV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEPROV_DB", raising=False)
    reset_settings()
    yield
    reset_settings()


def make_url(kind: str, tmp_path: Path, request) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    srv = request.getfixturevalue("pg_server")
    return pg.create_database(srv, "t_" + uuid.uuid4().hex[:12])


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database on each backend."""
    return make_url(request.param, tmp_path, request)


@pytest.fixture
def url(db_url):
    """A migrated database on each backend."""
    from faceprov.store import db

    db.upgrade(db_url)
    return db_url


def photo(seed=0, w=320, h=240):
    """A synthetic photo with structure (smooth gradients + shapes) for PDQ/C2PA tests."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 80 * np.sin(x / rng.uniform(15, 60) + c) * np.cos(y / rng.uniform(15, 60))
                     for c in range(3)], -1)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        d.ellipse([x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 120)],
                  fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return im


def reencode(im, q=75, scale=1.0):
    """What a platform does to an upload: resize, JPEG re-encode (drops C2PA)."""
    from PIL import Image

    if scale != 1.0:
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
