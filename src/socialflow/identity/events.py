"""Events of the identity feature: external identities linked to accounts."""

from __future__ import annotations

import uuid

from socialflow.outbox.events import AuditLog, DomainEvent


class UserIdentityLinked(DomainEvent, frozen=True, kw_only=True):
    """An OIDC identity (issuer, subject) now signs in as this account: linked by its signed-in
    owner, or automatically at its first sign-in (a new account, or an allowed email domain)."""

    event_type = "user.identity_linked"
    aggregate_type = "user"
    aggregate_key = "user_id"
    audit_log = AuditLog.PLATFORM

    user_id: uuid.UUID
    issuer: str
    subject: str
    automatic: bool
