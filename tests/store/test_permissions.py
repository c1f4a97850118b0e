"""FACEPROV_HOME and the SQLite database are private when faceprov creates them (0700 / 0600);
folders and files that already exist keep the mode their owner gave them."""
from __future__ import annotations

import os
import stat

import pytest

from faceprov.config import settings
from faceprov.store import db


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask: without care, 0755 folders and 0644 files
    yield
    os.umask(old)


def test_home_is_created_0700(umask_022):
    home = settings().home
    assert not home.exists()
    settings().assets_dir.mkdir(parents=True)  # what assets.fetch does first
    assert _mode(home) == 0o700
    settings().cache_dir  # asking again changes nothing
    assert _mode(home) == 0o700


def test_default_database_is_0600_in_a_0700_home(umask_022):
    home = settings().home
    db.upgrade()  # default URL: faceprov.db under FACEPROV_HOME
    assert _mode(home) == 0o700
    f = home / "faceprov.db"
    assert f.stat().st_size > 0 and _mode(f) == 0o600
    for side in (home / "faceprov.db-wal", home / "faceprov.db-shm"):
        if side.exists():  # SQLite copies the database file's mode onto them
            assert _mode(side) == 0o600


def test_database_elsewhere_gets_a_private_folder(tmp_path, umask_022):
    f = tmp_path / "new" / "store.db"
    db.upgrade(f"sqlite:///{f}")
    assert _mode(f.parent) == 0o700 and _mode(f) == 0o600
    assert db.current(f"sqlite:///{f}") == db.head_revision()


def test_existing_home_and_database_keep_their_mode(umask_022):
    home = settings().home
    home.mkdir()
    os.chmod(home, 0o750)  # the user's choice, e.g. a folder shared with their group
    f = home / "faceprov.db"
    f.touch()
    os.chmod(f, 0o640)
    db.upgrade()
    settings().assets_dir
    assert _mode(home) == 0o750 and _mode(f) == 0o640
    assert db.current() == db.head_revision()
