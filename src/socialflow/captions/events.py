"""Events of captioning and embedding media items."""

from __future__ import annotations

from socialflow.media.events import MediaEvent
from socialflow.outbox.events import AuditLog


class CaptionRequested(MediaEvent, frozen=True, kw_only=True):
    """Someone asked for a new caption (regenerate), optionally with their own instructions or
    another model; the caption actor answers it as it answers `media.processed`."""

    event_type = "media.caption_requested"

    prompt: str | None = None
    model: str | None = None


class MediaCaptioned(MediaEvent, frozen=True, kw_only=True):
    """A caption landed on the item (or the item's caption state says why none did)."""

    event_type = "media.captioned"
    audit_log = AuditLog.NONE  # system work: the event is the record

    state: str  # generated, not_configured, budget_exceeded, key_invalid, refused, failed
    model: str | None = None
    prompt_version: str | None = None
    language: str | None = None
    reason: str | None = None


class CaptionEdited(MediaEvent, frozen=True, kw_only=True):
    """An editor changed the caption by hand: its state is `edited`."""

    event_type = "media.caption_edited"

    fields: list[str]


class MediaEmbedded(MediaEvent, frozen=True, kw_only=True):
    """The item's text has a vector of the tenant's embedding model (or a state saying why
    not)."""

    event_type = "media.embedded"
    audit_log = AuditLog.NONE

    state: str
    model: str | None = None
    reason: str | None = None
    generation: int = 0
