"""Vault: tenants' data keys, wrapped by a master key (envelope encryption).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_data_keys",
        sa.Column(
            "tenant_id",
            UUID(as_uuid=True),
            sa.ForeignKey("shared.tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("master_key_id", sa.Text(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("version >= 1", name="ck_tenant_data_keys_version_positive"),
        schema="shared",
    )
    # Master key rotation looks rows up by the master key that wraps them.
    op.create_index(
        "ix_tenant_data_keys_master_key_id", "tenant_data_keys", ["master_key_id"], schema="shared"
    )


def downgrade() -> None:
    op.drop_table("tenant_data_keys", schema="shared")
