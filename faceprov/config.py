"""One settings object, read once from FACEPROV_* environment variables.

Nothing else in the package reads the environment; everything asks `settings()`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


def _default_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "faceprov"


def _find_lfw() -> Path:
    # The shared data folder lives beside the project checkout (../shared/data/lfw).
    here = Path(__file__).resolve().parent.parent
    return here.parent / "shared" / "data" / "lfw"


def ensure_private_dir(path: Path) -> Path:
    """Create the folder `path` with mode 0700 (missing parents with the usual mode) and return it.

    Permission rule: faceprov tightens only what it creates. FACEPROV_HOME holds biometric data
    (embeddings, retained originals, the database), so when faceprov makes the folder, only its
    owner may enter it. A folder that already exists keeps the mode it has: someone who made it, or
    pointed FACEPROV_HOME at it, chose who may read it, and a chmod would undo that choice.
    """
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:  # made meanwhile by someone else (another faceprov process): theirs
        return path
    # mkdir's mode goes through the umask, which may take more than group/other bits away
    os.chmod(path, 0o700)
    return path



# The id Chrome gives the shipped extension: derived from the public key in
# extension/manifest.json (tests/extension checks it), so it is the same on every install.
SHIPPED_EXTENSION_ID = "hkloddoakoomgmpjfekphffbgoiknack"

@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=_default_home)
    device: str = "cpu"
    lfw_root: Path = field(default_factory=_find_lfw)
    arcface_onnx: Path | None = None
    max_pixels: int = 50_000_000
    max_bytes: int = 40 * 1024 * 1024
    min_face: int = 40
    threads: int = 0
    # Store (faceprov.store): SQLAlchemy URL; None means a SQLite file `faceprov.db` under home.
    db: str | None = None
    # Alembic scripts folder; None means `migrations/` beside the package (a source checkout).
    migrations_dir: Path | None = None
    # C2PA signing (faceprov.provenance.c2pa): PEM certificate chain (leaf first) and PKCS#8 key.
    c2pa_cert: Path | None = None
    c2pa_key: Path | None = None
    # Extra trust anchors (PEM) used when reading manifests; None = the SDK's defaults.
    c2pa_trust_anchors: Path | None = None
    # Audit-chain anchor (faceprov.provenance.audit): a secret kept OUTSIDE the database; every
    # audit row gets an HMAC under it. From FACEPROV_AUDIT_KEY (>= 16 characters) or the contents
    # of FACEPROV_AUDIT_KEY_FILE. None: rows are hash-chained only.
    audit_key: bytes | None = field(default=None, repr=False)
    # How long cloak records (with their bystanders' embeddings) are kept: `faceprov db expire`
    # erases older ones (run it from cron). None: kept until erased.
    retention_days: int | None = None
    # HTTP server (server/, `faceprov serve`).
    server_host: str = "127.0.0.1"
    server_port: int = 8765
    server_max_body: int = 40 * 1024 * 1024  # bytes of one request body
    # pixels of one uploaded image: what phones post (12 MP, 24 MP, a 48/50 MP full-resolution
    # mode is refused with a clear 413); the CLI keeps FACEPROV_MAX_PIXELS
    server_max_pixels: int = 25_000_000
    server_queue_size: int = 32  # photos admitted into the pipeline at once; more -> 503
    server_batch_size: int = 16  # faces per model call
    server_max_wait_ms: float = 10.0  # how long the first face waits for batch mates
    server_request_timeout: float = 60.0  # seconds per request, queueing included
    server_cors_origins: tuple[str, ...] = ()  # web origins allowed besides the extension
    # Chrome extension ids allowed to call the API from a browser (chrome-extension://<id>): the
    # shipped extension's (fixed by the public key in extension/manifest.json) unless set; a
    # store-published copy has its own id, which the operator lists here.
    server_extension_ids: tuple[str, ...] = (SHIPPED_EXTENSION_ID,)
    server_rate_limit: float = 5.0  # requests per second per API key (sustained)
    server_rate_burst: int = 30  # bucket size

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.home / 'faceprov.db'}"

    def ensure_home(self) -> Path:
        """FACEPROV_HOME, created 0700 when it does not exist yet (see `ensure_private_dir`)."""
        try:
            return ensure_private_dir(self.home)
        except OSError:  # e.g. read-only: asking for a path must not fail; a write there says why
            return self.home

    # Every folder under home is reached through these properties, so home is created here, 0700,
    # before a caller's `mkdir(parents=True)` below it could create it with the default mode.
    @property
    def assets_dir(self) -> Path:
        return self.ensure_home() / "assets"

    @property
    def cache_dir(self) -> Path:
        return self.ensure_home() / "cache"


def _env(name: str) -> str | None:
    v = os.environ.get(f"FACEPROV_{name}")
    return v if v not in (None, "") else None


@lru_cache(maxsize=1)
def settings() -> Settings:
    kw: dict = {}
    if (v := _env("HOME")):
        kw["home"] = Path(v).expanduser()
    if (v := _env("DEVICE")):
        kw["device"] = v
    if (v := _env("LFW")):
        kw["lfw_root"] = Path(v).expanduser()
    if (v := _env("ARCFACE_ONNX")):
        kw["arcface_onnx"] = Path(v).expanduser()
    if (v := _env("MAX_PIXELS")):
        kw["max_pixels"] = int(v)
    if (v := _env("MAX_BYTES")):
        kw["max_bytes"] = int(v)
    if (v := _env("MIN_FACE")):
        kw["min_face"] = int(v)
    if (v := _env("THREADS")):
        kw["threads"] = int(v)
    if (v := _env("DB")):
        kw["db"] = v
    if (v := _env("DB_PASSWORD_FILE")):
        # the password from a file (a container secret) rather than in FACEPROV_DB itself
        if "db" not in kw:
            raise ValueError("FACEPROV_DB_PASSWORD_FILE is set but FACEPROV_DB is not")
        try:
            pw = Path(v).read_text().strip()
        except OSError as e:
            raise ValueError(f"FACEPROV_DB_PASSWORD_FILE {v}: cannot read it ({e.strerror})") from None
        from sqlalchemy.engine import make_url

        kw["db"] = make_url(kw["db"]).set(password=pw).render_as_string(hide_password=False)
    if (v := _env("MIGRATIONS")):
        kw["migrations_dir"] = Path(v).expanduser()
    if (v := _env("C2PA_CERT")):
        kw["c2pa_cert"] = Path(v).expanduser()
    if (v := _env("C2PA_KEY")):
        kw["c2pa_key"] = Path(v).expanduser()
    if (v := _env("C2PA_TRUST_ANCHORS")):
        kw["c2pa_trust_anchors"] = Path(v).expanduser()
    # `faceprov keys c2pa-init` writes a local CA + signer under FACEPROV_HOME/c2pa/: used when
    # no credentials are configured explicitly, so signing is on by default once it has run
    local = Path(kw.get("home") or _default_home()) / "c2pa"
    if "c2pa_cert" not in kw and "c2pa_key" not in kw and (local / "signer.key").is_file() \
            and (local / "signer-chain.pem").is_file():
        kw["c2pa_cert"], kw["c2pa_key"] = local / "signer-chain.pem", local / "signer.key"
        if "c2pa_trust_anchors" not in kw and (local / "ca.pem").is_file():
            kw["c2pa_trust_anchors"] = local / "ca.pem"
    if (v := _env("RETENTION_DAYS")):
        kw["retention_days"] = int(v)
        if kw["retention_days"] < 1:
            raise ValueError("FACEPROV_RETENTION_DAYS must be a whole number of days >= 1")
    if (v := _env("AUDIT_KEY_FILE")):
        try:
            kw["audit_key"] = Path(v).expanduser().read_bytes().strip()
        except OSError as e:
            raise ValueError(f"FACEPROV_AUDIT_KEY_FILE {v}: cannot read it ({e.strerror})") from None
    if (v := _env("AUDIT_KEY")):
        kw["audit_key"] = v.encode()
    if "audit_key" in kw and len(kw["audit_key"]) < 16:
        raise ValueError("the audit key (FACEPROV_AUDIT_KEY / FACEPROV_AUDIT_KEY_FILE) must be at least 16 "
                         "characters; make one with: python -c 'import secrets; print(secrets.token_hex(32))'")
    for name, conv in (("HOST", str), ("PORT", int), ("MAX_BODY", int), ("MAX_PIXELS", int), ("QUEUE_SIZE", int),
                       ("BATCH_SIZE", int), ("MAX_WAIT_MS", float), ("REQUEST_TIMEOUT", float),
                       ("RATE_LIMIT", float), ("RATE_BURST", int)):
        if (v := _env(f"SERVER_{name}")):
            kw[f"server_{name.lower()}"] = conv(v)
    if (v := _env("SERVER_EXTENSION_IDS")):
        ids = tuple(i.strip() for i in v.split(",") if i.strip())
        bad = [i for i in ids if not re.fullmatch(r"[a-p]{32}", i)]
        if bad:
            raise ValueError(f"FACEPROV_SERVER_EXTENSION_IDS: {bad[0]!r} is not a Chrome extension id (32 letters a-p)")
        kw["server_extension_ids"] = ids
    if (v := _env("SERVER_CORS_ORIGINS")):
        kw["server_cors_origins"] = tuple(o.strip() for o in v.split(",") if o.strip())
    return Settings(**kw)


def local_user(default: str = "local") -> str:
    """The login name of whoever runs the CLI, the default owner/requester of what it records.
    getpass.getuser() raises (KeyError/OSError) where the uid has no passwd entry and no LOGNAME/
    USER is set, as in a container started with an arbitrary --user: then `default`."""
    import getpass

    try:
        return getpass.getuser() or default
    except (KeyError, OSError, ImportError):
        return default


def reset_settings() -> None:
    """Forget the cached settings (tests change FACEPROV_* variables)."""
    settings.cache_clear()
