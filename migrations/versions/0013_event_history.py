"""Event history: every tenant event the relay dispatches stays readable for its plan's
retention, in a table partitioned by day (the relay creates the days and drops old ones).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "shared"


def upgrade() -> None:
    op.create_table(
        "event_history",
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", UUID(as_uuid=True), nullable=False),
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=True),
        sa.Column("aggregate_type", sa.String(length=64), nullable=False),
        sa.Column("aggregate_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("occurred_at", "event_id"),
        schema=SCHEMA,
        postgresql_partition_by="RANGE (occurred_at)",
    )
    op.create_index(
        "ix_event_history_feed",
        "event_history",
        ["tenant_id", "txid", "seq"],
        unique=False,
        schema=SCHEMA,
    )
    # Rows of a day whose partition does not exist yet land here (the relay creates each day
    # ahead of time; this catches a relay that was down for days, or a clock far off).
    op.execute(
        "CREATE TABLE shared.event_history_default PARTITION OF shared.event_history DEFAULT"
    )


def downgrade() -> None:
    op.drop_table("event_history", schema=SCHEMA)
