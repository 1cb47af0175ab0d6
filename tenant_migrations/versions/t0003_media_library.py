"""The media library: each tenant's uploaded files, what processing learnt of them, and
their derivatives.

Revision ID: t0003
Revises: t0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "t0003"
down_revision: str | None = "t0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "media_items",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column(
            "status",
            sa.String(length=16),
            server_default=sa.text("'pending_upload'"),
            nullable=False,
        ),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("declared_sha256", sa.String(length=64), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("detected_format", sa.String(length=16), nullable=True),
        sa.Column("width", sa.BigInteger(), nullable=True),
        sa.Column("height", sa.BigInteger(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("codecs", sa.String(length=100), nullable=True),
        sa.Column("dominant_color", sa.String(length=7), nullable=True),
        sa.Column("blurhash", sa.String(length=100), nullable=True),
        sa.Column("phash", sa.String(length=16), nullable=True),
        sa.Column(
            "derivatives",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("title", sa.String(length=300), nullable=True),
        sa.Column("alt_text", sa.Text(), nullable=True),
        sa.Column(
            "tags",
            postgresql.ARRAY(sa.String(length=50)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("focal_x", sa.Float(), nullable=True),
        sa.Column("focal_y", sa.Float(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("uploaded_by", sa.String(length=80), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('image', 'video')", name=op.f("ck_media_items_kind")),
        sa.CheckConstraint(
            "status IN ('pending_upload', 'processing', 'ready', 'failed')",
            name=op.f("ck_media_items_status"),
        ),
        sa.CheckConstraint(
            "(focal_x IS NULL OR focal_x BETWEEN 0 AND 1) "
            "AND (focal_y IS NULL OR focal_y BETWEEN 0 AND 1)",
            name=op.f("ck_media_items_focal_point"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media_items")),
    )
    op.create_index("ix_media_items_created", "media_items", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_media_items_pending",
        "media_items",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending_upload'"),
    )
    op.create_index(
        "uq_media_items_sha256_live",
        "media_items",
        ["sha256"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL AND status IN ('processing', 'ready')"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_media_items_sha256_live",
        table_name="media_items",
        postgresql_where=sa.text("deleted_at IS NULL AND status IN ('processing', 'ready')"),
    )
    op.drop_index(
        "ix_media_items_pending",
        table_name="media_items",
        postgresql_where=sa.text("status = 'pending_upload'"),
    )
    op.drop_index("ix_media_items_created", table_name="media_items")
    op.drop_table("media_items")
