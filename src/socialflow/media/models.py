"""Media tables, in every tenant's schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from socialflow.db.base import TenantBase

STATUSES = ("pending_upload", "processing", "ready", "failed")
KINDS = ("image", "video")


class MediaItem(TenantBase):
    """One uploaded file, its derivatives and what processing learnt of it."""

    __tablename__ = "media_items"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending_upload', 'processing', 'ready', 'failed')",
            name=conv("ck_media_items_status"),
        ),
        CheckConstraint("kind IN ('image', 'video')", name=conv("ck_media_items_kind")),
        CheckConstraint(
            "(focal_x IS NULL OR focal_x BETWEEN 0 AND 1) "
            "AND (focal_y IS NULL OR focal_y BETWEEN 0 AND 1)",
            name=conv("ck_media_items_focal_point"),
        ),
        # The list's order, and its filters.
        Index("ix_media_items_created", "created_at", "id"),
        # One live item per content: identical bytes return the existing item.
        Index(
            "uq_media_items_sha256_live",
            "sha256",
            unique=True,
            postgresql_where=text("deleted_at IS NULL AND status IN ('processing', 'ready')"),
        ),
        Index(
            "ix_media_items_pending",
            "created_at",
            postgresql_where=text("status = 'pending_upload'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'pending_upload'"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))  # as declared at upload
    size: Mapped[int] = mapped_column(BigInteger)
    declared_sha256: Mapped[str | None] = mapped_column(String(64))
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the bytes, once read
    storage_key: Mapped[str] = mapped_column(String(255))
    detected_format: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(BigInteger)
    height: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Float)
    codecs: Mapped[str | None] = mapped_column(String(100))
    dominant_color: Mapped[str | None] = mapped_column(String(7))  # #rrggbb
    blurhash: Mapped[str | None] = mapped_column(String(100))
    phash: Mapped[str | None] = mapped_column(String(16))  # 64-bit perceptual hash, hex
    derivatives: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    title: Mapped[str | None] = mapped_column(String(300))
    alt_text: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(50)), server_default=text("'{}'"))
    focal_x: Mapped[float | None] = mapped_column(Float)
    focal_y: Mapped[float | None] = mapped_column(Float)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(String(80))  # the actor: user:… or api_key:…
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
