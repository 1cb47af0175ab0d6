"""Post use cases: write, review, approve, schedule, cancel. Never commits.

Every transition locks the post's row, checks the state it starts from (a 409 naming the
current state otherwise), and records its event and audit entry in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import Select, delete, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem, invalid
from socialflow.media.processing import PROFILES
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from socialflow.publishing import deliveries
from socialflow.publishing.bodies import (
    ApprovalIn,
    CommentOut,
    DeliveryOut,
    DeliveryResolution,
    DestinationIn,
    PostCreate,
    PostOut,
    PostPatch,
    PostSummary,
    ReviewComment,
)
from socialflow.publishing.content import PostContent, approval_hash, content_of, media_refs
from socialflow.publishing.events import (
    DestinationResolved,
    PostApproved,
    PostCancelled,
    PostChangesRequested,
    PostCommented,
    PostCreated,
    PostPublishDue,
    PostScheduled,
    PostSubmitted,
    PostUpdated,
)
from socialflow.publishing.models import Post, PostComment, PostDestination, PostMedia
from socialflow.social.models import SocialAccount, shown_handle
from socialflow.social.platforms.base import Receipt
from socialflow.tenancy.tenant_settings import read_settings

MAX_AHEAD = timedelta(days=730)
# What may happen from where (anything else is a 409 naming the current state).
EDITABLE = frozenset({"draft", "pending_review", "changes_requested", "approved", "scheduled"})
SUBMITTABLE = frozenset({"draft", "changes_requested"})
CANCELLABLE = frozenset({"draft", "pending_review", "changes_requested", "approved", "scheduled"})
# An edit of these returns the post to review: what was approved is no longer what it is.
APPROVED = frozenset({"approved", "scheduled"})


def _not_found(post_id: uuid.UUID) -> Problem:
    return Problem(404, "not-found", f"No post {post_id}.")


def _wrong_state(post: Post, action: str) -> Problem:
    return Problem(
        409,
        "invalid-post-state",
        f"Cannot {action} a post that is {post.status}.",
        status_now=post.status,
    )


async def locked_post(session: AsyncSession, post_id: uuid.UUID) -> Post:
    post = (
        await session.scalars(select(Post).where(Post.id == post_id).with_for_update())
    ).one_or_none()
    if post is None:
        raise _not_found(post_id)
    return post


# -- reading --------------------------------------------------------------------------------


async def _accounts(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, SocialAccount]:
    if not ids:
        return {}
    found = await session.scalars(select(SocialAccount).where(SocialAccount.id.in_(list(ids))))
    return {a.id: a for a in found}


async def post_out(session: AsyncSession, post: Post, zone: ZoneInfo | None = None) -> PostOut:
    content = await content_of(session, post)
    accounts = await _accounts(session, [d.account_id for d in content.destinations])
    if zone is None:
        zone = ZoneInfo((await read_settings(session)).timezone)
    return PostOut(
        id=str(post.id),
        status=post.status,
        version=post.version,
        text=post.text,
        media_ids=[str(m.media_id) for m in content.media],
        destinations=[_delivery_out(d, accounts[d.account_id]) for d in content.destinations],
        first_comment=post.first_comment,
        labels=list(post.labels),
        scheduled_at=post.scheduled_at,
        scheduled_local=None
        if post.scheduled_at is None
        else post.scheduled_at.astimezone(zone).isoformat(),
        content_sha256=approval_hash(content),
        approved_sha256=post.approved_sha256,
        approved_by=post.approved_by,
        approved_at=post.approved_at,
        submitted_by=post.submitted_by,
        created_by=post.created_by,
        created_at=post.created_at,
        updated_at=post.updated_at,
        finished_at=post.finished_at,
    )


def _delivery_out(d: PostDestination, account: SocialAccount) -> DeliveryOut:
    return DeliveryOut(
        id=str(d.id),
        account_id=str(d.account_id),
        platform=account.platform,
        handle=shown_handle(account.handle, account.server_url),
        text=d.override_text,
        media_ids=None if d.override_media is None else [str(m) for m in d.override_media],
        variant_profile=d.variant_profile,
        state=d.state,
        attempts=d.attempts,
        platform_post_id=d.platform_post_id,
        url=d.url,
        error_kind=d.error_kind,
        error_detail=d.error_detail,
        published_at=d.published_at,
        next_attempt_at=d.next_attempt_at,
    )


async def get_post(session: AsyncSession, post_id: uuid.UUID) -> PostOut:
    post = await session.get(Post, post_id)
    if post is None:
        raise _not_found(post_id)
    return await post_out(session, post)


async def list_posts(
    session: AsyncSession, page: PageRequest, *, status: str | None = None
) -> list[PostSummary]:
    """Newest first (then id); one more than the page."""
    counts = (
        select(func.count())
        .where(PostDestination.post_id == Post.id)
        .correlate(Post)
        .scalar_subquery()
    )
    query: Select[Any] = (
        select(Post, counts).order_by(Post.created_at.desc(), Post.id.desc()).limit(page.limit + 1)
    )
    if page.after:
        query = query.where(tuple_(Post.created_at, Post.id) < page.after)
    if status:
        query = query.where(Post.status == status)
    return [
        PostSummary(
            id=str(post.id),
            status=post.status,
            text=post.text,
            scheduled_at=post.scheduled_at,
            destinations=count,
            created_by=post.created_by,
            created_at=post.created_at,
            updated_at=post.updated_at,
        )
        for post, count in (await session.execute(query)).all()
    ]


async def list_comments(session: AsyncSession, post_id: uuid.UUID) -> list[CommentOut]:
    if await session.get(Post, post_id) is None:
        raise _not_found(post_id)
    comments = await session.scalars(
        select(PostComment)
        .where(PostComment.post_id == post_id)
        .order_by(PostComment.created_at, PostComment.id)
    )
    return [
        CommentOut(id=str(c.id), kind=c.kind, body=c.body, author=c.author, created_at=c.created_at)
        for c in comments
    ]


# -- writing --------------------------------------------------------------------------------


def _schedule_in(value: datetime | None, zone: ZoneInfo, now: datetime) -> datetime | None:
    """A schedule as UTC: a time without an offset is the tenant's local time."""
    if value is None:
        return None
    try:
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        value = value.astimezone(UTC)
    except (OverflowError, ValueError):
        value = now + MAX_AHEAD + MAX_AHEAD  # beyond any calendar: too far ahead, below
    if value > now + MAX_AHEAD:
        raise Problem(
            422,
            "schedule-too-far",
            "A post may be scheduled at most two years ahead.",
            errors=[{"field": "scheduled_at", "message": "at most two years ahead"}],
        )
    if value <= now:
        raise Problem(
            422,
            "schedule-in-past",
            "The scheduled time has passed; choose a later time, or publish now.",
            errors=[{"field": "scheduled_at", "message": "must be in the future"}],
        )
    return value


