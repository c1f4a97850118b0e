"""SQLAlchemy 2 models of the faceprov store.

One schema for SQLite (the embedded default) and PostgreSQL (+ pgvector). The only
backend-specific column is `IdentityEmbedding.embedding`: a pgvector `vector` on PostgreSQL
(no fixed dimension: each recognizer gets its own partial HNSW index on
`embedding::vector(dim)`), little-endian float32 bytes on SQLite (searched through the
embedded index in `vectors.py`).

The migrations in the top-level `migrations/` folder must produce exactly this schema;
tests/store/test_migrations.py compares them.
"""
from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ROLES = ("user", "platform", "auditor", "admin")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_uuid() -> str:
    return str(uuid.uuid4())


class Embedding(TypeDecorator):
    """float32 vector: pgvector `vector` on PostgreSQL, raw float32 bytes elsewhere."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import Vector

            return dialect.type_descriptor(Vector())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
        if dialect.name == "postgresql":
            return arr
        return arr.astype("<f4").tobytes()

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.asarray(value, dtype=np.float32)
        return np.frombuffer(value, dtype="<f4").copy()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (
        CheckConstraint("role IN ('user', 'platform', 'auditor', 'admin')", name="role"),
    )


class ApiKey(Base):
    """An API key: only sha256(secret) is stored; `prefix` (public) finds the row."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Recognizer(Base):
    """A recognizer (name + version) whose embeddings live in the registry.

    `generation` is bumped in the same transaction as every insert/delete of its embeddings,
    so an embedded vector index can tell whether it is current.
    """

    __tablename__ = "recognizers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint("dim > 0 AND dim <= 4096", name="dim"),
    )


class Identity(Base):
    __tablename__ = "identities"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("accounts.id"), index=True)
    label: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set by `forget`: embeddings and retained originals are gone, the row stays as a tombstone.
    forgotten_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class IdentityEmbedding(Base):
    __tablename__ = "identity_embeddings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    identity_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("identities.id", ondelete="CASCADE"), index=True
    )
    recognizer_id: Mapped[int] = mapped_column(ForeignKey("recognizers.id"), index=True)
    embedding: Mapped[np.ndarray] = mapped_column(Embedding())
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # SQLite: AUTOINCREMENT so ids are never reused (the embedded index keys on them).
    __table_args__ = ({"sqlite_autoincrement": True},)


class CloakRecord(Base):
    __tablename__ = "cloak_records"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    # Monotonic row number: the PDQ index catches up on rows with seq > its watermark.
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("accounts.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    # a preset name ("low", "mid", "high") or a number, as text
    strength: Mapped[str] = mapped_column(String(32))
    refine: Mapped[int] = mapped_column(Integer, default=0)
    input_sha256: Mapped[str] = mapped_column(String(64), index=True)
    output_sha256: Mapped[str] = mapped_column(String(64), index=True)
    pdq: Mapped[str | None] = mapped_column(String(64), index=True)
    pdq_quality: Mapped[int | None] = mapped_column(Integer)
    # PDQ of the output with its face regions masked out (faceprov.provenance.context), which a
    # face swap made on the photo keeps; null on records made before migration 0002
    context_pdq: Mapped[str | None] = mapped_column(String(64), index=True)
    context_pdq_quality: Mapped[int | None] = mapped_column(Integer)
    c2pa_label: Mapped[str | None] = mapped_column(String(256))
    report: Mapped[dict | None] = mapped_column(JSON)
    retain_original: Mapped[bool] = mapped_column(Boolean, default=False)


class CloakFace(Base):
    __tablename__ = "cloak_faces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cloak_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("cloak_records.id", ondelete="CASCADE")
    )
    face_index: Mapped[int] = mapped_column(Integer)
    identity_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("identities.id"), index=True
    )
    box: Mapped[list | None] = mapped_column(JSON)
    pdq: Mapped[str | None] = mapped_column(String(64), index=True)
    pdq_quality: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("cloak_id", "face_index"),)


class RetainedOriginal(Base):
    """The uncloaked input, kept only when the owner opted in; erased by `forget`."""

    __tablename__ = "retained_originals"
    cloak_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("cloak_records.id", ondelete="CASCADE"), primary_key=True
    )
    media_type: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Verification(Base):
    __tablename__ = "verifications"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    requester_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("accounts.id"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    input_sha256: Mapped[str] = mapped_column(String(64), index=True)
    verdict: Mapped[str] = mapped_column(String(32))
    # [{"cloak_id": ..., "face_index": ..., "identity_id": ..., "score": ..., "via": "pdq"|...}]
    matches: Mapped[list | None] = mapped_column(JSON)


class AuditHead(Base):
    """One row (id = 1): the last sequence number and hash of the audit chain.

    Every writing transaction updates this row first, which serialises writers on both
    backends (a row lock on PostgreSQL, the database write lock on SQLite).
    """

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class AuditLog(Base):
    """Append-only; each row's hash covers its content and the previous row's hash."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # ISO-8601 UTC text ("2026-11-23T17:43:00.123456Z"): hashed as stored, sortable.
    created_at: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON text, hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))
    # "<key id>:<HMAC-SHA256(audit key, seq:row_hash)>" when an audit key is configured (0003);
    # the database refuses UPDATE and DELETE of audit rows except setting a missing MAC once.
    row_mac: Mapped[str | None] = mapped_column(String(80), nullable=True)


class RateBucket(Base):
    """A token bucket shared by every server replica (0004): `tokens` left at `updated_at`
    (seconds since the epoch). Keys are API-key ids or "ip:<address>", never request content."""

    __tablename__ = "rate_buckets"
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class EphemeralBlob(Base):
    """Short-lived bytes any replica may be asked for later (0004): a verification's evidence
    picture, the stored answer to an idempotent upload. Each has an expiry, each kind a byte
    budget (oldest dropped first), and erasure removes the ones of the erased records."""

    __tablename__ = "ephemeral_blobs"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    # what the blob belongs to (a verification or cloak id), so erasure can find it
    ref_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(8))  # "pending" (being made) | "ready"
    content_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    headers: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


GENESIS_HASH = "0" * 64
