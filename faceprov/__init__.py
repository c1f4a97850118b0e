"""faceprov: face cloaking, face-swap recovery and cloak provenance.

    import asyncio, faceprov
    repo = asyncio.run(faceprov.open_repo(upgrade=True))          # SQLite under FACEPROV_HOME
    job = faceprov.ProtectJob(faceprov.Protector(), repo)
    out = asyncio.run(job.run(open("photo.jpg", "rb").read(), owner="alice"))
    open("photo.cloaked.jpg", "wb").write(out.data); print(out.record_id, out.protection["protection"])

The names below load on first use (torch and the models are not imported by `import faceprov`).
"""

__version__ = "0.1.0"

_EXPORTS = {
    "Protector": ("faceprov.cloak.protect", "Protector"),
    "ProtectJob": ("faceprov.cloak.job", "ProtectJob"),
    "JobOptions": ("faceprov.cloak.job", "JobOptions"),
    "Verifier": ("faceprov.recover.verify", "Verifier"),
    "VerifyJob": ("faceprov.recover.job", "VerifyJob"),
    "VerifyOptions": ("faceprov.recover.job", "VerifyOptions"),
    "open_repo": ("faceprov.store.repo", "open_repo"),
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        mod, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'faceprov' has no attribute {name!r}")
