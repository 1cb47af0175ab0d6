"""A delivery's states in the database: claimed before the platform is called, settled after,
and the post's state derived from its destinations. Runs in the engine's step transactions.

`sending` is committed (with a deferred watchdog event) before any call: a delivery whose
worker dies mid-call is found by that event and reconciled, never sent blindly again.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.audit.record import record_change
from socialflow.publishing.events import (
    DeliveryCheckDue,
    DeliveryDue,
    DestinationFailed,
    DestinationPublished,
    DestinationUnconfirmed,
    PostFailed,
    PostFinished,
    PostPartiallyPublished,
    PostPublished,
    PostUnconfirmed,
)
from socialflow.publishing.models import Post, PostDestination
from socialflow.settings import Settings
from socialflow.social.platforms.base import FailureKind, PublishError, Receipt

SYSTEM = "system:publishing"
IN_FLIGHT = frozenset({"pending", "sending", "retrying"})
FINISHED: dict[str, type[PostFinished]] = {
    "published": PostPublished,
    "partially_published": PostPartiallyPublished,
    "failed": PostFailed,
    "unconfirmed": PostUnconfirmed,
}


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery marked `sending` for attempt `attempt` (committed before the call)."""

    post_id: uuid.UUID
    destination_id: uuid.UUID
    attempt: int


class Unknown:
    """The outcome of a call that may have reached the platform."""


Outcome = Receipt | PublishError | Unknown


async def locked_delivery(
    session: AsyncSession, post_id: uuid.UUID, destination_id: uuid.UUID
) -> tuple[Post, PostDestination] | None:
    """The post, then its destination, locked in that order (every writer takes them so)."""
    post = (
        await session.scalars(select(Post).where(Post.id == post_id).with_for_update())
    ).one_or_none()
    if post is None:
        return None
    destination = (
        await session.scalars(
            select(PostDestination)
            .where(PostDestination.id == destination_id, PostDestination.post_id == post_id)
            .with_for_update()
        )
    ).one_or_none()
    return None if destination is None else (post, destination)


async def locked_delivery_of(
    session: AsyncSession, payload: dict[str, Any]
) -> tuple[Post, PostDestination] | None:
    """The delivery a delivery event names, locked as `locked_delivery` locks it."""
    return await locked_delivery(
        session, uuid.UUID(str(payload["post_id"])), uuid.UUID(str(payload["destination_id"]))
    )


async def claim(
    session: AsyncSession,
    settings: Settings,
    tenant: str,
    post: Post,
    destination: PostDestination,
) -> Claimed:
    """Mark the delivery `sending` for its next attempt, with the watchdog's deferred check
    (the post is publishing again if a reconciliation resends)."""
    now = datetime.now(UTC)
    post.status = "publishing"
    destination.state = "sending"
    destination.attempts += 1
    destination.first_attempt_at = destination.first_attempt_at or now
    destination.sending_since = now
    destination.next_attempt_at = None
    await session.flush()
    check = DeliveryCheckDue(
        post_id=destination.post_id,
        destination_id=destination.id,
        attempt=destination.attempts,
    )
    due = now + timedelta(seconds=settings.publish_stalled_after_s)
    await record_change(session, SYSTEM, check, tenant=tenant, available_at=due)
    return Claimed(destination.post_id, destination.id, destination.attempts)


def backoff_s(settings: Settings, attempt: int, retry_after_s: float | None) -> float:
    """Exponential with jitter, never before the platform's own reset."""
    exponential: float = min(
        settings.publish_retry_base_s * 2 ** (attempt - 1), settings.publish_retry_max_s
    )
    jittered = exponential * (1 + random.random() / 10)  # noqa: S311 - jitter, not a secret
    return max(jittered, retry_after_s or 0.0)


async def settle(
    session: AsyncSession,
    settings: Settings,
    tenant: str,
    *,
    platform: str,
    claimed: Claimed,
    outcome: Outcome,
) -> str | None:
    """Record a call's outcome; the destination's new state, or None when the delivery moved
    on meanwhile (another attempt, or cancelled): then nothing is written."""
    locked = await locked_delivery(session, claimed.post_id, claimed.destination_id)
    if locked is None:
        return None
    post, destination = locked
    if destination.attempts != claimed.attempt or destination.state not in (
        "sending",
        "unconfirmed",
    ):
        return None
    now = datetime.now(UTC)
    destination.sending_since = None
    event: DestinationPublished | DestinationFailed | DestinationUnconfirmed | None = None
    if isinstance(outcome, Receipt):
        event = _published(destination, platform, outcome)
    elif isinstance(outcome, PublishError):
        destination.error_kind = outcome.kind.value
        destination.error_detail = outcome.detail
        if outcome.retryable and destination.attempts < settings.publish_max_attempts:
            delay = backoff_s(settings, destination.attempts, outcome.retry_after_s)
            destination.state = "retrying"
            destination.next_attempt_at = now + timedelta(seconds=delay)
            again = DeliveryDue(
                post_id=post.id, destination_id=destination.id, attempt=destination.attempts + 1
            )
            await record_change(
                session, SYSTEM, again, tenant=tenant, available_at=destination.next_attempt_at
            )
        else:
            destination.state = "failed"
            event = DestinationFailed(
                post_id=post.id,
                destination_id=destination.id,
                platform=platform,
                error_kind=outcome.kind.value,
                error_detail=outcome.detail,
            )
    else:
        event = await mark_unconfirmed(session, settings, tenant, platform, destination)
    await session.flush()
    if event is not None:
        await record_change(session, SYSTEM, event, tenant=tenant)
    await derive_post_state(session, tenant, post)
    return destination.state


