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


class AiKeyInvalid(DomainEvent, frozen=True, kw_only=True):
    """The provider refused the tenant's key (401/403): no call uses it until it is replaced."""

    event_type = "ai_key.invalid"
    aggregate_type = "ai_key"
    aggregate_key = "provider"
    audit_log = AuditLog.TENANT

    provider: str
    last4: str
    fingerprint: str
    reason: str  # authentication_error or permission_denied


class AiEmbeddingModelChanged(DomainEvent, frozen=True, kw_only=True):
    """The tenant's embedding model (or dimension) changed: its vector column was re-typed and
    emptied; every item is embedded again by a backfill of this generation."""

    event_type = "ai.embedding_model_changed"
    aggregate_type = "ai_settings"
    aggregate_key = "generation"
    audit_log = AuditLog.NONE  # ai_settings.updated is the audited change

    generation: int
    model: str
    dimension: int
    total: int


class AiSettingsUpdated(SettingsChange, frozen=True, kw_only=True):
    event_type = "ai_settings.updated"
    aggregate_type = "ai_settings"
