"""Outbox, its dead letters, and the processed-event ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "shared"
QUEUE_STORAGE = {
    "fillfactor": "90",
    "autovacuum_vacuum_scale_factor": "0.0",
    "autovacuum_vacuum_threshold": "5000",
    "autovacuum_vacuum_cost_delay": "0",
    "autovacuum_analyze_scale_factor": "0.0",
    "autovacuum_analyze_threshold": "20000",
}


def _event_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant", sa.String(63)),
        sa.Column("aggregate_type", sa.String(64), nullable=False),
        sa.Column("aggregate_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        *_event_columns(),
        sa.Column(
            "headers", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column(
            "available_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.clock_timestamp(),
        ),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
        schema=SCHEMA,
        postgresql_with=QUEUE_STORAGE,
    )
    op.create_index("ix_outbox_due", "outbox", ["available_at", "id"], schema=SCHEMA)

    op.create_table(
        "outbox_dead_letter",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        *_event_columns(),
        sa.Column("headers", postgresql.JSONB(), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column(
            "dead_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("event_id", name="uq_outbox_dead_letter_event_id"),
        schema=SCHEMA,
    )

    op.create_table(
        "processed_event",
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("event_id", "actor", name="pk_processed_event"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_processed_event_processed_at", "processed_event", ["processed_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("processed_event", schema=SCHEMA)
    op.drop_table("outbox_dead_letter", schema=SCHEMA)
    op.drop_table("outbox", schema=SCHEMA)
