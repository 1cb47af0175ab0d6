"""Request and response bodies of plans, entitlements and usage."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

PlanName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2_000_000_000)]
Seats = Annotated[int, msgspec.Meta(ge=1, le=2_000_000_000)]
Bytes = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
Dollars = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
PerMinute = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
Days = Annotated[int, msgspec.Meta(ge=1, le=3650)]
AnchorDay = Annotated[int, msgspec.Meta(ge=1, le=31)]
Unlimited = Literal["unlimited"]


class PlanLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A plan's limits; null = unlimited (not for API requests a minute)."""

    seats: Seats | None
    storage_bytes: Bytes | None
    media_items: Count | None
    posts_per_month: Count | None
    ai_spend_usd_per_month: Dollars | None
    social_accounts: Count | None
    webhook_endpoints: Count | None
    api_requests_per_minute: PerMinute
    event_retention_days: Days
    platform_ai_keys: bool


class PlanCreate(PlanLimits, kw_only=True, forbid_unknown_fields=True):
    name: PlanName
    display_name: DisplayName


class PlanUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What changes: an absent field stays; null makes a limit unlimited."""

    display_name: DisplayName | msgspec.UnsetType = msgspec.UNSET
    seats: Seats | msgspec.UnsetType | None = msgspec.UNSET
    storage_bytes: Bytes | msgspec.UnsetType | None = msgspec.UNSET
    media_items: Count | msgspec.UnsetType | None = msgspec.UNSET
    posts_per_month: Count | msgspec.UnsetType | None = msgspec.UNSET
    ai_spend_usd_per_month: Dollars | msgspec.UnsetType | None = msgspec.UNSET
    social_accounts: Count | msgspec.UnsetType | None = msgspec.UNSET
    webhook_endpoints: Count | msgspec.UnsetType | None = msgspec.UNSET
    api_requests_per_minute: PerMinute | msgspec.UnsetType = msgspec.UNSET
    event_retention_days: Days | msgspec.UnsetType = msgspec.UNSET
    platform_ai_keys: bool | msgspec.UnsetType = msgspec.UNSET


class PlanOut(PlanLimits, kw_only=True):
    name: str
    display_name: str
    created_at: datetime
    updated_at: datetime


class PlanList(msgspec.Struct):
    items: list[PlanOut]


class Overrides(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Per-tenant overrides: a number (or "unlimited") replaces the plan's limit; null removes
    the override (the plan's limit applies again); an absent field is left as it is."""

    seats: Seats | Unlimited | msgspec.UnsetType | None = msgspec.UNSET
    storage_bytes: Bytes | Unlimited | msgspec.UnsetType | None = msgspec.UNSET
    media_items: Count | Unlimited | msgspec.UnsetType | None = msgspec.UNSET
    posts_per_month: Count | Unlimited | msgspec.UnsetType | None = msgspec.UNSET
    ai_spend_usd_per_month: Dollars | Unlimited | msgspec.UnsetType | None = msgspec.UNSET
    social_accounts: Count | Unlimited | msgspec.UnsetType | None = msgspec.UNSET
    webhook_endpoints: Count | Unlimited | msgspec.UnsetType | None = msgspec.UNSET
    api_requests_per_minute: PerMinute | msgspec.UnsetType | None = msgspec.UNSET
    event_retention_days: Days | msgspec.UnsetType | None = msgspec.UNSET
    platform_ai_keys: bool | msgspec.UnsetType | None = msgspec.UNSET


class EntitlementsUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    overrides: Overrides = msgspec.field(default_factory=Overrides)
    billing_anchor_day: AnchorDay | msgspec.UnsetType = msgspec.UNSET


# Limits and uses are JSON numbers: whole for counts and bytes, with decimals for dollars
# (typed `float`, which JSON Schema calls "number"; whole values are written without ".0").


class OverLimit(msgspec.Struct):
    """A resource that uses more than its (lowered) limit: new use of it is refused."""

    resource: str
    limit: float
    used: float


class EntitlementsOut(msgspec.Struct, kw_only=True):
    tenant: str
    plan: str
    # The plan's limits with the overrides applied (null = unlimited).
    limits: dict[str, float | bool | None]
    # Only what is overridden ("unlimited" where the override lifts the limit).
    overrides: dict[str, float | bool | str]
    billing_anchor_day: int
    over_limit: list[OverLimit]


class ResourceUsage(msgspec.Struct, kw_only=True):
    resource: str
    measure: str  # stock | monthly | rate
    limit: float | None  # null = unlimited
    used: float
    remaining: float | None
    resets_at: datetime | None = None


class TenantUsageOut(msgspec.Struct, kw_only=True):
    tenant: str
    plan: str
    period_start: datetime
    period_end: datetime
    resources: list[ResourceUsage]
    over_limit: list[OverLimit]


class AgencyUsageList(msgspec.Struct):
    items: list[TenantUsageOut]
    next_cursor: str | None = None
