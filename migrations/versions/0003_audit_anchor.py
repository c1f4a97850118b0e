"""audit log: an HMAC per row (key outside the database) and append-only triggers

Revision ID: 0003_audit_anchor
Revises: 0002_context_pdq
Create Date: 2026-12-02

`row_mac` is nullable: rows written before this revision (or without an audit key) have none;
`faceprov audit anchor` signs them once. The triggers refuse every UPDATE and DELETE of an audit
row, except filling in a missing MAC with the other columns unchanged. (Someone with owner
rights can drop a trigger; the MAC is what catches a rewrite then.)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_audit_anchor"
down_revision = "0002_context_pdq"
branch_labels = None
depends_on = None

COLS = ("seq", "created_at", "actor", "action", "object_type", "object_id", "payload", "prev_hash", "row_hash")
MSG = "audit_log is append-only"


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as b:
        b.add_column(sa.Column("row_mac", sa.String(80), nullable=True))
    same = " AND ".join(f"NEW.{c} = OLD.{c}" for c in COLS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
CREATE OR REPLACE FUNCTION faceprov_audit_append_only() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.row_mac IS NULL AND NEW.row_mac IS NOT NULL AND {same} THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '{MSG}';
END $$ LANGUAGE plpgsql""")
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION faceprov_audit_append_only()")
    else:
        op.execute(f"""
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN NOT (OLD.row_mac IS NULL AND NEW.row_mac IS NOT NULL AND {same})
BEGIN SELECT RAISE(ABORT, '{MSG}'); END""")
        op.execute(f"""
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, '{MSG}'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS faceprov_audit_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    with op.batch_alter_table("audit_log") as b:
        b.drop_column("row_mac")
