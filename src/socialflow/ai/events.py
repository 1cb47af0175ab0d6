"""Events of the AI feature: a tenant's provider keys (never the key itself) and AI settings."""

from __future__ import annotations

from socialflow.outbox.events import AuditLog, DomainEvent
from socialflow.tenancy.events import SettingsChange


class AiKeyConfigured(DomainEvent, frozen=True, kw_only=True):
    """A provider key stored or replaced: shown masked (last 4 and a fingerprint)."""

    event_type = "ai_key.configured"
    aggregate_type = "ai_key"
    aggregate_key = "provider"
    audit_log = AuditLog.TENANT

    provider: str
    label: str | None
    base_url: str | None
    last4: str
    fingerprint: str
    replaced: bool  # the provider had a key already

    @property
    def audit_action(self) -> str:
        return "ai_key.replaced" if self.replaced else "ai_key.created"


class AiKeyRemoved(DomainEvent, frozen=True, kw_only=True):
    event_type = "ai_key.removed"
    aggregate_type = "ai_key"
    aggregate_key = "provider"
    audit_log = AuditLog.TENANT
    removes = True

    provider: str
    label: str | None
    last4: str
    fingerprint: str


class AiSettingsUpdated(SettingsChange, frozen=True, kw_only=True):
    event_type = "ai_settings.updated"
    aggregate_type = "ai_settings"
