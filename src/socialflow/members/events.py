"""Events of the members feature: invitations, memberships and tenant API keys."""

from __future__ import annotations

import uuid

from socialflow.outbox.events import AuditLog, DomainEvent


class MemberInvited(DomainEvent, frozen=True, kw_only=True):
    """An invitation to mail (the email job mints its token); a new one replaces a pending one."""

    event_type = "member.invited"
    aggregate_type = "invitation"
    aggregate_key = "invitation_id"
    audit_log = AuditLog.TENANT

    invitation_id: uuid.UUID
    email: str
    role: str


class MemberJoined(DomainEvent, frozen=True, kw_only=True):
    event_type = "member.joined"
    aggregate_type = "member"
    aggregate_key = "user_id"
    audit_log = AuditLog.TENANT

    user_id: uuid.UUID
    role: str


class MemberRoleChanged(DomainEvent, frozen=True, kw_only=True):
    event_type = "member.role_changed"
    aggregate_type = "member"
    aggregate_key = "user_id"
    audit_log = AuditLog.TENANT

    user_id: uuid.UUID
    before: str
    after: str


class MemberRemoved(DomainEvent, frozen=True, kw_only=True):
    event_type = "member.removed"
    aggregate_type = "member"
    aggregate_key = "user_id"
    audit_log = AuditLog.TENANT
    removes = True

    user_id: uuid.UUID
    role: str
    left: bool  # the member removed themselves


class ApiKeyCreated(DomainEvent, frozen=True, kw_only=True):
    event_type = "api_key.created"
    aggregate_type = "api_key"
    aggregate_key = "id"
    audit_log = AuditLog.TENANT

    id: uuid.UUID
    name: str
    prefix: str
    role: str


class ApiKeyRevoked(DomainEvent, frozen=True, kw_only=True):
    event_type = "api_key.revoked"
    aggregate_type = "api_key"
    aggregate_key = "id"
    audit_log = AuditLog.TENANT
    removes = True

    id: uuid.UUID
    name: str
    role: str


class MemberReviewerChanged(DomainEvent, frozen=True, kw_only=True):
    event_type = "member.reviewer_changed"  # may (or may no longer) approve posts
    aggregate_type = "member"
    aggregate_key = "user_id"
    audit_log = AuditLog.TENANT

    user_id: uuid.UUID
    reviewer: bool
