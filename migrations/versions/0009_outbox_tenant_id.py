"""Outbox rows and dead letters carry the tenant's id; rows remember failed enqueue attempts.

Workers resolve a tenant by id (a purged slug can be provisioned again, and an old event must
not run in the new tenant); the relay counts Redis command errors per row and dead-letters a
row after a bound instead of retrying it forever.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "shared"


def upgrade() -> None:
    for table in ("outbox", "outbox_dead_letter"):
        # No index: purging a tenant scans these tables, which hold only a backlog; the
        # write path of the outbox keeps its three indexes.
        op.add_column(table, sa.Column("tenant_id", UUID(as_uuid=True)), schema=SCHEMA)
        # Rows written before this revision: the live tenant with that slug.
        op.execute(
            f"UPDATE shared.{table} o SET tenant_id = t.id FROM shared.tenants t "  # noqa: S608
            "WHERE o.tenant = t.slug AND t.status <> 'purged' AND o.tenant_id IS NULL"
        )
    op.add_column(
        "outbox",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        schema=SCHEMA,
    )
    op.add_column("outbox", sa.Column("last_error", sa.Text()), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("outbox", "last_error", schema=SCHEMA)
    op.drop_column("outbox", "attempts", schema=SCHEMA)
    for table in ("outbox_dead_letter", "outbox"):
        op.drop_column(table, "tenant_id", schema=SCHEMA)
