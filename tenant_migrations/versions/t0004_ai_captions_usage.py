"""AI captions and embeddings of media items, the usage ledger, provider keys' status and the
caption settings.

The vector column is created untyped and typed here to the dimension the tenant's AI settings
record (a model change re-types it later, captions.vectors).

Revision ID: t0004
Revises: t0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "t0004"
down_revision: str | None = "t0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ai_usage",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("key_source", sa.String(length=10), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("reserved_usd", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column(
            "cost_usd",
            sa.Numeric(precision=20, scale=6),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column(
            "outcome", sa.String(length=20), server_default=sa.text("'reserved'"), nullable=False
        ),
        sa.Column("error_type", sa.String(length=40), nullable=True),
        sa.Column("media_id", sa.UUID(), nullable=True),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("key_source IN ('byok', 'platform')", name="ck_ai_usage_key_source"),
        sa.CheckConstraint(
            "operation IN ('caption', 'embed', 'embed_query')", name="ck_ai_usage_operation"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_usage")),
    )
    op.create_index("ix_ai_usage_created", "ai_usage", ["created_at"], unique=False)
    op.create_index(
        "ix_ai_usage_event",
        "ai_usage",
        ["event_id"],
        unique=False,
        postgresql_where=sa.text("event_id IS NOT NULL"),
    )
    op.create_index(
        "ix_ai_usage_reserved",
        "ai_usage",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("outcome = 'reserved'"),
    )
    op.create_table(
        "media_embeddings",
        sa.Column("media_id", sa.UUID(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.vector.VECTOR(), nullable=False),
        sa.Column(
            "embedded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["media_id"],
            ["media_items.id"],
            name=op.f("fk_media_embeddings_media_id_media_items"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("media_id", name=op.f("pk_media_embeddings")),
    )
    op.add_column(
        "ai_provider_keys",
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'valid'"), nullable=False
        ),
    )
    op.add_column(
        "ai_provider_keys", sa.Column("invalid_reason", sa.String(length=40), nullable=True)
    )
    op.add_column(
        "ai_provider_keys", sa.Column("invalid_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("ai_settings", sa.Column("brand_voice", sa.Text(), nullable=True))
    op.add_column("ai_settings", sa.Column("caption_language", sa.String(length=16), nullable=True))
    op.add_column(
        "ai_settings",
        sa.Column("hashtag_count", sa.SmallInteger(), server_default=sa.text("5"), nullable=False),
    )
    op.add_column(
        "ai_settings",
        sa.Column(
            "embedding_generation", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column(
        "ai_settings",
        sa.Column("reembed_total", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "ai_settings",
        sa.Column("reembed_done", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("media_items", sa.Column("caption_state", sa.String(length=20), nullable=True))
    op.add_column("media_items", sa.Column("caption", sa.Text(), nullable=True))
    op.add_column("media_items", sa.Column("caption_alt_text", sa.Text(), nullable=True))
    op.add_column("media_items", sa.Column("description", sa.Text(), nullable=True))
    op.add_column(
        "media_items",
        sa.Column(
            "hashtags",
            postgresql.ARRAY(sa.String(length=100)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.add_column("media_items", sa.Column("caption_language", sa.String(length=16), nullable=True))
    op.add_column("media_items", sa.Column("caption_model", sa.String(length=200), nullable=True))
    op.add_column(
        "media_items", sa.Column("caption_prompt_version", sa.String(length=16), nullable=True)
    )
    op.add_column("media_items", sa.Column("caption_reason", sa.Text(), nullable=True))
    op.add_column(
        "media_items", sa.Column("captioned_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("media_items", sa.Column("embedding_state", sa.String(length=20), nullable=True))
    op.add_column("media_items", sa.Column("embedding_reason", sa.Text(), nullable=True))
    op.create_check_constraint(
        "ck_ai_provider_keys_status", "ai_provider_keys", "status IN ('valid', 'invalid')"
    )
    op.create_check_constraint(
        "ck_ai_settings_hashtag_count", "ai_settings", "hashtag_count BETWEEN 0 AND 30"
    )
    op.create_check_constraint(
        "ck_media_items_caption_state",
        "media_items",
        "caption_state IN ('pending', 'generated', 'edited', 'not_configured', "
        "'budget_exceeded', 'key_invalid', 'refused', 'failed')",
    )
    op.create_check_constraint(
        "ck_media_items_embedding_state",
        "media_items",
        "embedding_state IN ('pending', 'embedded', 'no_text', 'not_configured', "
        "'budget_exceeded', 'failed')",
    )
    # The column takes the dimension of the tenant's embedding model (server-side: tenant
    # revisions render offline).
    op.execute(
        """
DO $$
DECLARE dimension integer;
BEGIN
    SELECT embedding_dimension INTO dimension FROM ai_settings WHERE id = 1;
    EXECUTE format(
        'ALTER TABLE media_embeddings ALTER COLUMN embedding TYPE vector(%s)',
        coalesce(dimension, 1536)
    );
END
$$"""
    )


def downgrade() -> None:
    op.drop_constraint("ck_media_items_embedding_state", "media_items")
    op.drop_constraint("ck_media_items_caption_state", "media_items")
    op.drop_constraint("ck_ai_settings_hashtag_count", "ai_settings")
    op.drop_constraint("ck_ai_provider_keys_status", "ai_provider_keys")
    op.drop_column("media_items", "embedding_reason")
    op.drop_column("media_items", "embedding_state")
    op.drop_column("media_items", "captioned_at")
    op.drop_column("media_items", "caption_reason")
    op.drop_column("media_items", "caption_prompt_version")
    op.drop_column("media_items", "caption_model")
    op.drop_column("media_items", "caption_language")
    op.drop_column("media_items", "hashtags")
    op.drop_column("media_items", "description")
    op.drop_column("media_items", "caption_alt_text")
    op.drop_column("media_items", "caption")
    op.drop_column("media_items", "caption_state")
    op.drop_column("ai_settings", "reembed_done")
    op.drop_column("ai_settings", "reembed_total")
    op.drop_column("ai_settings", "embedding_generation")
    op.drop_column("ai_settings", "hashtag_count")
    op.drop_column("ai_settings", "caption_language")
    op.drop_column("ai_settings", "brand_voice")
    op.drop_column("ai_provider_keys", "invalid_at")
    op.drop_column("ai_provider_keys", "invalid_reason")
    op.drop_column("ai_provider_keys", "status")
    op.drop_table("media_embeddings")
    op.drop_index(
        "ix_ai_usage_reserved",
        table_name="ai_usage",
        postgresql_where=sa.text("outcome = 'reserved'"),
    )
    op.drop_index(
        "ix_ai_usage_event", table_name="ai_usage", postgresql_where=sa.text("event_id IS NOT NULL")
    )
    op.drop_index("ix_ai_usage_created", table_name="ai_usage")
    op.drop_table("ai_usage")
