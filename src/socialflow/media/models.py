"""Media tables, in every tenant's schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from socialflow.db.base import TenantBase
from socialflow.media import text_search

STATUSES = ("pending_upload", "processing", "ready", "failed")
KINDS = ("image", "video")
# pending: asked for; generated / edited: a caption is there; the others say why there is none.
CAPTION_STATES = (
    "pending",
    "generated",
    "edited",
    "not_configured",
    "budget_exceeded",
    "key_invalid",
    "refused",
    "failed",
)
EMBEDDING_STATES = (
    "pending",
    "embedded",
    "no_text",
    "not_configured",
    "budget_exceeded",
    "key_invalid",
    "failed",
)


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
            f"caption_state IN ({', '.join(repr(s) for s in CAPTION_STATES)})",
            name=conv("ck_media_items_caption_state"),
        ),
        CheckConstraint(
            f"embedding_state IN ({', '.join(repr(s) for s in EMBEDDING_STATES)})",
            name=conv("ck_media_items_embedding_state"),
        ),
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
        Index("ix_media_items_search_doc", "search_doc", postgresql_using="gin"),
        Index("ix_media_items_tags", "tags", postgresql_using="gin"),
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
    # The AI caption (captions/): its state, what the model wrote, with which model and prompt.
    caption_state: Mapped[str | None] = mapped_column(String(20))
    caption: Mapped[str | None] = mapped_column(Text)
    caption_alt_text: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    hashtags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), server_default=text("'{}'"))
    caption_language: Mapped[str | None] = mapped_column(String(16))
    caption_model: Mapped[str | None] = mapped_column(String(200))
    caption_prompt_version: Mapped[str | None] = mapped_column(String(16))
    caption_reason: Mapped[str | None] = mapped_column(Text)
    captioned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The item's vector (media_embeddings): its state and, when it has none, why.
    embedding_state: Mapped[str | None] = mapped_column(String(20))
    embedding_reason: Mapped[str | None] = mapped_column(Text)
    # What full-text search reads (media.text_search), in the tenant's language: never loaded.
    search_doc: Mapped[Any] = mapped_column(
        TSVECTOR,
        Computed(text_search.generated_expression(text_search.FALLBACK), persisted=True),
        deferred=True,
    )


class MediaEmbedding(TenantBase):
    """An item's vector for the tenant's embedding model. The column is typed per tenant
    (`vector(N)` for its model's dimension, ai_settings.embedding_dimension): declared here
    without one, typed by captions.vectors when the tenant's schema gets it. Only the current
    model's vectors are ever here: a model change empties the table as it re-types it."""

    __tablename__ = "media_embeddings"
    # Approximate nearest neighbours by cosine distance (ai.vectors builds it for the tenant's
    # dimension; none above HNSW's 2,000: search then scans exactly).
    __table_args__ = (
        Index(
            "ix_media_embeddings_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )

    media_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("media_items.id", ondelete="CASCADE"),
        primary_key=True,
    )
    model: Mapped[str] = mapped_column(String(200))
    content_sha256: Mapped[str] = mapped_column(String(64))  # of the text embedded
    embedding: Mapped[Any] = mapped_column(Vector())
    embedded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
