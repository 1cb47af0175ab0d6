"""Media use cases: upload, confirm, read, edit, delete. Never commits."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Select, delete, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.directory import tenant_by_id
from socialflow.access.permissions import Permission, allows
from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.db.tenant_schema import quote_schema
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.media.bodies import (
    CaptionOut,
    FocalPoint,
    MediaOut,
    MediaPatch,
    MediaUsageOut,
    UploadCreate,
    UploadInstructions,
    UploadOut,
    UsageFigure,
    VariantOut,
    derivative_list,
)
from socialflow.media.events import (
    MediaDeleted,
    MediaUpdated,
    MediaUploaded,
    MediaUploadStarted,
    MediaVariantRendered,
)
from socialflow.media.models import MediaEmbedding, MediaItem
from socialflow.media.processing import PROFILES, render_variant
from socialflow.media.storage import Storage, media_prefix
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from socialflow.settings import Settings

# What may be uploaded, by declared type; processing then checks the bytes themselves.
KINDS_BY_TYPE = {
    "image/jpeg": "image",
    "image/png": "image",
    "image/webp": "image",
    "image/gif": "image",
    "image/heic": "image",
    "image/heif": "image",
    "video/mp4": "video",
    "video/quicktime": "video",
    "video/webm": "video",
}
ORIGINAL = "original"


def _max_size(settings: Settings, kind: str) -> int:
    return settings.media_max_image_bytes if kind == "image" else settings.media_max_video_bytes


def _not_found(media_id: uuid.UUID) -> Problem:
    return Problem(404, "not-found", f"No media item {media_id}.")


async def _live_duplicate(session: AsyncSession, sha256: str) -> MediaItem | None:
    found = await session.execute(
        select(MediaItem).where(
            MediaItem.sha256 == sha256,
            MediaItem.deleted_at.is_(None),
            MediaItem.status.in_(("processing", "ready")),
        )
    )
    return found.scalars().first()


async def create_upload(
    session: AsyncSession,
    settings: Settings,
    storage: Storage,
    access: TenantAccess,
    data: UploadCreate,
) -> tuple[UploadOut, int]:
    """A pending item and where to send its bytes (201); or, when the tenant has these bytes
    already (the declared SHA-256 of a live item), that item (200, `duplicate_of`)."""
    kind = KINDS_BY_TYPE.get(data.content_type.lower())
    if kind is None:
        raise Problem(
            415,
            "unsupported-media-type",
            f"{data.content_type!r} is not accepted; send one of {', '.join(KINDS_BY_TYPE)}.",
        )
    limit = _max_size(settings, kind)
    if data.size > limit:
        raise Problem(
            413, "media-too-large", f"A {kind} may be {limit} bytes at most.", limit=limit
        )
    if data.sha256 is not None:
        existing = await _live_duplicate(session, data.sha256)
        if existing is not None:
            found = str(existing.id)
            return UploadOut(media_id=found, status=existing.status, duplicate_of=found), 200
    # Taken now, not at confirm: the bytes reach the store before confirm, so an upload never
    # confirmed must count too (until it expires), or storage could be filled for nothing.
    await quota.reserve(session, access.tenant, Resource.STORAGE_BYTES, data.size)
    await quota.reserve(session, access.tenant, Resource.MEDIA_ITEMS, 1)
    media_id = uuid.uuid4()
    key = media_prefix(access.tenant.id, media_id) + ORIGINAL
    session.add(
        MediaItem(
            id=media_id,
            kind=kind,
            status="pending_upload",
            filename=data.filename,
            content_type=data.content_type.lower(),
            size=data.size,
            declared_sha256=data.sha256,
            storage_key=key,
            title=data.title,
            alt_text=data.alt_text,
            tags=data.tags,
            uploaded_by=access.principal.actor,
        )
    )
    await session.flush()
    started = MediaUploadStarted(
        media_id=media_id, filename=data.filename, content_type=data.content_type, size=data.size
    )
    await record_change(session, access.principal, started, tenant=access.tenant.slug)
    ttl = settings.media_upload_url_ttl_s
    target = storage.upload_target(
        key, size=data.size, content_type=data.content_type.lower(), expires_s=ttl
    )
    return (
        UploadOut(
            media_id=str(media_id),
            status="pending_upload",
            upload=UploadInstructions(target.url, target.method, target.headers),
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
        ),
        201,
    )


async def locked_item(session: AsyncSession, media_id: uuid.UUID) -> MediaItem:
    """The live item, locked for this transaction's change; 404 when there is none."""
    item = (
        await session.execute(
            select(MediaItem)
            .where(MediaItem.id == media_id, MediaItem.deleted_at.is_(None))
            .with_for_update()
        )
    ).scalar_one_or_none()
    if item is None:
        raise _not_found(media_id)
    return item


