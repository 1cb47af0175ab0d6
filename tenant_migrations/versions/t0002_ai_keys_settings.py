"""BYOK AI provider keys (encrypted by the vault) and the tenant's AI model settings.

Revision ID: t0002
Revises: t0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "t0002"
down_revision: str | None = "t0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ai_provider_keys",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("label", sa.String(100)),
        sa.Column("base_url", sa.String(500)),
        sa.Column("api_version", sa.String(32)),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("created_by", UUID(as_uuid=True)),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("updated_by", UUID(as_uuid=True)),
        sa.CheckConstraint(
            "provider IN ('openai', 'anthropic', 'azure', 'gemini', 'openai_compatible')",
            name="provider_known",
        ),
    )
    op.create_table(
        "ai_settings",
        sa.Column("id", sa.SmallInteger(), primary_key=True, server_default="1"),
        sa.Column(
            "caption_model", sa.String(200), nullable=False, server_default="openai/gpt-4o-mini"
        ),
        sa.Column(
            "embedding_model",
            sa.String(200),
            nullable=False,
            server_default="openai/text-embedding-3-small",
        ),
        sa.Column("embedding_dimension", sa.Integer(), nullable=False, server_default="1536"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("updated_by", UUID(as_uuid=True)),
        sa.CheckConstraint("id = 1", name="single_row"),
        sa.CheckConstraint("embedding_dimension BETWEEN 1 AND 16000", name="dimension_range"),
    )
    op.execute("INSERT INTO ai_settings (id) VALUES (1)")


def downgrade() -> None:
    op.drop_table("ai_settings")
    op.drop_table("ai_provider_keys")
