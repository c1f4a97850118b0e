"""Build hook: ship the top-level Alembic `migrations/` inside the wheel as `faceprov/migrations/`.

Everything else about the build is in pyproject.toml. The scripts stay at the top level, where
`alembic -c migrations/alembic.ini` and a source checkout (or an editable install) use them;
without this copy a wheel install has no migrations and cannot create its database
(faceprov.store.db.migrations_dir looks in faceprov/migrations first, then in the checkout).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class build_py_with_migrations(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's migrations/ directly
            return
        src = HERE / "migrations"
        if not (src / "env.py").is_file():
            raise SystemExit(f"{src} is missing: the wheel would not be able to create its database")
        dst = Path(self.build_lib) / "faceprov" / "migrations"
        if dst.exists():
            shutil.rmtree(dst)  # no stale revision from an earlier build in build/
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": build_py_with_migrations})