async def confirm_upload(
    session: AsyncSession,
    settings: Settings,
    storage: Storage,
    access: TenantAccess,
    media_id: uuid.UUID,
) -> MediaOut:
    """The bytes are in storage: check them and start processing (`media.uploaded`), in one
    transaction."""
    item = await locked_item(session, media_id)
    if item.status != "pending_upload":
        raise Problem(409, "invalid-state", f"This item is {item.status}: confirmed already.")
    stored = await storage.size_of(item.storage_key)
    if stored is None:
        raise Problem(409, "not-uploaded", "Nothing was uploaded for this item yet.")
    if stored != item.size:
        await storage.delete_prefix(media_prefix(access.tenant.id, item.id))
        raise Problem(
            422,
            "size-mismatch",
            f"{stored} bytes were uploaded, {item.size} were announced; upload again.",
        )
    if stored > _max_size(settings, item.kind):
        raise Problem(413, "media-too-large", "The uploaded file is over the size limit.")
    item.status = "processing"  # its storage and item were taken when the upload started
    item.confirmed_at = item.updated_at = datetime.now(UTC)
    await session.flush()
    uploaded = MediaUploaded(
        media_id=item.id, kind=item.kind, size=item.size, storage_key=item.storage_key
    )
    await record_change(session, access.principal, uploaded, tenant=access.tenant.slug)
    return media_out(item)


def media_out(item: MediaItem, storage: Storage | None = None, ttl_s: int = 0) -> MediaOut:
    """An item as shown; with `storage`, short-lived download URLs of its files."""
    derivatives = derivative_list(item.derivatives or {})
    original_url = None
    if storage is not None and item.status == "ready":
        for derivative in derivatives:
            key = item.derivatives[derivative.name]["key"]
            derivative.url = storage.download_url(key, expires_s=ttl_s)
        original_url = storage.download_url(item.storage_key, expires_s=ttl_s)
    focal = (
        FocalPoint(item.focal_x, item.focal_y)
        if item.focal_x is not None and item.focal_y is not None
        else None
    )
    return MediaOut(
        id=str(item.id),
        kind=item.kind,
        status=item.status,
        filename=item.filename,
        content_type=item.content_type,
        size=item.size,
        created_at=item.created_at,
        updated_at=item.updated_at,
        uploaded_by=item.uploaded_by,
        sha256=item.sha256,
        detected_format=item.detected_format,
        width=item.width,
        height=item.height,
        duration_s=item.duration_s,
        codecs=item.codecs,
        dominant_color=item.dominant_color,
        blurhash=item.blurhash,
        title=item.title,
        alt_text=item.alt_text,
        tags=list(item.tags or []),
        focal_point=focal,
        failure_reason=item.failure_reason,
        derivatives=derivatives,
        original_url=original_url,
        caption=caption_out(item),
        embedding_state=item.embedding_state,
    )


def caption_out(item: MediaItem) -> CaptionOut | None:
    if item.caption_state is None:
        return None
    return CaptionOut(
        state=item.caption_state,
        caption=item.caption,
        alt_text=item.caption_alt_text,
        description=item.description,
        hashtags=list(item.hashtags or []),
        language=item.caption_language,
        model=item.caption_model,
        prompt_version=item.caption_prompt_version,
        reason=item.caption_reason,
        generated_at=item.captioned_at,
    )


async def get_media(
    session: AsyncSession, settings: Settings, storage: Storage, media_id: uuid.UUID
) -> MediaOut:
    item = (
        await session.execute(
            select(MediaItem).where(MediaItem.id == media_id, MediaItem.deleted_at.is_(None))
        )
    ).scalar_one_or_none()
    if item is None:
        raise _not_found(media_id)
    shown = media_out(item, storage, settings.media_download_url_ttl_s)
    if item.phash is not None:
        params = {
            "id": item.id,
            "phash": item.phash,
            "distance": settings.media_similar_max_distance,
        }
        shown.similar = [str(row) for row in await session.scalars(SIMILAR_SQL, params)]
    return shown


