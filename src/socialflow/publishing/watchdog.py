"""The stalled-delivery watchdog's sweep: deliveries stuck `sending` (or `retrying`) well past
their time get the event that reconciles (or retries) them. Each delivery's own deferred check
does this already; the sweep catches what that missed (an event dead-lettered, a worker fleet
down for longer than the bound). Run it periodically: `socialflow publishing watchdog`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.audit.record import record_change
from socialflow.publishing.events import DeliveryCheckDue, DeliveryDue
from socialflow.publishing.models import PostDestination
from socialflow.settings import Settings

WATCHDOG = "system:publishing-watchdog"


async def sweep_stalled(session: AsyncSession, settings: Settings, tenant: str) -> int:
    """Write a check for every delivery `sending` past the bound, and the next attempt for every
    one `retrying` past its time by as much; returns how many. In the tenant's schema."""
    now = datetime.now(UTC)
    bound = now - timedelta(seconds=settings.publish_stalled_after_s)
    stalled = await session.scalars(
        select(PostDestination)
        .where(
            or_(
                (PostDestination.state == "sending")
                & (PostDestination.sending_since < bound)
                & or_(
                    PostDestination.next_attempt_at.is_(None), PostDestination.next_attempt_at < now
                ),
                (PostDestination.state == "retrying") & (PostDestination.next_attempt_at < bound),
            )
        )
        .with_for_update(skip_locked=True)
    )
    count = 0
    for destination in stalled:
        event: DeliveryCheckDue | DeliveryDue
        if destination.state == "sending":
            event = DeliveryCheckDue(
                post_id=destination.post_id,
                destination_id=destination.id,
                attempt=destination.attempts,
            )
            # Checked: the next sweep leaves it alone for another bound.
            destination.next_attempt_at = now + timedelta(seconds=settings.publish_stalled_after_s)
        else:
            event = DeliveryDue(
                post_id=destination.post_id,
                destination_id=destination.id,
                attempt=destination.attempts + 1,
            )
            destination.next_attempt_at = now
        await record_change(session, WATCHDOG, event, tenant=tenant)
        count += 1
    await session.flush()
    return count
