"""The browser extension's own tests (extension/test/, Node + playwright-core + Debian Chromium
+ a real faceprov server), run from pytest so `.ci/run` covers them. Missing tools fail the test:
the extension is part of the product."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "extension"


def _need(tool: str, hint: str) -> str:
    p = shutil.which(tool)
    if p is None:
        pytest.fail(f"{tool} is required for the extension tests ({hint})")
    return p


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_extension_end_to_end():
    npm = _need("npm", "install Node 20+ with npm")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.fail(f"Chromium is required for the extension tests: {chromium} is missing "
                    "(apt-get install chromium, or set CHROMIUM)")
    lock = EXT / "package-lock.json"
    installed = EXT / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=EXT, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    r = subprocess.run([npm, "test"], cwd=EXT, capture_output=True, text=True, timeout=840,
                       env={**os.environ, "CHROMIUM": chromium, "FACEPROV_PYTHON": sys.executable,
                            "FACEPROV_CLI": str(Path(sys.executable).with_name("faceprov"))})
    out = r.stdout + r.stderr
    print(out[-6000:])
    assert r.returncode == 0, f"npm test failed:\n{out[-8000:]}"
    assert "# fail 0" in out and "# pass " in out
