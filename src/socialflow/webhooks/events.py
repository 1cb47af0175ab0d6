"""Events of customer webhooks."""

from __future__ import annotations

from socialflow.outbox.events import AuditLog, DomainEvent, FieldsChanged


class WebhookEndpointEvent(DomainEvent, frozen=True, kw_only=True):
    aggregate_type = "webhook_endpoint"
    aggregate_key = "endpoint_id"
    audit_log = AuditLog.TENANT

    endpoint_id: str


class WebhookEndpointCreated(WebhookEndpointEvent, frozen=True, kw_only=True):
    event_type = "webhook_endpoint.created"

    url: str  # without its query: a receiver may keep a token there
    event_types: list[str]
    description: str | None
    enabled: bool


class WebhookEndpointUpdated(FieldsChanged, frozen=True, kw_only=True):
    event_type = "webhook_endpoint.updated"
    aggregate_type = "webhook_endpoint"
    aggregate_key = "endpoint_id"
    audit_log = AuditLog.TENANT

    endpoint_id: str


class WebhookEndpointDeleted(WebhookEndpointEvent, frozen=True, kw_only=True):
    event_type = "webhook_endpoint.deleted"
    removes = True

    url: str


class WebhookSecretRotated(WebhookEndpointEvent, frozen=True, kw_only=True):
    """A new signing secret; the previous one also signs until `previous_valid_until`."""

    event_type = "webhook_endpoint.secret_rotated"

    previous_valid_until: str | None


class WebhookEndpointDisabled(WebhookEndpointEvent, frozen=True, kw_only=True):
    """Disabled by the platform: the receiver answered 410 Gone, or failed every attempt for
    too long. The tenant's admins are emailed."""

    event_type = "webhook_endpoint.disabled"
    audit_log = AuditLog.NONE

    reason: str
    failure_streak: int


class WebhookReplayRequested(WebhookEndpointEvent, frozen=True, kw_only=True):
    event_type = "webhook_endpoint.replay_requested"

    events: int
    from_event_id: str | None
    since: str | None


class WebhookEndpointDue(WebhookEndpointEvent, frozen=True, kw_only=True):
    """An endpoint's due deliveries are to be sent (deferred to when the first falls due)."""

    event_type = "webhook_endpoint.due"
    audit_log = AuditLog.NONE
    internal = True
