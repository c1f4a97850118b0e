"""ops/pg.py server settings: postmaster-level ones (shared_buffers) need a restart, which must
leave a usable server that cleanup() still stops."""
from __future__ import annotations

import shutil

import psutil
import pytest

from fpstore_fixtures import pg


def test_settings_survive_a_restart_and_cleanup_stops_the_new_server():
    d = pg.scratch_dir()
    try:
        _, srv = pg.start(d / "data", settings={"shared_buffers": "48MB", "work_mem": "5MB"})
        try:
            assert pg.show(srv, "shared_buffers") == "48MB"  # needs the restart
            assert pg.show(srv, "work_mem") == "5MB"  # a reload is enough
            pg.create_database(srv, "after_restart")
            assert "1" in srv.psql("SELECT 1;")
            pid = srv._postmaster_info.pid
            assert psutil.pid_exists(pid)
        finally:
            srv.cleanup()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("bad", [{"shared_buffers; DROP": "1"}, {"work_mem": "1'; x"}])
def test_malformed_settings_are_refused_before_anything_starts(bad, tmp_path):
    with pytest.raises(ValueError, match="bad server setting"):
        pg.start(tmp_path / "data", settings=bad)
    assert not (tmp_path / "data").exists()