async def _check_media(session: AsyncSession, media_ids: Sequence[uuid.UUID], field: str) -> None:
    refs = await media_refs(session, set(media_ids))
    unready = sorted(str(m) for m, ref in refs.items() if not ref.ready)
    if unready:
        raise Problem(
            422,
            "media-not-ready",
            "Posts may only use media items that are processed and not deleted.",
            errors=[{"field": field, "message": f"not ready: {m}"} for m in unready],
        )
    if len(set(media_ids)) != len(media_ids):
        raise Problem(
            422,
            "validation-error",
            "A media item may appear once per post.",
            errors=[{"field": field, "message": "duplicate media item"}],
        )


async def _check_destinations(session: AsyncSession, destinations: Sequence[DestinationIn]) -> None:
    ids = [d.account_id for d in destinations]
    if len(set(ids)) != len(ids):
        raise Problem(
            422,
            "validation-error",
            "An account may be a post's destination once.",
            errors=[{"field": "destinations", "message": "duplicate account"}],
        )
    accounts = await _accounts(session, ids)
    errors = []
    for i, d in enumerate(destinations):
        account = accounts.get(d.account_id)
        if account is None or account.status == "disconnected":
            errors.append({"field": f"destinations[{i}].account_id", "message": "no such account"})
        elif account.status != "active":
            errors.append(
                {
                    "field": f"destinations[{i}].account_id",
                    "message": f"the account {account.status.replace('_', ' ')}",
                }
            )
    if errors:
        raise Problem(
            422,
            "destination-unavailable",
            "Every destination must be an active connected account of this tenant.",
            errors=errors,
        )
    unknown = [
        {"field": f"destinations[{i}].variant_profile", "message": f"one of {', '.join(PROFILES)}"}
        for i, d in enumerate(destinations)
        if d.variant_profile is not None and d.variant_profile not in PROFILES
    ]
    if unknown:
        raise Problem(422, "validation-error", "Unknown variant profile.", errors=unknown)
    for i, d in enumerate(destinations):
        if d.media_ids is not None:
            await _check_media(session, d.media_ids, f"destinations[{i}].media_ids")


