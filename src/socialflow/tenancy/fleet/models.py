"""The fleet's ledger in the shared schema: each tenant schema's revision and last run."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Float, ForeignKey, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from socialflow.db.base import SharedBase


class TenantSchemaMigration(SharedBase):
    """Where one tenant schema stands: written with the schema by provisioning and in the
    schema's own transaction by every fleet step, so it always agrees with the schema."""

    __tablename__ = "tenant_schema_migrations"
    __table_args__ = (
        CheckConstraint("status IN ('ok', 'failed')", name="status"),
        Index("ix_tenant_schema_migrations_revision_status", "revision", "status"),
    )

    schema_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.tenants.id")
    )
    revision: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'ok'"))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