# Other live items whose 64-bit perceptual hashes differ from this one's in few bits, nearest
# first (hex hashes read as bit strings; the tenant's schema through the search_path).
SIMILAR_SQL = text("""
SELECT id FROM (
    SELECT id, bit_count(('x' || phash)::bit(64) # ('x' || :phash)::bit(64)) AS distance
    FROM media_items
    WHERE phash IS NOT NULL AND id <> :id AND status = 'ready' AND deleted_at IS NULL
) near WHERE distance <= :distance ORDER BY distance, id LIMIT 20
""")


async def media_usage(session: AsyncSession, access: TenantAccess) -> MediaUsageOut:
    """The tenant's media against its plan: bytes and items, and counts by status and kind."""
    figures = {}
    for resource in (Resource.STORAGE_BYTES, Resource.MEDIA_ITEMS):
        held = await quota.quota_of(session, access.tenant, resource)
        figures[resource.value] = UsageFigure(
            limit=None if held.limit is None else int(held.limit),
            used=int(held.used),
            remaining=None if held.remaining is None else int(held.remaining),
        )
    counts = (
        await session.execute(
            select(MediaItem.status, MediaItem.kind, func.count())
            .where(MediaItem.deleted_at.is_(None))
            .group_by(MediaItem.status, MediaItem.kind)
        )
    ).all()
    by_status: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for status, kind, count in counts:
        by_status[status] = by_status.get(status, 0) + count
        by_kind[kind] = by_kind.get(kind, 0) + count
    return MediaUsageOut(
        storage_bytes=figures["storage_bytes"],
        media_items=figures["media_items"],
        by_status=by_status,
        by_kind=by_kind,
    )


async def list_media(
    session: AsyncSession,
    page: PageRequest,
    *,
    filters: dict[str, Any],
) -> list[MediaOut]:
    """Newest first (then id); one more than the page."""
    query: Select[MediaItem] = (
        select(MediaItem)
        .where(MediaItem.deleted_at.is_(None))
        .order_by(MediaItem.created_at.desc(), MediaItem.id.desc())
        .limit(page.limit + 1)
    )
    if page.after:
        query = query.where(tuple_(MediaItem.created_at, MediaItem.id) < page.after)
    if filters.get("kind"):
        query = query.where(MediaItem.kind == filters["kind"])
    if filters.get("status"):
        query = query.where(MediaItem.status == filters["status"])
    if filters.get("uploaded_by"):
        query = query.where(MediaItem.uploaded_by == filters["uploaded_by"])
    if filters.get("tag"):
        query = query.where(MediaItem.tags.any(filters["tag"]))
    if filters.get("created_from"):
        query = query.where(MediaItem.created_at >= filters["created_from"])
    if filters.get("created_to"):
        query = query.where(MediaItem.created_at < filters["created_to"])
    return [media_out(item) for item in (await session.scalars(query))]


async def update_media(
    session: AsyncSession, access: TenantAccess, media_id: uuid.UUID, data: MediaPatch
) -> MediaOut:
    item = await locked_item(session, media_id)
    wanted: dict[str, Any] = {}
    for field in ("title", "alt_text", "tags"):
        value = getattr(data, field)
        if value is not msgspec.UNSET:
            wanted[field] = value
    if data.focal_point is not msgspec.UNSET:
        point = data.focal_point
        wanted["focal_x"] = point.x if point is not None else None
        wanted["focal_y"] = point.y if point is not None else None
    changes = {k: v for k, v in wanted.items() if getattr(item, k) != v}
    if changes:
        before = {k: getattr(item, k) for k in changes}
        for column, value in changes.items():
            setattr(item, column, value)
        item.updated_at = datetime.now(UTC)
        await session.flush()
        updated = MediaUpdated(media_id=item.id, before=before, after=changes)
        await record_change(session, access.principal, updated, tenant=access.tenant.slug)
    return media_out(item)


async def delete_media(session: AsyncSession, access: TenantAccess, media_id: uuid.UUID) -> None:
    """Hidden at once (soft delete); `media.deleted` has an actor remove its objects. Editors
    delete what they uploaded; deleting others' media takes `content:manage` (admins)."""
    item = await locked_item(session, media_id)
    assert access.role is not None
    own = item.uploaded_by == access.principal.actor
    if not own and not allows(access.role, Permission.CONTENT_MANAGE):
        raise Problem(403, "forbidden", "Only admins delete media others uploaded.")
    item.deleted_at = item.updated_at = datetime.now(UTC)
    # Its vector goes with it: searches never rank what they cannot show.
    await session.execute(delete(MediaEmbedding).where(MediaEmbedding.media_id == item.id))
    await session.flush()
    deleted = MediaDeleted(
        media_id=item.id,
        storage_prefix=media_prefix(access.tenant.id, item.id),
        filename=item.filename,
    )
    await record_change(session, access.principal, deleted, tenant=access.tenant.slug)


