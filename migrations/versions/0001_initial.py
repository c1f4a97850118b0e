"""initial schema: accounts, keys, identities, embeddings, cloak records, verifications, audit

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64


def _embedding_type(dialect: str):
    if dialect == "postgresql":
        from pgvector.sqlalchemy import Vector

        return Vector()
    return sa.LargeBinary()


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    ts = sa.DateTime(timezone=True)

    op.create_table(
        "accounts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "role IN ('user', 'platform', 'auditor', 'admin')", name="ck_accounts_role"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=True),
        sa.Column("revoked_at", ts, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], ondelete="CASCADE",
            name="fk_api_keys_account_id_accounts",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])

    op.create_table(
        "recognizers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.CheckConstraint("dim > 0 AND dim <= 4096", name="ck_recognizers_dim"),
        sa.PrimaryKeyConstraint("id", name="pk_recognizers"),
        sa.UniqueConstraint("name", "version", name="uq_recognizers_name_version"),
    )
    op.create_table(
        "identities",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("label", sa.String(256), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("forgotten_at", ts, nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["accounts.id"], name="fk_identities_owner_id_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identities"),
    )
    op.create_index("ix_identities_owner_id", "identities", ["owner_id"])

    op.create_table(
        "identity_embeddings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("identity_id", sa.String(36), nullable=False),
        sa.Column("recognizer_id", sa.Integer(), nullable=False),
        sa.Column("embedding", _embedding_type(dialect), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], ondelete="CASCADE",
            name="fk_identity_embeddings_identity_id_identities",
        ),
        sa.ForeignKeyConstraint(
            ["recognizer_id"], ["recognizers.id"],
            name="fk_identity_embeddings_recognizer_id_recognizers",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identity_embeddings"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_identity_embeddings_identity_id", "identity_embeddings", ["identity_id"]
    )
    op.create_index(
        "ix_identity_embeddings_recognizer_id", "identity_embeddings", ["recognizer_id"]
    )

    op.create_table(
        "cloak_records",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("strength", sa.String(32), nullable=False),
        sa.Column("refine", sa.Integer(), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("output_sha256", sa.String(64), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=True),
        sa.Column("pdq_quality", sa.Integer(), nullable=True),
        sa.Column("c2pa_label", sa.String(256), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("retain_original", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["accounts.id"], name="fk_cloak_records_owner_id_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_cloak_records"),
        sa.UniqueConstraint("seq", name="uq_cloak_records_seq"),
    )
    for col in ("owner_id", "created_at", "input_sha256", "output_sha256", "pdq"):
        op.create_index(f"ix_cloak_records_{col}", "cloak_records", [col])

    op.create_table(
        "cloak_faces",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cloak_id", sa.String(36), nullable=False),
        sa.Column("face_index", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.String(36), nullable=True),
        sa.Column("box", sa.JSON(), nullable=True),
        sa.Column("pdq", sa.String(64), nullable=True),
        sa.Column("pdq_quality", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cloak_id"], ["cloak_records.id"], ondelete="CASCADE",
            name="fk_cloak_faces_cloak_id_cloak_records",
        ),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name="fk_cloak_faces_identity_id_identities"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_cloak_faces"),
        sa.UniqueConstraint("cloak_id", "face_index", name="uq_cloak_faces_cloak_id_face_index"),
    )
    op.create_index("ix_cloak_faces_identity_id", "cloak_faces", ["identity_id"])
    op.create_index("ix_cloak_faces_pdq", "cloak_faces", ["pdq"])

    op.create_table(
        "retained_originals",
        sa.Column("cloak_id", sa.String(36), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cloak_id"], ["cloak_records.id"], ondelete="CASCADE",
            name="fk_retained_originals_cloak_id_cloak_records",
        ),
        sa.PrimaryKeyConstraint("cloak_id", name="pk_retained_originals"),
    )

    op.create_table(
        "verifications",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("requester_id", sa.String(36), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("matches", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["accounts.id"], name="fk_verifications_requester_id_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_verifications"),
    )
    op.create_index("ix_verifications_requester_id", "verifications", ["requester_id"])
    op.create_index("ix_verifications_input_sha256", "verifications", ["input_sha256"])

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    op.create_index("ix_audit_log_object_id", "audit_log", ["object_id"])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Per-recognizer HNSW indexes are created at run time (faceprov.store.vectors).
        op.execute(
            "DO $$ DECLARE r record; BEGIN FOR r IN SELECT indexname FROM pg_indexes "
            "WHERE tablename = 'identity_embeddings' AND indexname LIKE 'ix_emb_hnsw_%' LOOP "
            "EXECUTE 'DROP INDEX IF EXISTS ' || quote_ident(r.indexname); END LOOP; END $$"
        )
    for table in (
        "audit_log", "audit_head", "verifications", "retained_originals", "cloak_faces",
        "cloak_records", "identity_embeddings", "identities", "recognizers", "api_keys",
        "accounts",
    ):
        op.drop_table(table)
