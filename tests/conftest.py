"""Shared fixtures: real sample photos and real LFW files.

LFW comes from the full data set when it is on the machine (../shared/data/lfw, or FACEPROV_LFW),
otherwise from the small committed copy in tests/data/lfw-mini/ (built by ops/make_test_fixtures.py),
so that the suite passes on a clean clone with no ../shared.
"""
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


LFW_MINI = ROOT / "tests" / "data" / "lfw-mini"


def _choose_lfw() -> tuple[Path, str]:
    """(LFW root for this run, why). Decided once, before any test, and written to FACEPROV_LFW so
    that everything reading `settings().lfw_root` (faceprov.data.lfw, and the CLI subprocesses the
    tests start, which inherit the environment) sees the same root as the `lfw_root` fixture."""
    full = settings().lfw_root
    reset_settings()  # leave no settings cached from collection time, as before this check existed
    if os.environ.get("FACEPROV_LFW"):
        # an explicit choice is kept even when it is wrong: the lfw_root fixture then fails with its path
        return full, "FACEPROV_LFW"
    if (full / "images").is_dir():
        return full, "full LFW"
    os.environ["FACEPROV_LFW"] = str(LFW_MINI)
    return LFW_MINI, f"no LFW at {full}: the committed fixture set"


LFW_ROOT, LFW_WHY = _choose_lfw()


def pytest_terminal_summary(terminalreporter):
    # at the end, where `pytest -q` (ops/test.sh) still shows it: which photos the LFW tests saw
    terminalreporter.write_line(f"faceprov LFW: {LFW_ROOT} ({LFW_WHY})")


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    if not (LFW_ROOT / "images").is_dir():
        pytest.fail(f"FACEPROV_LFW={LFW_ROOT} has no images/ folder (unset it to use tests/data/lfw-mini)")
    return LFW_ROOT


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
