"""Events of posts: their review, schedule, and each destination's delivery."""

from __future__ import annotations

import uuid
from datetime import datetime

from socialflow.outbox.events import AuditLog, DomainEvent


class PostEvent(DomainEvent, frozen=True, kw_only=True):
    """An event of one post (a shared base)."""

    aggregate_type = "post"
    aggregate_key = "post_id"
    audit_log = AuditLog.TENANT

    post_id: uuid.UUID


class PostCreated(PostEvent, frozen=True, kw_only=True):
    event_type = "post.created"

    status: str


class PostUpdated(PostEvent, frozen=True, kw_only=True):
    event_type = "post.updated"  # an edit; an approval it cleared returns the post to review

    fields: list[str]
    status: str
    approval_cleared: bool
    version: int


class PostSubmitted(PostEvent, frozen=True, kw_only=True):
    event_type = "post.submitted"

    status: str  # pending_review, or approved when the tenant reviews nothing


class PostApproved(PostEvent, frozen=True, kw_only=True):
    event_type = "post.approved"

    approved_sha256: str
    self_approved: bool = False


class PostChangesRequested(PostEvent, frozen=True, kw_only=True):
    event_type = "post.changes_requested"

    comment_id: uuid.UUID


class PostCommented(PostEvent, frozen=True, kw_only=True):
    event_type = "post.commented"

    comment_id: uuid.UUID


class PostScheduled(PostEvent, frozen=True, kw_only=True):
    event_type = "post.scheduled"  # its post.publish_due is written with it, deferred

    scheduled_at: datetime
    version: int
    now: bool = False  # "publish now"


class PostPublishDue(PostEvent, frozen=True, kw_only=True):
    """Written deferred to the scheduled time; stale (a no-op) once the post's version moved."""

    event_type = "post.publish_due"
    audit_log = AuditLog.NONE
    internal = True

    version: int


class PostCancelled(PostEvent, frozen=True, kw_only=True):
    event_type = "post.cancelled"

    previous_status: str
    version: int


class DeliveryEvent(PostEvent, frozen=True, kw_only=True):
    """An event of one destination's delivery (system work: the event is the record)."""

    audit_log = AuditLog.NONE

    destination_id: uuid.UUID


class DeliveryDue(DeliveryEvent, frozen=True, kw_only=True):
    event_type = "post.delivery_due"  # a retry of one destination, deferred to its backoff
    internal = True

    attempt: int


class DeliveryCheckDue(DeliveryEvent, frozen=True, kw_only=True):
    """The watchdog of one delivery: written (deferred past the call's bound) when it starts
    sending; a delivery still `sending` then is reconciled with the platform."""

    event_type = "post.delivery_check_due"
    internal = True

    attempt: int


class DestinationPublished(DeliveryEvent, frozen=True, kw_only=True):
    event_type = "post.destination_published"

    platform: str
    platform_post_id: str
    url: str | None


class DestinationFailed(DeliveryEvent, frozen=True, kw_only=True):
    event_type = "post.destination_failed"

    platform: str
    error_kind: str
    error_detail: str


class DestinationUnconfirmed(DeliveryEvent, frozen=True, kw_only=True):
    event_type = "post.destination_unconfirmed"

    platform: str


class DestinationResolved(PostEvent, frozen=True, kw_only=True):
    """A person decided an unconfirmed delivery's outcome (the delivery's own event follows:
    published, failed, or another attempt due)."""

    event_type = "post.destination_resolved"

    destination_id: uuid.UUID
    outcome: str  # published, not_published, send_again
    note: str | None = None


class PostFinished(PostEvent, frozen=True, kw_only=True):
    """A post whose every destination has an outcome (a shared base)."""

    audit_log = AuditLog.NONE

    published: int
    failed: int
    unconfirmed: int


class PostPublished(PostFinished, frozen=True, kw_only=True):
    event_type = "post.published"


class PostPartiallyPublished(PostFinished, frozen=True, kw_only=True):
    event_type = "post.partially_published"


class PostFailed(PostFinished, frozen=True, kw_only=True):
    event_type = "post.failed"


class PostUnconfirmed(PostFinished, frozen=True, kw_only=True):
    event_type = "post.unconfirmed"
