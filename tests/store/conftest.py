import importlib.util
import sys
from pathlib import Path

# Loaded by path so the tests work under any pytest import mode.
if "fpstore_fixtures" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "fpstore_fixtures", Path(__file__).with_name("fpstore_fixtures.py"))
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["fpstore_fixtures"] = _mod
    _spec.loader.exec_module(_mod)
from fpstore_fixtures import _home, db_url, pg_server, url  # noqa: E402,F401
