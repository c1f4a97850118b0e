"""shared server state: rate-limit buckets and short-lived blobs (evidence, idempotent answers)

Revision ID: 0004_shared_state
Revises: 0003_audit_anchor
Create Date: 2026-12-02

What a request may need later lives here instead of one process's memory, so any replica can
answer it (issue 17): a token bucket per API key / client address, and bytes with an expiry
(a verification's evidence picture, the stored response of an upload sent with an
Idempotency-Key).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_shared_state"
down_revision = "0003_audit_anchor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_rate_buckets"),
    )
    op.create_table(
        "ephemeral_blobs",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=True),
        sa.Column("ref_id", sa.String(36), nullable=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name="pk_ephemeral_blobs"),
    )
    op.create_index("ix_ephemeral_blobs_owner_id", "ephemeral_blobs", ["owner_id"])
    op.create_index("ix_ephemeral_blobs_ref_id", "ephemeral_blobs", ["ref_id"])
    op.create_index("ix_ephemeral_blobs_created_at", "ephemeral_blobs", ["created_at"])
    op.create_index("ix_ephemeral_blobs_expires_at", "ephemeral_blobs", ["expires_at"])


def downgrade() -> None:
    op.drop_table("ephemeral_blobs")
    op.drop_table("rate_buckets")
