"""What one destination sends: its text and media (bytes read from storage), its account with
credentials opened, built in a step transaction and used after it."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.media.models import MediaItem
from socialflow.media.processing import PROFILES, render_variant
from socialflow.media.storage import Storage
from socialflow.publishing.content import PostContent, idempotency_key
from socialflow.publishing.models import Post, PostDestination
from socialflow.social import credentials as sealing
from socialflow.social.models import SocialAccount
from socialflow.social.platforms.base import Account, OutgoingMedia
from socialflow.vault.service import Vault

# Images go out as their upright, metadata-free derivative (no camera GPS leaves the platform).
IMAGE_DERIVATIVE = "large_jpeg"


@dataclass(frozen=True, slots=True)
class MediaSpec:
    media_id: uuid.UUID
    key: str
    content_type: str
    filename: str
    alt_text: str | None
    sha256: str | None
    render_profile: str | None  # a variant to cut at send time (not rendered yet)
    source_focal: tuple[float, float]


@dataclass(frozen=True, slots=True)
class Send:
    """One delivery attempt's inputs (no session needed to use them)."""

    post_id: uuid.UUID
    destination_id: uuid.UUID
    account_id: uuid.UUID
    credentials_version: int
    account: Account
    idempotency_key: str
    created_at: datetime  # the delivery's first attempt: the same on every attempt
    text: str
    first_comment: str | None
    labels: tuple[str, ...]
    media: tuple[MediaSpec, ...]


def _media_spec(item: MediaItem, profile: str | None) -> MediaSpec:
    derivatives = item.derivatives or {}
    focal = (item.focal_x or 0.5, item.focal_y or 0.5)
    alt = item.caption_alt_text if item.alt_text is None else item.alt_text
    if item.kind == "video":
        key, content_type, render = item.storage_key, item.content_type, None
    elif profile is not None and f"variant_{profile}" in derivatives:
        key, content_type, render = derivatives[f"variant_{profile}"]["key"], "image/jpeg", None
    else:
        key = derivatives.get(IMAGE_DERIVATIVE, {}).get("key", item.storage_key)
        content_type = "image/jpeg" if IMAGE_DERIVATIVE in derivatives else item.content_type
        render = profile if profile in PROFILES and IMAGE_DERIVATIVE in derivatives else None
    return MediaSpec(
        media_id=item.id,
        key=str(key),
        content_type=content_type,
        filename=item.filename,
        alt_text=alt,
        sha256=item.sha256,
        render_profile=render,
        source_focal=focal,
    )


async def build_send(
    session: AsyncSession,
    vault: Vault,
    tenant_id: uuid.UUID,
    content: PostContent,
    destination: PostDestination,
) -> Send:
    post: Post = content.post
    account = await session.get(SocialAccount, destination.account_id)
    if account is None:
        raise LookupError(f"account {destination.account_id} is gone")
    opened = await sealing.open_sealed(session, vault, tenant_id, account.id, account.credentials)
    media_ids = [m.media_id for m in content.media_of(destination)]
    items = {
        i.id: i for i in await session.scalars(select(MediaItem).where(MediaItem.id.in_(media_ids)))
    }
    key = destination.idempotency_key or idempotency_key(
        post.id, destination.id, post.approved_sha256 or ""
    )
    return Send(
        post_id=post.id,
        destination_id=destination.id,
        account_id=account.id,
        credentials_version=account.credentials_version,
        account=Account(
            platform=account.platform,
            server_url=account.server_url,
            account_ref=account.account_ref,
            handle=account.handle,
            credentials=opened,
        ),
        idempotency_key=key,
        created_at=destination.first_attempt_at or datetime.now(UTC),
        text=post.text if destination.override_text is None else destination.override_text,
        first_comment=post.first_comment,
        labels=tuple(post.labels),
        media=tuple(_media_spec(items[m], destination.variant_profile) for m in media_ids),
    )


async def read_media(storage: Storage, spec: MediaSpec, url_ttl_s: int) -> OutgoingMedia:
    def read() -> bytes:
        with storage.open_read(spec.key) as fp:
            if spec.render_profile is not None:
                body, _w, _h = render_variant(fp, PROFILES[spec.render_profile], spec.source_focal)
                return body
            data: bytes = fp.read()
            return data

    data = await asyncio.to_thread(read)
    return OutgoingMedia(
        data=data,
        content_type=spec.content_type,
        filename=spec.filename,
        alt_text=spec.alt_text,
        sha256=spec.sha256,
        url=storage.download_url(spec.key, expires_s=url_ttl_s),
    )