async def _write_media(
    session: AsyncSession, post_id: uuid.UUID, media_ids: Sequence[uuid.UUID]
) -> None:
    await session.execute(delete(PostMedia).where(PostMedia.post_id == post_id))
    session.add_all(
        PostMedia(post_id=post_id, position=i, media_id=m) for i, m in enumerate(media_ids)
    )


async def _write_destinations(
    session: AsyncSession, post_id: uuid.UUID, destinations: Sequence[DestinationIn]
) -> None:
    await session.execute(delete(PostDestination).where(PostDestination.post_id == post_id))
    session.add_all(
        PostDestination(
            id=uuid.uuid4(),
            post_id=post_id,
            account_id=d.account_id,
            position=i,
            override_text=d.text,
            override_media=d.media_ids,
            variant_profile=d.variant_profile,
        )
        for i, d in enumerate(destinations)
    )


async def create_post(session: AsyncSession, access: TenantAccess, data: PostCreate) -> PostOut:
    settings = await read_settings(session)
    zone = ZoneInfo(settings.timezone)
    scheduled_at = _schedule_in(data.scheduled_at, zone, datetime.now(UTC))
    await _check_media(session, data.media_ids, "media_ids")
    await _check_destinations(session, data.destinations)
    post = Post(
        id=uuid.uuid4(),
        status="draft",
        text=data.text,
        first_comment=data.first_comment,
        labels=data.labels,
        scheduled_at=scheduled_at,
        created_by=access.principal.actor,
    )
    session.add(post)
    await session.flush()
    await _write_media(session, post.id, data.media_ids)
    await _write_destinations(session, post.id, data.destinations)
    await session.flush()
    await record_change(
        session,
        access.principal,
        PostCreated(post_id=post.id, status=post.status),
        tenant=access.tenant.slug,
    )
    await session.refresh(post)
    return await post_out(session, post, zone)


async def update_post(
    session: AsyncSession, access: TenantAccess, post_id: uuid.UUID, data: PostPatch
) -> PostOut:
    """An edit; of an approved or scheduled post it clears the approval (the post returns to
    review, or is approved again at once where the tenant reviews nothing) and makes its due
    event stale."""
    post = await locked_post(session, post_id)
    if post.status not in EDITABLE:
        raise _wrong_state(post, "edit")
    settings = await read_settings(session)
    zone = ZoneInfo(settings.timezone)
    changed = [f for f in PostPatch.__struct_fields__ if getattr(data, f) is not msgspec.UNSET]
    if not changed:
        return await post_out(session, post, zone)
    if data.scheduled_at is not msgspec.UNSET:
        post.scheduled_at = _schedule_in(data.scheduled_at, zone, datetime.now(UTC))
    if data.media_ids is not msgspec.UNSET:
        await _check_media(session, data.media_ids, "media_ids")
        await _write_media(session, post.id, data.media_ids)
    if data.destinations is not msgspec.UNSET:
        await _check_destinations(session, data.destinations)
        await _write_destinations(session, post.id, data.destinations)
    for field in ("text", "first_comment", "labels"):
        value = getattr(data, field)
        if value is not msgspec.UNSET:
            setattr(post, field, value)
    post.edited_by = access.principal.actor
    was = post.status
    cleared = was in APPROVED
    if cleared:
        post.approved_sha256 = post.approved_by = post.approved_at = None
        post.status = "pending_review" if settings.review_required else "draft"
        if was == "scheduled":
            await _give_back_post(session, access, post)
        session.add(
            PostComment(
                id=uuid.uuid4(),
                post_id=post.id,
                kind="approval_cleared",
                body=f"Edited ({', '.join(changed)}) after approval: the approval no longer holds.",
                author=access.principal.actor,
            )
        )
    post.version += 1
    post.updated_at = func.now()
    await session.flush()
    if cleared and not settings.review_required:
        await _approve_now(session, access, post)
    updated = PostUpdated(
        post_id=post.id,
        fields=changed,
        status=post.status,
        approval_cleared=cleared,
        version=post.version,
    )
    await record_change(session, access.principal, updated, tenant=access.tenant.slug)
    await session.refresh(post)
    return await post_out(session, post, zone)


