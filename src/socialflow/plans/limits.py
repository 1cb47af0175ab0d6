"""What a plan limits: every resource, how it is measured, and a tenant's effective limits
(its plan, then its overrides)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Measure(StrEnum):
    STOCK = "stock"  # what exists now, counted from the feature's own rows
    MONTHLY = "monthly"  # consumed in the billing period; reset on the anchor day
    RATE = "rate"  # requests a minute, counted in Redis by the rate limiter


class Resource(StrEnum):
    SEATS = "seats"
    STORAGE_BYTES = "storage_bytes"
    MEDIA_ITEMS = "media_items"
    POSTS_PER_MONTH = "posts_per_month"
    AI_SPEND_USD_PER_MONTH = "ai_spend_usd_per_month"
    SOCIAL_ACCOUNTS = "social_accounts"
    WEBHOOK_ENDPOINTS = "webhook_endpoints"
    API_REQUESTS_PER_MINUTE = "api_requests_per_minute"

    @property
    def measure(self) -> Measure:
        return MEASURES[self]

    @property
    def is_money(self) -> bool:
        return self is Resource.AI_SPEND_USD_PER_MONTH


MEASURES: dict[Resource, Measure] = {
    Resource.SEATS: Measure.STOCK,
    Resource.STORAGE_BYTES: Measure.STOCK,
    Resource.MEDIA_ITEMS: Measure.STOCK,
    Resource.POSTS_PER_MONTH: Measure.MONTHLY,
    Resource.AI_SPEND_USD_PER_MONTH: Measure.MONTHLY,
    Resource.SOCIAL_ACCOUNTS: Measure.STOCK,
    Resource.WEBHOOK_ENDPOINTS: Measure.STOCK,
    Resource.API_REQUESTS_PER_MINUTE: Measure.RATE,
}

# How a stock resource is counted, from the rows of the feature that owns it (`:tenant` is
# the tenant's id, `{schema}` its quoted schema). Its tables belong to layers above this one:
# named in SQL, not imported. A resource whose feature does not exist yet has no rows, so
# nothing of it is used; the feature adds its count here when it lands.
# Media: what is uploading (its bytes may be in the store already), processing or ready, and
# not deleted. Uploads never confirmed leave it when they expire.
_LIVE_MEDIA = (
    "FROM {schema}.media_items WHERE deleted_at IS NULL "
    "AND status IN ('pending_upload', 'processing', 'ready')"
)
STOCK_COUNTS: dict[Resource, str] = {
    Resource.STORAGE_BYTES: f"SELECT coalesce(sum(size), 0) {_LIVE_MEDIA}",
    Resource.MEDIA_ITEMS: f"SELECT count(*) {_LIVE_MEDIA}",
    # Connected accounts, also those that need reconnecting (they still hold their place).
    Resource.SOCIAL_ACCOUNTS: (
        "SELECT count(*) FROM {schema}.social_accounts WHERE status <> 'disconnected'"
    ),
    Resource.WEBHOOK_ENDPOINTS: "SELECT count(*) FROM {schema}.webhook_endpoints",
    # Members, and invitations still open for people who are not members yet: an
    # invitation holds its seat until it is accepted or expires.
    Resource.SEATS: """
SELECT (SELECT count(*) FROM shared.memberships WHERE tenant_id = :tenant)
     + (SELECT count(DISTINCT i.user_id) FROM shared.invitations i
        WHERE i.tenant_id = :tenant AND i.accepted_at IS NULL AND i.expires_at > now()
          AND NOT EXISTS (SELECT 1 FROM shared.memberships m
                          WHERE m.tenant_id = i.tenant_id AND m.user_id = i.user_id))
""",
}

# Seats taken by members alone: what an accepted invitation is counted against (its held seat
# becomes a member's; after a limit was lowered, the first to accept get the seats left).
MEMBER_SEATS = "SELECT count(*) FROM shared.memberships WHERE tenant_id = :tenant"

# Entitlements that are not consumed: how long events are kept, whether the platform's AI keys
# may serve the tenant.
SETTINGS = ("event_retention_days", "platform_ai_keys")
FIELDS = (*(r.value for r in Resource), *SETTINGS)
# What may be unlimited (NULL in the catalogue, null in an override): all but the rate.
MAY_BE_UNLIMITED = tuple(r.value for r in Resource if r.measure is not Measure.RATE)

# Overrides only platform operators set: the platform's own AI keys are the platform's money,
# not the agency's to give away.
OPERATOR_ONLY = frozenset({"platform_ai_keys"})

MONEY_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class Limits:
    """A tenant's effective entitlements: its plan's, with its overrides applied."""

    plan: str
    values: dict[str, Any]  # every name of FIELDS; None = unlimited
    overridden: frozenset[str]

    def limit(self, resource: Resource) -> Decimal | None:
        value = self.values[resource.value]
        return None if value is None else Decimal(str(value))

    @property
    def platform_ai_keys(self) -> bool:
        return bool(self.values["platform_ai_keys"])

    @property
    def event_retention_days(self) -> int:
        return int(self.values["event_retention_days"])


def effective(plan: str, plan_values: dict[str, Any], overrides: dict[str, Any]) -> Limits:
    """The plan's values, each replaced by the tenant's override where it has one."""
    values = {name: plan_values[name] for name in FIELDS}
    known = {name: value for name, value in overrides.items() if name in values}
    values.update(known)
    return Limits(plan=plan, values=values, overridden=frozenset(known))
