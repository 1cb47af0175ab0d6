"""Events of connected social accounts."""

from __future__ import annotations

import uuid

from socialflow.outbox.events import AuditLog, DomainEvent


class SocialAccountEvent(DomainEvent, frozen=True, kw_only=True):
    aggregate_type = "social_account"
    aggregate_key = "account_id"
    audit_log = AuditLog.TENANT

    account_id: uuid.UUID
    platform: str
    handle: str


class SocialAccountConnected(SocialAccountEvent, frozen=True, kw_only=True):
    event_type = "social_account.connected"

    reconnected: bool = False


class SocialAccountDisconnected(SocialAccountEvent, frozen=True, kw_only=True):
    event_type = "social_account.disconnected"


class SocialAccountNeedsReconnect(SocialAccountEvent, frozen=True, kw_only=True):
    event_type = "social_account.needs_reconnect"
    audit_log = AuditLog.NONE  # found by a refresh or a publish: the event is the record

    reason: str


class SocialAccountRefreshed(SocialAccountEvent, frozen=True, kw_only=True):
    event_type = "social_account.refreshed"
    audit_log = AuditLog.NONE

    credentials_version: int


class SocialAuthorizationStarted(DomainEvent, frozen=True, kw_only=True):
    """A person started connecting an account on an OAuth platform (the tenant's app on the
    instance registered if it had none)."""

    event_type = "social_account.authorization_started"
    aggregate_type = "social_account"
    aggregate_key = "server_url"
    audit_log = AuditLog.TENANT

    platform: str
    server_url: str
    app_registered: bool