async def _approve_now(session: AsyncSession, access: TenantAccess, post: Post) -> PostContent:
    content = await content_of(session, post)
    _check_complete(post, content)  # an edit under review may have emptied it
    _check_media_still_ready(content)
    post.status = "approved"
    post.approved_sha256 = approval_hash(content)
    post.approved_by = access.principal.actor
    post.approved_at = func.now()
    await session.flush()
    return content


def _check_media_still_ready(content: PostContent) -> None:
    unready = content.unready_media()
    if unready:
        raise Problem(
            422,
            "media-not-ready",
            "A media item of the post is no longer ready (deleted or failed).",
            errors=[{"field": "media_ids", "message": f"not ready: {m}"} for m in unready],
        )


def _check_complete(post: Post, content: PostContent) -> None:
    errors = []
    if not post.text.strip() and not content.media:
        errors.append({"field": "text", "message": "a post needs text or media"})
    if not content.destinations:
        errors.append({"field": "destinations", "message": "a post needs a destination"})
    if errors:
        raise Problem(
            422, "post-incomplete", "The post needs text or media and a destination.", errors=errors
        )


async def submit_post(session: AsyncSession, access: TenantAccess, post_id: uuid.UUID) -> PostOut:
    post = await locked_post(session, post_id)
    if post.status not in SUBMITTABLE:
        raise _wrong_state(post, "submit")
    settings = await read_settings(session)
    _check_complete(post, await content_of(session, post))
    post.submitted_by = access.principal.actor
    post.submitted_at = func.now()
    post.updated_at = func.now()
    if settings.review_required:
        post.status = "pending_review"
        await session.flush()
    else:
        await _approve_now(session, access, post)
    submitted = PostSubmitted(post_id=post.id, status=post.status)
    await record_change(session, access.principal, submitted, tenant=access.tenant.slug)
    await session.refresh(post)
    return await post_out(session, post, ZoneInfo(settings.timezone))


async def _is_author(session: AsyncSession, post: Post, access: TenantAccess) -> bool:
    """Whether the caller wrote the post: as the same actor, or as the same person through an
    API key they made (or through their own session, for a post one of their keys wrote).
    Otherwise an author could approve their own post by switching between the two."""
    actor = access.principal.actor
    authors = {a for a in (post.created_by, post.submitted_by, post.edited_by) if a}
    if actor in authors:
        return True
    people = await _people(session, {actor, *authors})
    me = people.get(actor)
    return me is not None and me in {people.get(author) for author in authors}


async def _people(session: AsyncSession, actors: set[str]) -> dict[str, uuid.UUID]:
    """The person behind each actor: a user is themself, an API key the user who made it."""
    people: dict[str, uuid.UUID] = {}
    keys: dict[uuid.UUID, str] = {}
    for actor in actors:
        kind, _, ident = actor.partition(":")
        try:
            found = uuid.UUID(ident)
        except ValueError:
            continue  # a system actor
        if kind == "user":
            people[actor] = found
        elif kind == "api_key":
            keys[found] = actor
    if keys:
        made = await session.execute(_KEY_MAKERS, {"ids": list(keys)})
        for key_id, creator in made:
            if creator is not None:
                people[keys[key_id]] = creator
    return people


# Each key's maker, followed through keys made with keys (before they recorded the person) to
# the last link: the person. Bounded: a chain is a handful of links.
_KEY_MAKERS = text("""
WITH RECURSIVE chain (start_id, created_by, depth) AS (
    SELECT id, created_by, 0 FROM shared.api_keys WHERE id = ANY(CAST(:ids AS uuid[]))
    UNION ALL
    SELECT chain.start_id, k.created_by, chain.depth + 1
    FROM chain JOIN shared.api_keys k ON k.id = chain.created_by
    WHERE chain.depth < 8
)
SELECT DISTINCT ON (start_id) start_id, created_by FROM chain ORDER BY start_id, depth DESC
""")


async def _comment(
    session: AsyncSession, access: TenantAccess, post: Post, kind: str, body: str
) -> uuid.UUID:
    comment_id = uuid.uuid4()
    session.add(
        PostComment(
            id=comment_id, post_id=post.id, kind=kind, body=body, author=access.principal.actor
        )
    )
    return comment_id


