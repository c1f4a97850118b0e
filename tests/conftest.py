"""Shared fixtures: real sample photos and a few real LFW files (read from ../shared/data)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# FACEPROV_THREADS=1 when the machine is shared with a training job (oversubscribed OpenMP threads
# make every op wait for the others: measured 42 ms -> 5.3 s for one ISM forward pass)
torch.set_num_threads(int(os.environ.get("FACEPROV_THREADS") or max(1, min(2, os.cpu_count() or 1))))

from faceprov import assets  # noqa: E402
from faceprov.config import reset_settings, settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    r = settings().lfw_root
    if not (r / "images").is_dir():
        pytest.fail(f"LFW is required for the tests and was not found at {r} (set FACEPROV_LFW)")
    return r


@pytest.fixture(scope="session")
def sample_path():
    def get(i: int = 1) -> Path:
        return assets.path(f"sample{i}")

    return get


@pytest.fixture(scope="session")
def detector():
    from faceprov.faces import default_detector

    return default_detector()


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """A fresh, empty FACEPROV_HOME for tests that must not see the real cache."""
    monkeypatch.setenv("FACEPROV_HOME", str(tmp_path / "home"))
    reset_settings()
    yield tmp_path / "home"
    reset_settings()


def lfw_file(root: Path, name: str, idx: int) -> Path:
    return root / "images" / name / f"{name}_{idx:04d}.jpg"


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