async def accepts_upload(session: AsyncSession, tenant_id: uuid.UUID, media_id: uuid.UUID) -> bool:
    """Whether the item is still waiting for its bytes (the local store's uploads ask: a
    signed URL of an item deleted, expired or confirmed meanwhile writes nothing)."""
    tenant = await tenant_by_id(session, tenant_id)
    if tenant is None or tenant.status not in ("active", "suspended"):
        return False
    waiting = await session.execute(
        text(
            f"SELECT 1 FROM {quote_schema(tenant.schema_name)}.media_items "  # noqa: S608 - quoted
            "WHERE id = :id AND status = 'pending_upload' AND deleted_at IS NULL"
        ),
        {"id": media_id},
    )
    return waiting.first() is not None


SYSTEM_EXPIRY = "system:media-expiry"


async def expire_pending_uploads(
    session: AsyncSession, settings: Settings, tenant_slug: str, *, now: datetime | None = None
) -> int:
    """Uploads never confirmed within MEDIA_PENDING_EXPIRY_HOURS: deleted (their quota freed),
    and `media.deleted` has their objects removed. The session is in the tenant's schema."""
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=settings.media_pending_expiry_hours)
    expired = (
        await session.scalars(
            select(MediaItem)
            .where(
                MediaItem.status == "pending_upload",
                MediaItem.deleted_at.is_(None),
                MediaItem.created_at < cutoff,
            )
            .with_for_update(skip_locked=True)
        )
    ).all()
    for item in expired:
        item.deleted_at = item.updated_at = datetime.now(UTC)
        await session.flush()
        tenant_id = uuid.UUID(item.storage_key.split("/")[1])
        deleted = MediaDeleted(
            media_id=item.id,
            storage_prefix=media_prefix(tenant_id, item.id),
            filename=item.filename,
        )
        await record_change(session, SYSTEM_EXPIRY, deleted, tenant=tenant_slug)
    return len(expired)


async def variant(
    session: AsyncSession,
    *,
    settings: Settings,
    storage: Storage,
    access: TenantAccess,
    media_id: uuid.UUID,
    profile: str,
) -> VariantOut:
    """The item cut for a platform's profile around its focal point (centre by default),
    rendered on first use and kept; a new focal point renders it again."""
    size = PROFILES.get(profile)
    if size is None:
        raise Problem(404, "not-found", f"No profile {profile!r}; one of {', '.join(PROFILES)}.")
    item = await locked_item(session, media_id)
    if item.status != "ready":
        raise Problem(409, "invalid-state", f"This item is {item.status}: not ready yet.")
    focal = (
        (item.focal_x, item.focal_y)
        if item.focal_x is not None and item.focal_y is not None
        else (0.5, 0.5)
    )
    name = f"variant_{profile}"
    kept = (item.derivatives or {}).get(name)
    if kept is None or tuple(kept.get("focal", ())) != focal:
        source_key = item.derivatives["large_jpeg"]["key"]

        def render() -> tuple[bytes, int, int]:
            with storage.open_read(source_key) as fp:
                return render_variant(fp, size, focal)

        body, width, height = await asyncio.to_thread(render)
        key = media_prefix(access.tenant.id, item.id) + f"{profile}.jpg"
        await storage.put(key, body, "image/jpeg")
        kept = {
            "key": key,
            "format": "jpeg",
            "width": width,
            "height": height,
            "size": len(body),
            "focal": list(focal),
        }
        item.derivatives = {**(item.derivatives or {}), name: kept}
        await session.flush()
        rendered = MediaVariantRendered(media_id=item.id, profile=profile, storage_key=key)
        await record_change(session, access.principal, rendered, tenant=access.tenant.slug)
    return VariantOut(
        profile=profile,
        width=kept["width"],
        height=kept["height"],
        url=storage.download_url(kept["key"], expires_s=settings.media_download_url_ttl_s),
        focal_point=FocalPoint(*focal),
    )