async def approve_post(
    session: AsyncSession, access: TenantAccess, post_id: uuid.UUID, data: ApprovalIn
) -> PostOut:
    """Approve the post as it is now: the approval binds to its content's SHA-256."""
    post = await locked_post(session, post_id)
    if post.status != "pending_review":
        raise _wrong_state(post, "approve")
    settings = await read_settings(session)
    self_approved = await _is_author(session, post, access)
    if self_approved and not settings.self_approval_allowed:
        raise Problem(
            403,
            "self-approval-forbidden",
            "This tenant does not let authors approve their own posts; ask another reviewer.",
        )
    await _approve_now(session, access, post)
    await _comment(session, access, post, "approved", data.comment or "")
    post.updated_at = func.now()
    approved = PostApproved(
        post_id=post.id, approved_sha256=post.approved_sha256 or "", self_approved=self_approved
    )
    await record_change(session, access.principal, approved, tenant=access.tenant.slug)
    await session.refresh(post)
    return await post_out(session, post, ZoneInfo(settings.timezone))


async def request_changes(
    session: AsyncSession, access: TenantAccess, post_id: uuid.UUID, data: ReviewComment
) -> PostOut:
    post = await locked_post(session, post_id)
    if post.status != "pending_review":
        raise _wrong_state(post, "request changes to")
    comment_id = await _comment(session, access, post, "changes_requested", data.body)
    post.status = "changes_requested"
    post.updated_at = func.now()
    await session.flush()
    requested = PostChangesRequested(post_id=post.id, comment_id=comment_id)
    await record_change(session, access.principal, requested, tenant=access.tenant.slug)
    await session.refresh(post)
    return await post_out(session, post)


async def comment_post(
    session: AsyncSession, access: TenantAccess, post_id: uuid.UUID, data: ReviewComment
) -> CommentOut:
    post = await session.get(Post, post_id)
    if post is None:
        raise _not_found(post_id)
    comment_id = await _comment(session, access, post, "comment", data.body)
    await session.flush()
    commented = PostCommented(post_id=post.id, comment_id=comment_id)
    await record_change(session, access.principal, commented, tenant=access.tenant.slug)
    comment = await session.get(PostComment, comment_id)
    assert comment is not None  # written above
    await session.refresh(comment)
    return CommentOut(
        id=str(comment.id),
        kind=comment.kind,
        body=comment.body,
        author=comment.author,
        created_at=comment.created_at,
    )


async def schedule_post(
    session: AsyncSession, access: TenantAccess, post_id: uuid.UUID, *, now: bool
) -> PostOut:
    """Schedule an approved post at its approved time (`now`: publish at once, for a post
    approved without a time or whose time has come). The due event is written deferred, with
    the post's new version, in this transaction."""
    post = await locked_post(session, post_id)
    if post.status != "approved":
        raise _wrong_state(post, "schedule")
    current = datetime.now(UTC)
    if now:
        if post.scheduled_at is not None and post.scheduled_at > current:
            raise Problem(
                409,
                "approved-for-later",
                f"The post was approved for {post.scheduled_at.isoformat()}; to publish it now, "
                "change its schedule (which returns it to review).",
                status_now=post.status,
            )
        due = current
    else:
        if post.scheduled_at is None:
            raise Problem(
                422,
                "no-schedule",
                "The post has no scheduled time: set one (an edit) or publish it now.",
                errors=[{"field": "scheduled_at", "message": "not set"}],
            )
        if post.scheduled_at <= current:
            raise Problem(
                422,
                "schedule-in-past",
                "The approved time has passed: publish now, or change the schedule.",
                errors=[{"field": "scheduled_at", "message": "in the past"}],
            )
        due = post.scheduled_at
    content = await content_of(session, post)
    _check_complete(post, content)
    if approval_hash(content) != post.approved_sha256:
        # Edits clear the approval; this holds even if a row was changed some other way.
        raise Problem(
            409, "approval-stale", "The post changed since it was approved.", status_now=post.status
        )
    _check_media_still_ready(content)
    inactive = [
        a
        for a in (await _accounts(session, [d.account_id for d in content.destinations])).values()
        if a.status != "active"
    ]
    if inactive:
        raise Problem(
            422,
            "destination-unavailable",
            "Every destination must be an active connected account.",
            errors=[
                {"field": "destinations", "message": f"{a.handle}: {a.status}"} for a in inactive
            ],
        )
    counted = await quota.reserve(session, access.tenant, Resource.POSTS_PER_MONTH)
    post.quota_period_start = counted.period_start
    post.status = "scheduled"
    post.version += 1
    post.updated_at = func.now()
    await session.flush()
    scheduled = PostScheduled(post_id=post.id, scheduled_at=due, version=post.version, now=now)
    await record_change(session, access.principal, scheduled, tenant=access.tenant.slug)
    publish_due = PostPublishDue(post_id=post.id, version=post.version)
    await record_change(
        session,
        access.principal,
        publish_due,
        tenant=access.tenant.slug,
        available_at=None if now else due,
    )
    await session.refresh(post)
    return await post_out(session, post)


