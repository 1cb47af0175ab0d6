"""Ledger of every tenant schema's revision, for fleet migrations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_schema_migrations",
        sa.Column("schema_name", sa.String(63), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("shared.tenants.id")),
        sa.Column("revision", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="ok"),
        sa.Column("last_run_at", sa.DateTime(timezone=True)),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("error", sa.Text()),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("status IN ('ok', 'failed')", name="ck_tenant_schema_migrations_status"),
        schema="shared",
    )
    op.create_index(
        "ix_tenant_schema_migrations_revision_status",
        "tenant_schema_migrations",
        ["revision", "status"],
        schema="shared",
    )
    # Tenants provisioned before the ledger existed: read each schema's own version table.
    op.execute("""
    DO $$
    DECLARE t record; v text;
    BEGIN
        FOR t IN SELECT id, schema_name FROM shared.tenants WHERE status <> 'purged' LOOP
            EXECUTE format('SELECT version_num FROM %I.alembic_version', t.schema_name) INTO v;
            INSERT INTO shared.tenant_schema_migrations (schema_name, tenant_id, revision)
            VALUES (t.schema_name, t.id, v);
        END LOOP;
    END $$
    """)


def downgrade() -> None:
    op.drop_table("tenant_schema_migrations", schema="shared")
