"""What an approval binds to: a post's content, read from its rows, and its SHA-256.

The digest covers the texts, the media by the SHA-256 of their bytes and the alt text they go
out with (in order), the variant
profiles, the destinations and the schedule, in a canonical JSON form. The reviewer approves
this digest; any edit changes it, and the publisher sends nothing whose digest differs.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.media.models import MediaItem
from socialflow.publishing.models import Post, PostDestination, PostMedia

HASH_VERSION = 1


@dataclass(frozen=True, slots=True)
class MediaRef:
    media_id: uuid.UUID
    sha256: str | None
    ready: bool  # processed, not deleted
    alt_text: str | None  # what goes out with it (its own, else the AI caption's)


@dataclass(frozen=True, slots=True)
class PostContent:
    post: Post
    media: list[MediaRef]
    destinations: list[PostDestination]
    media_by_id: dict[uuid.UUID, MediaRef]

    def media_of(self, destination: PostDestination) -> list[MediaRef]:
        if destination.override_media is None:
            return self.media
        return [self.media_by_id[m] for m in destination.override_media]

    def unready_media(self) -> list[uuid.UUID]:
        return sorted({m.media_id for m in self.media_by_id.values() if not m.ready}, key=str)


async def content_of(session: AsyncSession, post: Post) -> PostContent:
    """The post's media and destinations, as stored (destinations in their order)."""
    positions = await session.scalars(
        select(PostMedia.media_id).where(PostMedia.post_id == post.id).order_by(PostMedia.position)
    )
    media_ids = list(positions)
    destinations = list(
        await session.scalars(
            select(PostDestination)
            .where(PostDestination.post_id == post.id)
            .order_by(PostDestination.position)
        )
    )
    wanted = set(media_ids)
    for destination in destinations:
        wanted.update(destination.override_media or ())
    refs = await media_refs(session, wanted)
    return PostContent(post, [refs[m] for m in media_ids], destinations, refs)


async def media_refs(
    session: AsyncSession, media_ids: Sequence[uuid.UUID] | set[uuid.UUID]
) -> dict[uuid.UUID, MediaRef]:
    if not media_ids:
        return {}
    rows = await session.execute(
        select(
            MediaItem.id,
            MediaItem.sha256,
            MediaItem.status,
            MediaItem.deleted_at,
            func.coalesce(MediaItem.alt_text, MediaItem.caption_alt_text).label("alt_text"),
        ).where(MediaItem.id.in_(list(media_ids)))
    )
    found = {
        row.id: MediaRef(
            row.id, row.sha256, row.status == "ready" and row.deleted_at is None, row.alt_text
        )
        for row in rows
    }
    return {m: found.get(m, MediaRef(m, None, False, None)) for m in media_ids}


def approval_hash(content: PostContent) -> str:
    """The SHA-256 (hex) of exactly what would be published."""
    post = content.post
    canonical = {
        "v": HASH_VERSION,
        "text": post.text,
        "first_comment": post.first_comment,
        "labels": list(post.labels),
        "media": [[m.sha256, m.alt_text] for m in content.media],
        "destinations": [
            {
                "account_id": str(d.account_id),
                "text": d.override_text,
                "media": None
                if d.override_media is None
                else [
                    [content.media_by_id[m].sha256, content.media_by_id[m].alt_text]
                    for m in d.override_media
                ],
                "variant_profile": d.variant_profile,
            }
            for d in content.destinations
        ],
        "scheduled_at": None
        if post.scheduled_at is None
        else post.scheduled_at.astimezone(UTC).isoformat(),
    }
    encoded = msgspec.json.encode(canonical, order="sorted")
    return hashlib.sha256(encoded).hexdigest()


def idempotency_key(post_id: uuid.UUID, destination_id: uuid.UUID, approved_sha256: str) -> str:
    """The key a destination's delivery carries on every attempt: the same post, destination
    and approved content always give the same key; an edited, re-approved post a new one."""
    digest = hashlib.sha256(f"{post_id}:{destination_id}:{approved_sha256}".encode()).hexdigest()
    return f"sf-{digest[:40]}"


def utc_now() -> datetime:
    return datetime.now(UTC)
