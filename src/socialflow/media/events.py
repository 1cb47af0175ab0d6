"""Events of the media library."""

from __future__ import annotations

import uuid
from typing import Any

from socialflow.outbox.events import AuditLog, DomainEvent, FieldsChanged


class MediaEvent(DomainEvent, frozen=True, kw_only=True):
    """An event of one media item (a shared base)."""

    aggregate_type = "media"
    aggregate_key = "media_id"
    audit_log = AuditLog.TENANT

    media_id: uuid.UUID


class MediaUploadStarted(MediaEvent, frozen=True, kw_only=True):
    event_type = "media.upload_started"  # an upload URL was handed out

    filename: str
    content_type: str
    size: int


class MediaUploaded(MediaEvent, frozen=True, kw_only=True):
    event_type = "media.uploaded"  # confirmed: the bytes are in storage, processing starts

    kind: str
    size: int
    storage_key: str


class MediaProcessed(MediaEvent, frozen=True, kw_only=True):
    event_type = "media.processed"
    audit_log = AuditLog.NONE  # system work: the event is the record

    kind: str
    derivatives: dict[str, str]  # name → storage key


class MediaFailed(MediaEvent, frozen=True, kw_only=True):
    event_type = "media.failed"
    audit_log = AuditLog.NONE

    reason: str
    storage_prefix: str
    duplicate_of: uuid.UUID | None = None


class MediaVariantRendered(MediaEvent, frozen=True, kw_only=True):
    event_type = "media.variant_rendered"  # a platform's cut, on first use
    audit_log = AuditLog.NONE

    profile: str
    storage_key: str


class MediaUpdated(FieldsChanged, frozen=True, kw_only=True):
    event_type = "media.updated"  # title, alt text, tags, focal point
    aggregate_type = "media"
    aggregate_key = "media_id"
    audit_log = AuditLog.TENANT

    media_id: uuid.UUID


class MediaDeleted(MediaEvent, frozen=True, kw_only=True):
    event_type = "media.deleted"  # hidden at once; an actor removes its objects
    removes = True

    storage_prefix: str
    filename: str

    def audit_change(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return {"filename": self.filename}, None
