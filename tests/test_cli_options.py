"""`faceprov --version` and the output-path rules of `faceprov cloak`.

Run in-process (typer's CliRunner): all of this is decided before any model is loaded, and a
subprocess would spend its time importing. The subprocess tests in test_cli*.py cover the real
entry point (exit codes, no tracebacks)."""
from __future__ import annotations

import hashlib
import importlib.metadata
import shutil

import pytest
from typer.testing import CliRunner

import faceprov
from faceprov.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def said(r) -> str:
    """The output as one line: rich wraps the error in a box, breaking lines at its width."""
    return " ".join(r.output.replace("│", " ").split())


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"faceprov {faceprov.__version__}"
    # the same number as the installed distribution's metadata (pyproject reads __version__)
    assert faceprov.__version__ == importlib.metadata.version("faceprov")


@pytest.fixture
def photos(tmp_path, monkeypatch, sample_path):
    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(sample_path(1), d / "a.jpg")
    shutil.copy(sample_path(2), d / "b.jpg")
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    return d


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize("args,says", [
    (("photos/", "-o", "photos/"), "is the input folder"),
    (("photos", "-o", "./photos/../photos"), "is the input folder"),
    (("photos/a.jpg", "-o", "photos/a.jpg"), "would overwrite the original"),
    (("photos/a.jpg", "-o", "./photos/./a.jpg"), "would overwrite the original"),
    (("photos/a.jpg", "-o", "photos/"), "would overwrite the original"),  # photos/a.jpg again
    (("photos/a.jpg", "photos/b.jpg", "-o", "photos"), "would overwrite the original"),
])
def test_cloak_never_overwrites_originals(photos, args, says):
    before = _digests(photos)
    r = invoke("cloak", *args, "--no-record")
    assert r.exit_code == 2, r.output
    assert says in said(r)
    assert _digests(photos) == before  # nothing written, nothing replaced


def test_cloak_refuses_an_output_that_links_to_the_input(photos):
    (photos.parent / "link.jpg").symlink_to(photos / "a.jpg")
    r = invoke("cloak", "photos/a.jpg", "-o", "link.jpg", "--no-record")
    assert r.exit_code == 2 and "overwrite the original" in said(r)


def test_trailing_slash_on_a_file_is_refused(photos):
    (photos.parent / "taken").write_text("a file, not a folder")
    r = invoke("cloak", "photos/a.jpg", "-o", "taken/", "--no-record")
    assert r.exit_code == 2 and "is a file" in said(r)


def test_cloak_help_and_readme_say_cloaked_not_protected():
    """The folder summary knows only whether photos were cloaked; "protected" is the report's word."""
    from pathlib import Path

    h = said(invoke("cloak", "--help"))
    assert "0 all cloaked; 3 some not cloaked" in h and "2 none cloaked" in h
    assert "all protected" not in h and "not protected" not in h
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    for wrong in ("cannot be protected", "photos protected some", "every photo it can protect",
                  "only when all were protected"):
        assert wrong not in readme
    assert "exits 0 only when all were cloaked" in readme


def test_local_user_without_a_passwd_entry(monkeypatch):
    """A container started with an arbitrary uid has no passwd entry and often no LOGNAME/USER:
    getpass.getuser() raises there, and the CLI's default owner/requester must not."""
    import getpass

    from faceprov.config import local_user

    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    assert local_user() == "alice"

    def no_entry():
        raise KeyError("getpwuid(): uid not found: 4242")

    monkeypatch.setattr(getpass, "getuser", no_entry)
    assert local_user() == "local"
    monkeypatch.setattr(getpass, "getuser", lambda: (_ for _ in ()).throw(OSError("No username set")))
    assert local_user("someone") == "someone"
