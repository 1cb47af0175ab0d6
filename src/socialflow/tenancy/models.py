"""Tenancy tables: agencies, their admins and tenants (shared schema); each tenant's general
settings (its own schema)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from socialflow.db.base import SharedBase, TenantBase


class Agency(SharedBase):
    __tablename__ = "agencies"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AgencyAdmin(SharedBase):
    __tablename__ = "agency_admins"
    __table_args__ = (Index("ix_agency_admins_user_id", "user_id"),)  # a user's agencies

    agency_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.agencies.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Tenant(SharedBase):
    __tablename__ = "tenants"
    __table_args__ = (
        # A slug stays taken until its tenant is purged.
        Index(
            "uq_tenants_slug_live", "slug", unique=True, postgresql_where=text("status <> 'purged'")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    slug: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    agency_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.agencies.id"), index=True
    )
    # The catalogue is plans/' (shared.plans): named here, not imported.
    plan: Mapped[str] = mapped_column(String(32), ForeignKey("shared.plans.name"))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'active'"))
    schema_name: Mapped[str] = mapped_column(String(63))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    purge_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantSettings(TenantBase):
    """A tenant's general settings: one row (id = 1) in its own schema."""

    __tablename__ = "settings"
    __table_args__ = (CheckConstraint("id = 1", name=conv("single_row")),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("1"))
    display_name: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), server_default=text("'UTC'"))
    locale: Mapped[str] = mapped_column(String(16), server_default=text("'en'"))
    # Posts: whether they need a reviewer's approval, and whether their author may give it.
    review_required: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    self_approval_allowed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
