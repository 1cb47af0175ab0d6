"""AI tables in each tenant's schema: its BYOK provider keys (sealed by the vault) and its model
settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from socialflow.db.base import TenantBase


class AIProviderKey(TenantBase):
    """A tenant's key for one provider, sealed (AES-256-GCM under the tenant's data key)."""

    __tablename__ = "ai_provider_keys"
    __table_args__ = (
        CheckConstraint(
            "provider IN ('openai', 'anthropic', 'azure', 'gemini', 'openai_compatible')",
            name=conv("provider_known"),
        ),
        CheckConstraint("status IN ('valid', 'invalid')", name=conv("ck_ai_provider_keys_status")),
    )

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(100))
    base_url: Mapped[str | None] = mapped_column(String(500))
    api_version: Mapped[str | None] = mapped_column(String(32))
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_version: Mapped[int] = mapped_column(Integer)
    last4: Mapped[str] = mapped_column(String(4))
    fingerprint: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # `invalid` once the provider refused the key (401/403): no call is made with it until
    # it is replaced.
    status: Mapped[str] = mapped_column(String(16), server_default=text("'valid'"))
    invalid_reason: Mapped[str | None] = mapped_column(String(40))
    invalid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AISettings(TenantBase):
    """The tenant's caption and embedding models: one row (id = 1)."""

    __tablename__ = "ai_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name=conv("single_row")),
        CheckConstraint("embedding_dimension BETWEEN 1 AND 16000", name=conv("dimension_range")),
        CheckConstraint(
            "hashtag_count BETWEEN 0 AND 30", name=conv("ck_ai_settings_hashtag_count")
        ),
    )

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("1"))
    caption_model: Mapped[str] = mapped_column(
        String(200), server_default=text("'openai/gpt-4o-mini'")
    )
    embedding_model: Mapped[str] = mapped_column(
        String(200), server_default=text("'openai/text-embedding-3-small'")
    )
    embedding_dimension: Mapped[int] = mapped_column(Integer, server_default=text("1536"))
    # What the caption prompt adds: the brand's voice, the language (None: the tenant's
    # locale) and how many hashtags.
    brand_voice: Mapped[str | None] = mapped_column(Text)
    caption_language: Mapped[str | None] = mapped_column(String(16))
    hashtag_count: Mapped[int] = mapped_column(SmallInteger, server_default=text("5"))
    # Bumped by each embedding model change; a re-embedding backfill works for one generation.
    embedding_generation: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reembed_total: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reembed_done: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class AIUsage(TenantBase):
    """The usage ledger: one row per provider call. Written `reserved` with the call's maximum
    cost before it is made (the budget holds that much), then settled to what the provider
    reported, or released (cost 0) when no call was billed."""

    __tablename__ = "ai_usage"
    __table_args__ = (
        CheckConstraint(
            "operation IN ('caption', 'embed', 'embed_query')",
            name=conv("ck_ai_usage_operation"),
        ),
        CheckConstraint("key_source IN ('byok', 'platform')", name=conv("ck_ai_usage_key_source")),
        Index("ix_ai_usage_created", "created_at"),
        Index("ix_ai_usage_event", "event_id", postgresql_where=text("event_id IS NOT NULL")),
        Index("ix_ai_usage_reserved", "created_at", postgresql_where=text("outcome = 'reserved'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The billing period the reservation counted in (what a release gives back to); NULL on
    # rows written before t0010.
    period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    operation: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    key_source: Mapped[str] = mapped_column(String(10))
    prompt_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    completion_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reserved_usd: Mapped[Decimal] = mapped_column(Numeric(20, 6))
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(20, 6), server_default=text("0"))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(20), server_default=text("'reserved'"))
    error_type: Mapped[str | None] = mapped_column(String(40))
    media_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    request_id: Mapped[str | None] = mapped_column(String(64))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
