"""AI tables in each tenant's schema: its BYOK provider keys (sealed by the vault) and its model
settings."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
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


class AISettings(TenantBase):
    """The tenant's caption and embedding models: one row (id = 1)."""

    __tablename__ = "ai_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name=conv("single_row")),
        CheckConstraint("embedding_dimension BETWEEN 1 AND 16000", name=conv("dimension_range")),
    )

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("1"))
    caption_model: Mapped[str] = mapped_column(
        String(200), server_default=text("'openai/gpt-4o-mini'")
    )
    embedding_model: Mapped[str] = mapped_column(
        String(200), server_default=text("'openai/text-embedding-3-small'")
    )
    embedding_dimension: Mapped[int] = mapped_column(Integer, server_default=text("1536"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
