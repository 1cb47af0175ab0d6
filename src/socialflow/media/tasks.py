"""Actors of the media library: process an uploaded file; remove a deleted item's objects."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.audit.record import record_change
from socialflow.media.events import MediaFailed, MediaProcessed
from socialflow.media.models import MediaItem
from socialflow.media.processing import (
    ImageFacts,
    Rejected,
    identify,
    probe_video,
    process_image,
    sha256_of,
)
from socialflow.media.storage import Storage, media_prefix, media_storage
from socialflow.outbox.events import Event
from socialflow.settings import Settings
from socialflow.workers.actors import event_actor, worker_resources

MEDIA_QUEUE = "media"
SAME_BYTES_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
SYSTEM_MEDIA = "system:media"  # the actor of processing's changes
# Declared content type → the formats its bytes may be.
DECLARED_FORMATS = {
    "image/jpeg": {"jpeg"},
    "image/png": {"png"},
    "image/webp": {"webp"},
    "image/gif": {"gif"},
    "image/heic": {"heif"},
    "image/heif": {"heif"},
    "video/mp4": {"mp4"},
    "video/quicktime": {"mov", "mp4"},
    "video/webm": {"webm"},
}


@dataclass
class Outcome:
    sha256: str
    format: str
    image: ImageFacts
    duration_s: float | None = None
    codecs: str | None = None


def _examine(storage: Storage, item: MediaItem, settings: Settings) -> Outcome:
    """Everything processing learns and renders, in a worker thread (bounded memory: the
    object is streamed to a spooled file, images are decoded once, within the pixel limit)."""
    focal = (
        (item.focal_x, item.focal_y)
        if item.focal_x is not None and item.focal_y is not None
        else None
    )
    try:
        opened = storage.open_read(item.storage_key)
    except FileNotFoundError as exc:
        raise Rejected("the uploaded file is gone from the store") from exc
    with opened as fp:
        fp.seek(0, os.SEEK_END)
        if fp.tell() != item.size:  # what was confirmed is what is processed
            raise Rejected(f"the stored file is {fp.tell()} bytes, {item.size} were confirmed")
        sha256 = sha256_of(fp)
        if item.declared_sha256 and item.declared_sha256 != sha256:
            raise Rejected("the bytes do not match the SHA-256 declared at upload")
        found = identify(fp.read(64))
        fp.seek(0)
        if found.format not in DECLARED_FORMATS.get(item.content_type, set()):
            raise Rejected(
                f"the bytes are {found.format.upper()}, not the declared {item.content_type}"
            )
        if found.kind == "image":
            image = process_image(fp, settings.media_max_image_pixels, focal)
            return Outcome(sha256, found.format, image)
        with _as_file(fp) as path:
            video = probe_video(path, settings.media_max_image_pixels)
        poster = io.BytesIO()
        video.poster.save(poster, "PNG")
        image = process_image(poster, settings.media_max_image_pixels, focal)
        return Outcome(sha256, found.format, image, video.duration_s, video.codecs)


@contextlib.contextmanager
def _as_file(fp: IO[bytes]):  # type: ignore[no-untyped-def]
    """A path holding the bytes of `fp` (ffmpeg reads files)."""
    name = getattr(fp, "name", None)
    if isinstance(name, str) and os.path.exists(name):
        yield name
        return
    with tempfile.NamedTemporaryFile(suffix=".media") as tmp:
        fp.seek(0)
        while chunk := fp.read(1024 * 1024):
            tmp.write(chunk)
        tmp.flush()
        yield tmp.name


@event_actor(queue_name=MEDIA_QUEUE, actor_name="process_media")
async def process_media(session: AsyncSession, event: Event) -> None:
    """`media.uploaded` → derivatives stored, the item `ready` with `media.processed`; or
    `failed` with its reason and `media.failed`, its objects removed. Once per event."""
    media_id = uuid.UUID(event.payload["media_id"])
    item = (
        await session.execute(
            select(MediaItem)
            .where(MediaItem.id == media_id, MediaItem.deleted_at.is_(None))
            .with_for_update()
        )
    ).scalar_one_or_none()
    if item is None or item.status != "processing":
        return  # deleted meanwhile, or done already
    settings = worker_resources().settings
    storage = media_storage(settings)
    assert event.tenant_id is not None
    prefix = media_prefix(event.tenant_id, item.id)
    try:
        outcome = await asyncio.to_thread(_examine, storage, item, settings)
    except Rejected as rejected:
        await _fail(session, event=event, item=item, prefix=prefix, reason=str(rejected))
        return
    # Of two items with the same bytes processed at once, the second waits here and then
    # sees the first (the live-sha256 unique index would refuse it only at the end).
    await session.execute(SAME_BYTES_LOCK, {"key": f"media-sha256:{outcome.sha256}"})
    duplicate = (
        await session.execute(
            select(MediaItem.id).where(
                MediaItem.sha256 == outcome.sha256,
                MediaItem.id != item.id,
                MediaItem.deleted_at.is_(None),
                MediaItem.status.in_(("processing", "ready")),
            )
        )
    ).scalar_one_or_none()
    if duplicate is not None:
        reason = f"the same bytes as media item {duplicate}: not stored twice"
        await _fail(
            session,
            event=event,
            item=item,
            prefix=prefix,
            reason=reason,
            duplicate_of=duplicate,
        )
        return
    derivatives: dict[str, dict[str, Any]] = {}
    image = outcome.image
    await asyncio.gather(
        *(storage.put(prefix + r.name, r.body, r.content_type) for r in image.renditions)
    )
    for rendition in image.renditions:
        derivatives[rendition.name.replace(".", "_")] = {
            "key": prefix + rendition.name,
            "format": rendition.format,
            "width": rendition.width,
            "height": rendition.height,
            "size": len(rendition.body),
        }
    item.sha256 = outcome.sha256
    item.detected_format = outcome.format
    item.width, item.height = image.width, image.height
    item.duration_s, item.codecs = outcome.duration_s, outcome.codecs
    item.dominant_color, item.blurhash, item.phash = (
        image.dominant_color,
        image.blurhash,
        image.phash,
    )
    item.derivatives = derivatives
    item.status = "ready"
    item.processed_at = item.updated_at = datetime.now(UTC)
    await session.flush()
    processed = MediaProcessed(
        media_id=item.id,
        kind=item.kind,
        derivatives={name: d["key"] for name, d in derivatives.items()},
    )
    await record_change(session, SYSTEM_MEDIA, processed, tenant=event.tenant)


async def _fail(
    session: AsyncSession,
    *,
    event: Event,
    item: MediaItem,
    prefix: str,
    reason: str,
    duplicate_of: uuid.UUID | None = None,
) -> None:
    """The item `failed` with `reason`; `media.failed` has its objects removed once this
    commits (not before: a failed commit would leave a processing item without its file)."""
    item.status = "failed"
    item.failure_reason = reason
    item.processed_at = item.updated_at = datetime.now(UTC)
    await session.flush()
    failed = MediaFailed(
        media_id=item.id, reason=reason, duplicate_of=duplicate_of, storage_prefix=prefix
    )
    await record_change(session, SYSTEM_MEDIA, failed, tenant=event.tenant)


@event_actor(queue_name=MEDIA_QUEUE, actor_name="remove_media_objects")
async def remove_media_objects(session: AsyncSession, event: Event) -> None:
    """`media.deleted`, `media.failed` → the item's original and derivatives leave storage.
    The prefix is the event's tenant's and item's, whatever the payload says."""
    assert event.tenant_id is not None
    prefix = media_prefix(event.tenant_id, uuid.UUID(event.payload["media_id"]))
    storage = media_storage(worker_resources().settings)
    await storage.delete_prefix(prefix)
