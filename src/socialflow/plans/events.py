"""Events of plans and entitlements: the catalogue, a tenant's overrides, quota thresholds."""

from __future__ import annotations

import uuid
from typing import Any

from socialflow.outbox.events import AuditLog, DomainEvent, FieldsChanged


class PlanCreated(DomainEvent, frozen=True, kw_only=True):
    event_type = "plan.created"
    aggregate_type = "plan"
    aggregate_key = "name"
    audit_log = AuditLog.PLATFORM

    name: str
    limits: dict[str, Any]


class PlanUpdated(FieldsChanged, frozen=True, kw_only=True):
    event_type = "plan.updated"  # the limits that changed
    aggregate_type = "plan"
    aggregate_key = "name"
    audit_log = AuditLog.PLATFORM

    name: str


class EntitlementsChanged(FieldsChanged, frozen=True, kw_only=True):
    """A tenant's overrides or billing anchor changed (by its agency's admin or an operator)."""

    event_type = "tenant.entitlements_changed"
    aggregate_type = "tenant"
    aggregate_key = "tenant_id"
    audit_log = AuditLog.PLATFORM

    tenant_id: uuid.UUID
    slug: str


class QuotaThreshold(DomainEvent, frozen=True, kw_only=True):
    """A tenant's use of a limited resource crossed a threshold (a shared base): the event is
    the record, no audit entry."""

    aggregate_type = "quota"
    aggregate_key = "resource"
    audit_log = AuditLog.NONE

    resource: str
    limit: float
    used: float
    resets_at: str | None  # ISO 8601; None for what does not reset (seats, storage …)


class QuotaWarning(QuotaThreshold, frozen=True, kw_only=True):
    event_type = "quota.warning"  # 80 % of the limit reached


class QuotaExceeded(QuotaThreshold, frozen=True, kw_only=True):
    event_type = "quota.exceeded"  # a use refused: at most one event per period


class AiBudgetWarning(QuotaThreshold, frozen=True, kw_only=True):
    event_type = "ai.budget.warning"  # 80 % of the month's AI spend reserved or spent


class AiBudgetExceeded(QuotaThreshold, frozen=True, kw_only=True):
    event_type = "ai.budget.exceeded"  # an AI call refused: at most one event per month


# The events of a resource whose crossings have a name of their own (else quota.*).
THRESHOLD_EVENTS: dict[str, tuple[type[QuotaThreshold], type[QuotaThreshold]]] = {
    "ai_spend_usd_per_month": (AiBudgetWarning, AiBudgetExceeded),
}


def threshold_events(resource: str) -> tuple[type[QuotaThreshold], type[QuotaThreshold]]:
    """(warning, exceeded) event classes of `resource`."""
    return THRESHOLD_EVENTS.get(resource, (QuotaWarning, QuotaExceeded))
