"""Tenants' data keys in the shared schema, each stored wrapped by a master key."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from socialflow.db.base import SharedBase


class TenantDataKey(SharedBase):
    """One version of a tenant's data key. The highest version is the one new secrets use;
    older versions open older secrets until a tenant key rotation re-encrypts and drops them."""

    __tablename__ = "tenant_data_keys"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        # What `rotate_master` scans and `vault_status` counts.
        Index("ix_tenant_data_keys_master_key_id", "master_key_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.tenants.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    master_key_id: Mapped[str] = mapped_column(Text)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
