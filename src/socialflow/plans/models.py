"""Plans tables, all in the shared schema: the catalogue, each tenant's overrides and billing
anchor, metered usage per billing period, and the quota notices already sent."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from socialflow.db.base import SharedBase
from socialflow.plans.limits import MAY_BE_UNLIMITED


class Plan(SharedBase):
    """One plan of the catalogue: its limits (NULL = unlimited) and what it includes."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("name ~ '^[a-z][a-z0-9_-]{0,31}$'", name=conv("ck_plans_name")),
        CheckConstraint(
            # NULL is unlimited; counts, bytes and dollars are never negative.
            " AND ".join(f"({c} IS NULL OR {c} >= 0)" for c in MAY_BE_UNLIMITED)
            + " AND api_requests_per_minute >= 1 AND event_retention_days >= 1",
            name=conv("ck_plans_limits"),
        ),
    )

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(100))
    seats: Mapped[int | None] = mapped_column(Integer)
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    media_items: Mapped[int | None] = mapped_column(Integer)
    posts_per_month: Mapped[int | None] = mapped_column(Integer)
    ai_spend_usd_per_month: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    social_accounts: Mapped[int | None] = mapped_column(Integer)
    webhook_endpoints: Mapped[int | None] = mapped_column(Integer)
    api_requests_per_minute: Mapped[int] = mapped_column(Integer)
    event_retention_days: Mapped[int] = mapped_column(Integer)
    platform_ai_keys: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantEntitlements(SharedBase):
    """A tenant's overrides of its plan (only the limits set; JSON null = unlimited) and the
    day of the month its billing period starts."""

    __tablename__ = "tenant_entitlements"
    __table_args__ = (
        CheckConstraint(
            "billing_anchor_day BETWEEN 1 AND 31", name=conv("ck_tenant_entitlements_anchor")
        ),
        CheckConstraint(
            "jsonb_typeof(overrides) = 'object'", name=conv("ck_tenant_entitlements_overrides")
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.tenants.id", ondelete="CASCADE"), primary_key=True
    )
    overrides: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    billing_anchor_day: Mapped[int] = mapped_column(SmallInteger)
    # The period monthly use is counted in, pinned when it began: changing the time zone or
    # the anchor day applies from the next period and never restarts the current one.
    period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantUsage(SharedBase):
    """What a tenant consumed of a monthly resource in one billing period (kept afterwards:
    the history agencies bill from)."""

    __tablename__ = "tenant_usage"
    __table_args__ = (CheckConstraint("used >= 0", name=conv("ck_tenant_usage_used")),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.tenants.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    used: Mapped[Decimal] = mapped_column(Numeric(20, 6), server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class QuotaNotice(SharedBase):
    """A `quota.exceeded` event already emitted for this tenant, resource and period: one per
    period (a day for resources that are not monthly), however many requests are refused."""

    __tablename__ = "quota_notices"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.tenants.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