async def _give_back_post(session: AsyncSession, access: TenantAccess, post: Post) -> None:
    """The post's unit of the monthly posts quota, back to the billing period it was counted
    in, even one that has ended: it never raises a later period's allowance."""
    await quota.adjust(
        session,
        access.tenant,
        Resource.POSTS_PER_MONTH,
        -1,
        period_start=post.quota_period_start,
    )
    post.quota_period_start = None


async def cancel_post(session: AsyncSession, access: TenantAccess, post_id: uuid.UUID) -> PostOut:
    """Cancel a post not yet publishing; a due event already written becomes stale."""
    post = await locked_post(session, post_id)
    if post.status not in CANCELLABLE:
        raise _wrong_state(post, "cancel")
    previous = post.status
    if previous == "scheduled":
        await _give_back_post(session, access, post)
    post.status = "cancelled"
    post.version += 1
    post.cancelled_at = post.updated_at = func.now()
    await session.execute(
        update(PostDestination).where(PostDestination.post_id == post.id).values(state="cancelled")
    )
    await session.flush()
    cancelled = PostCancelled(post_id=post.id, previous_status=previous, version=post.version)
    await record_change(session, access.principal, cancelled, tenant=access.tenant.slug)
    await session.refresh(post)
    return await post_out(session, post)


# -- a person's decision on an unknown outcome ------------------------------------------------


async def resolve_delivery(
    session: AsyncSession,
    access: TenantAccess,
    post_id: uuid.UUID,
    destination_id: uuid.UUID,
    data: DeliveryResolution,
    *,
    max_attempts: int,
) -> PostOut:
    """Settle a delivery left `unconfirmed` (its outcome unknown, its lookups spent or still
    going) as the person who looked on the platform found it."""
    locked = await deliveries.locked_delivery(session, post_id, destination_id)
    if locked is None:
        raise Problem(404, "not-found", f"No destination {destination_id} of post {post_id}.")
    post, destination = locked
    if destination.state != "unconfirmed":
        raise Problem(
            409,
            "invalid-delivery-state",
            f"Only an unconfirmed delivery is resolved by hand; this one is {destination.state}.",
            state_now=destination.state,
        )
    found = None
    if data.outcome == "published":
        found = Receipt(
            _resolved_id(data.platform_post_id), _resolved_url(data.url), {"resolved_by_hand": True}
        )
    elif data.url is not None or data.platform_post_id is not None:
        raise invalid("outcome", "url and platform_post_id are for a published one", source="body")
    elif data.outcome == "send_again" and destination.attempts >= max_attempts:
        raise Problem(
            409,
            "attempts-spent",
            f"This delivery has had its {destination.attempts} attempts: resolve it as "
            "published or not_published.",
        )
    account = await session.get(SocialAccount, destination.account_id)
    resolved = DestinationResolved(
        post_id=post.id, destination_id=destination.id, outcome=data.outcome, note=data.note
    )
    await record_change(session, access.principal, resolved, tenant=access.tenant.slug)
    await deliveries.resolve_by_hand(
        session,
        access.tenant.slug,
        post,
        destination,
        platform=account.platform if account is not None else "unknown",
        outcome=data.outcome,
        found=found,
        note=data.note,
    )
    await session.refresh(post)
    return await post_out(session, post)


def _resolved_url(url: str | None) -> str:
    """The address a person found the post at: http(s), a host, nothing that is not a URL's."""
    if url is None:
        raise invalid("url", "the post's address on the platform is required", source="body")
    parts = urlsplit(url)
    if not parts.hostname or url != url.strip() or any(ord(c) < 32 for c in url):
        raise invalid("url", "an http or https address with a host", source="body")
    return url


def _resolved_id(platform_post_id: str | None) -> str:
    if platform_post_id is not None and any(ord(c) < 32 for c in platform_post_id):
        raise invalid("platform_post_id", "no control characters", source="body")
    return platform_post_id or ""
