"""cloak records: context PDQ (the photo with its face regions masked out)

Revision ID: 0002_context_pdq
Revises: 0001_initial
Create Date: 2026-12-01

Nullable: records made before this revision have no context hash and keep working (the
provenance search skips them; whole-photo and per-face PDQ still find them).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_context_pdq"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: a plain ALTER TABLE ADD COLUMN on SQLite, the same on PostgreSQL
    with op.batch_alter_table("cloak_records") as b:
        b.add_column(sa.Column("context_pdq", sa.String(64), nullable=True))
        b.add_column(sa.Column("context_pdq_quality", sa.Integer(), nullable=True))
    op.create_index("ix_cloak_records_context_pdq", "cloak_records", ["context_pdq"])


def downgrade() -> None:
    op.drop_index("ix_cloak_records_context_pdq", table_name="cloak_records")
    with op.batch_alter_table("cloak_records") as b:
        b.drop_column("context_pdq_quality")
        b.drop_column("context_pdq")
