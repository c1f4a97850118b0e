import importlib.util
import sys
from pathlib import Path

_p = Path(__file__).resolve().parents[1] / "store" / "fpstore_fixtures.py"
if "fpstore_fixtures" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("fpstore_fixtures", _p)
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["fpstore_fixtures"] = _mod
    _spec.loader.exec_module(_mod)
from fpstore_fixtures import _home, db_url, pg_server, url  # noqa: E402,F401
