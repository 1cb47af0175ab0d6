"""Use cases of captions: ask for a new one, edit one by hand. Each change is one event (and
its audit entry) in the caller's transaction; the caption actor does the provider's part."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.permissions import Permission, allows
from socialflow.access.tenant_access import TenantAccess
from socialflow.ai.pricing import unusable_model
from socialflow.audit.record import record_change
from socialflow.captions.bodies import CaptionPatch, CaptionRequest
from socialflow.captions.events import CaptionEdited, CaptionRequested
from socialflow.captions.prompt import clean
from socialflow.lib.problems import Problem
from socialflow.media.bodies import CaptionOut
from socialflow.media.models import MediaItem
from socialflow.media.services import caption_out, locked_item

# CaptionPatch's fields → the item's columns
_EDITABLE = {
    "caption": "caption",
    "alt_text": "caption_alt_text",
    "description": "description",
    "hashtags": "hashtags",
}


async def _ready_item(session: AsyncSession, media_id: uuid.UUID) -> MediaItem:
    item = await locked_item(session, media_id)
    if item.status != "ready":
        raise Problem(
            409,
            "media-not-ready",
            f"The item is {item.status}: only processed (ready) items have captions.",
        )
    return item


async def request_caption(
    session: AsyncSession, access: TenantAccess, media_id: uuid.UUID, data: CaptionRequest
) -> CaptionOut:
    """A new caption for the item, made by the caption actor (`media.caption_requested`); the
    item's caption is `pending` until it lands, replacing the current one, edited or not."""
    if data.model is not None:
        assert access.role is not None
        if not allows(access.role, Permission.AI_KEYS_MANAGE):
            # The model is the admins' choice (it sets what a caption costs).
            raise Problem(403, "forbidden", "Only admins choose another caption model.")
        why = unusable_model(data.model, "chat", vision=True)
        if why is not None:
            raise Problem(422, "validation-error", why, errors=[{"field": "model", "message": why}])
    item = await _ready_item(session, media_id)
    item.caption_state = "pending"
    item.caption_reason = None
    item.updated_at = datetime.now(UTC)
    await session.flush()
    requested = CaptionRequested(
        media_id=item.id, prompt=(data.prompt or "").strip() or None, model=data.model
    )
    await record_change(session, access.principal, requested, tenant=access.tenant.slug)
    out = caption_out(item)
    assert out is not None
    return out


async def edit_caption(
    session: AsyncSession, access: TenantAccess, media_id: uuid.UUID, data: CaptionPatch
) -> CaptionOut:
    """The editor's fields replace the caption's: its state is `edited`, which no caption
    generated later (one already asked for) overwrites; `media.caption_edited` re-embeds it."""
    item = await _ready_item(session, media_id)
    changes: dict[str, Any] = {}
    for field, column in _EDITABLE.items():
        value = getattr(data, field)
        if value is msgspec.UNSET:
            continue
        if isinstance(value, str):
            value = clean(value, len(value)) or None
        elif isinstance(value, list):
            value = list(dict.fromkeys(value))  # no duplicates, order kept
        if getattr(item, column) != value:
            changes[field] = value
    if changes:
        for field, value in changes.items():
            setattr(item, _EDITABLE[field], value)
        item.caption_state = "edited"
        item.caption_reason = None
        item.updated_at = datetime.now(UTC)
        await session.flush()
        edited = CaptionEdited(media_id=item.id, fields=sorted(changes))
        await record_change(session, access.principal, edited, tenant=access.tenant.slug)
    return caption_out(item) or CaptionOut(state="pending")