def _published(
    destination: PostDestination, platform: str, receipt: Receipt
) -> DestinationPublished:
    destination.state = "published"
    destination.platform_post_id = receipt.platform_post_id or None
    destination.url = receipt.url
    destination.receipt = {
        "platform_post_id": receipt.platform_post_id,
        "url": receipt.url,
        **receipt.extra,
    }
    destination.published_at = datetime.now(UTC)
    destination.error_kind = destination.error_detail = None
    return DestinationPublished(
        post_id=destination.post_id,
        destination_id=destination.id,
        platform=platform,
        platform_post_id=receipt.platform_post_id,
        url=receipt.url,
    )


async def resolve_by_hand(
    session: AsyncSession,
    tenant: str,
    post: Post,
    destination: PostDestination,
    *,
    platform: str,
    outcome: str,
    found: Receipt | None,
    note: str | None,
) -> None:
    """An unconfirmed delivery as a person decided it (they looked on the platform): published
    there (`found`), not published (failed), or sent again now (one more attempt, its unknown
    outcome looked up afresh). A lookup still scheduled then finds it settled and does nothing."""
    destination.sending_since = None
    destination.next_attempt_at = None
    event: DestinationPublished | DestinationFailed | DeliveryDue
    if found is not None:  # published
        event = _published(destination, platform, found)
    elif outcome == "not_published":
        detail = note or "A person found it was not published."
        event = fail(destination, platform=platform, kind="not_published", detail=detail)
    else:
        post.status = "publishing"
        destination.state = "retrying"
        destination.lookups = 0
        destination.next_attempt_at = datetime.now(UTC)
        event = DeliveryDue(
            post_id=post.id, destination_id=destination.id, attempt=destination.attempts + 1
        )
    await session.flush()
    await record_change(session, SYSTEM, event, tenant=tenant)
    await derive_post_state(session, tenant, post)


async def mark_unconfirmed(
    session: AsyncSession,
    settings: Settings,
    tenant: str,
    platform: str,
    destination: PostDestination,
) -> DestinationUnconfirmed | None:
    """The outcome is unknown: `unconfirmed`, with a lookup due soon; the event the first time."""
    first = destination.state != "unconfirmed"
    destination.state = "unconfirmed"
    destination.sending_since = None
    await schedule_lookup(session, settings, tenant, destination)
    if not first:
        return None
    return DestinationUnconfirmed(
        post_id=destination.post_id, destination_id=destination.id, platform=platform
    )


async def schedule_lookup(
    session: AsyncSession, settings: Settings, tenant: str, destination: PostDestination
) -> bool:
    """A lookup of an unknown outcome later (backing off), while lookups remain; False when
    they are spent (the delivery stays `unconfirmed`: a person decides)."""
    if destination.lookups >= settings.publish_unconfirmed_checks:
        return False
    delay = backoff_s(settings, destination.lookups + 1, None) / 3
    check = DeliveryCheckDue(
        post_id=destination.post_id, destination_id=destination.id, attempt=destination.attempts
    )
    due = datetime.now(UTC) + timedelta(seconds=delay)
    destination.next_attempt_at = due
    await record_change(session, SYSTEM, check, tenant=tenant, available_at=due)
    return True


def fail(
    destination: PostDestination,
    *,
    platform: str,
    kind: FailureKind | str,
    detail: str,
) -> DestinationFailed:
    destination.state = "failed"
    destination.sending_since = None
    destination.error_kind = str(kind)
    destination.error_detail = detail[:500]
    return DestinationFailed(
        post_id=destination.post_id,
        destination_id=destination.id,
        platform=platform,
        error_kind=str(kind),
        error_detail=detail[:500],
    )


async def derive_post_state(session: AsyncSession, tenant: str, post: Post) -> None:
    """The post's state from its destinations; when every one has an outcome, the post's
    outcome event (again if reconciling changes it)."""
    await session.flush()
    states = list(
        await session.scalars(
            select(PostDestination.state).where(PostDestination.post_id == post.id)
        )
    )
    if any(s in IN_FLIGHT for s in states):
        return
    published = states.count("published")
    failed = states.count("failed")
    unconfirmed = states.count("unconfirmed")
    if unconfirmed:
        status = "unconfirmed"
    elif published == 0:  # none published, or nowhere to publish
        status = "failed"
    elif published == len(states):
        status = "published"
    else:
        status = "partially_published"
    if status == post.status:
        return
    post.status = status
    post.finished_at = post.updated_at = func.now()
    await session.flush()
    finished = FINISHED[status](
        post_id=post.id, published=published, failed=failed, unconfirmed=unconfirmed
    )
    await record_change(session, SYSTEM, finished, tenant=tenant)
