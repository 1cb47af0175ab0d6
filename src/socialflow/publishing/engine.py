"""The publish engine: a due post's deliveries, their retries, and the reconciling of unknown
outcomes. Stepwise (workers.actors.EventSteps): no transaction is held during a platform call.

1. Claim: in one transaction, each destination is marked `sending` (attempt n) with a deferred
   watchdog event, and the event that asked is recorded processed.
2. Call the platform with the delivery's idempotency key.
3. Settle: in a transaction, the outcome is recorded if the delivery is still at attempt n.

A crash between 1 and 3 leaves `sending`; the watchdog event then marks it `unconfirmed` and
asks the platform. Only a definite "not there" (or a platform whose resend is idempotent by
contract) lets the engine send again: a post is never published twice by the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.audit.record import record_change
from socialflow.media.storage import media_storage
from socialflow.outbox.events import Event
from socialflow.publishing import deliveries
from socialflow.publishing.content import approval_hash, content_of, idempotency_key
from socialflow.publishing.deliveries import SYSTEM, Claimed, Outcome, Unknown
from socialflow.publishing.events import (
    DeliveryCheckDue,
    DeliveryDue,
    DestinationFailed,
    DestinationUnconfirmed,
)
from socialflow.publishing.models import Post
from socialflow.publishing.outgoing import Send, build_send, read_media
from socialflow.resources import Resources
from socialflow.social import credentials as sealing
from socialflow.social.clients import platform_reach
from socialflow.social.events import SocialAccountRefreshed
from socialflow.social.models import SocialAccount
from socialflow.social.platforms.base import (
    Account,
    Credentials,
    FailureKind,
    OutcomeUnknown,
    OutgoingPost,
    PlatformAdapter,
    PublishError,
    Receipt,
    ReconnectNeeded,
)
from socialflow.social.services import mark_needs_reconnect
from socialflow.workers.actors import EventSteps

log = structlog.get_logger(__name__)
# Whether a delivery may be claimed again: (post, delivery state, attempts so far).
Ready = Callable[[Post, str, int], bool]


def _tenant(steps: EventSteps) -> tuple[uuid.UUID, str]:
    assert steps.tenant is not None  # a step transaction entered it
    return steps.tenant.id, steps.tenant.slug


async def handle(steps: EventSteps, event: Event, resources: Resources) -> None:
    """One event of the `publish_post` actor."""
    if event.event_type == DeliveryDue.event_type:
        await retry_delivery(steps, event, resources)
    elif event.event_type == DeliveryCheckDue.event_type:
        await check_delivery(steps, event, resources)
    else:
        await start_post(steps, event, resources)


# -- 1. claim ---------------------------------------------------------------------------------


async def start_post(steps: EventSteps, event: Event, resources: Resources) -> None:
    """`post.publish_due`: a no-op unless the post is still scheduled at the event's version."""
    settings = resources.settings
    sends: list[tuple[Claimed, Send]] = []
    async with steps.transaction() as session:
        if await steps.already_processed(session):
            return
        tenant_id, slug = _tenant(steps)
        post_id = uuid.UUID(str(event.payload["post_id"]))
        post = (
            await session.scalars(select(Post).where(Post.id == post_id).with_for_update())
        ).one_or_none()
        stale = (
            post is None
            or post.status != "scheduled"
            or post.version != int(event.payload["version"])
        )
        if post is None or stale:
            await steps.complete(session)
            return
        content = await content_of(session, post)
        changed = approval_hash(content) != post.approved_sha256
        post.status = "publishing"
        post.publish_started_at = post.updated_at = datetime.now(UTC)
        failures: list[DestinationFailed] = []
        for destination in content.destinations:
            destination.idempotency_key = idempotency_key(
                post.id, destination.id, post.approved_sha256 or ""
            )
            account = await session.get(SocialAccount, destination.account_id)
            platform = account.platform if account else "unknown"
            unready = [m.media_id for m in content.media_of(destination) if not m.ready]
            if changed:
                failures.append(
                    deliveries.fail(
                        destination,
                        platform=platform,
                        kind="approval_mismatch",
                        detail="The content differs from what was approved; not sent.",
                    )
                )
            elif unready:
                failures.append(
                    deliveries.fail(
                        destination,
                        platform=platform,
                        kind="media_unavailable",
                        detail=f"Media no longer ready: {', '.join(map(str, unready))}.",
                    )
                )
            elif account is None or account.status != "active":
                failures.append(
                    deliveries.fail(
                        destination,
                        platform=platform,
                        kind=FailureKind.AUTH_REVOKED,
                        detail="The account needs reconnecting.",
                    )
                )
            else:
                claimed = await deliveries.claim(session, settings, slug, post, destination)
                send = await build_send(session, resources.vault, tenant_id, content, destination)
                sends.append((claimed, send))
        await session.flush()
        for failure in failures:
            await record_change(session, SYSTEM, failure, tenant=slug)
        await deliveries.derive_post_state(session, slug, post)
        await steps.complete(session)
    await asyncio.gather(*(deliver(steps, resources, claimed, send) for claimed, send in sends))


async def retry_delivery(steps: EventSteps, event: Event, resources: Resources) -> None:
    """`post.delivery_due`: the next attempt of a delivery that failed in a retryable way."""
    attempt = int(event.payload["attempt"])

    def ready(post: Post, state: str, attempts: int) -> bool:
        return post.status == "publishing" and state == "retrying" and attempts == attempt - 1

    await _claim_again(steps, event, resources, ready)


async def _claim_again(
    steps: EventSteps,
    event: Event,
    resources: Resources,
    ready: Ready,
) -> None:
    claimed_send: tuple[Claimed, Send] | None = None
    async with steps.transaction() as session:
        if await steps.already_processed(session):
            return
        claimed_send = await _claim_if(session, steps, event, resources, ready)
        await steps.complete(session)
    if claimed_send is not None:
        await deliver(steps, resources, *claimed_send)


async def _claim_if(
    session: AsyncSession,
    steps: EventSteps,
    event: Event,
    resources: Resources,
    ready: Ready,
) -> tuple[Claimed, Send] | None:
    tenant_id, slug = _tenant(steps)
    locked = await deliveries.locked_delivery_of(session, event.payload)
    if locked is None:
        return None
    post, destination = locked
    if not ready(post, destination.state, destination.attempts):
        return None
    if destination.attempts >= resources.settings.publish_max_attempts:
        failed = deliveries.fail(
            destination,
            platform=(await _platform(session, destination.account_id)),
            kind=destination.error_kind or FailureKind.RETRYABLE,
            detail=f"Not published after {destination.attempts} attempts.",
        )
        await session.flush()
        await record_change(session, SYSTEM, failed, tenant=slug)
        await deliveries.derive_post_state(session, slug, post)
        return None
    claimed = await deliveries.claim(session, resources.settings, slug, post, destination)
    content = await content_of(session, post)
    return claimed, await build_send(session, resources.vault, tenant_id, content, destination)


async def _platform(session: AsyncSession, account_id: uuid.UUID) -> str:
    account = await session.get(SocialAccount, account_id)
    return account.platform if account else "unknown"


# -- 2. call ----------------------------------------------------------------------------------


async def deliver(steps: EventSteps, resources: Resources, claimed: Claimed, send: Send) -> None:
    """Call the platform for one claimed delivery, then settle what it answered."""
    adapter = platform_reach(resources.settings).adapter(send.account.platform)
    outcome = await _bounded_publish(steps, resources, adapter, send)
    await _settle(steps, resources, send, claimed, outcome)


async def _bounded_publish(
    steps: EventSteps, resources: Resources, adapter: PlatformAdapter, send: Send
) -> Outcome:
    """`_publish`, given up after half the watchdog's bound: the check that comes at the bound
    then never looks up a post whose call may still be under way."""
    try:
        async with asyncio.timeout(resources.settings.publish_stalled_after_s / 2):
            return await _publish(steps, resources, adapter, send)
    except TimeoutError:
        log.warning("publishing.call_abandoned", platform=adapter.platform)
        return Unknown()


async def _publish(
    steps: EventSteps, resources: Resources, adapter: PlatformAdapter, send: Send
) -> Outcome:
    account = await fresh_account(steps, resources, adapter, send)
    if account is None:
        return PublishError(FailureKind.AUTH_REVOKED, "The account needs reconnecting.")
    try:
        outgoing = await _outgoing(resources, send)
    except (OSError, ValueError) as exc:
        log.warning("publishing.media_unreadable", error=type(exc).__name__)
        return PublishError(FailureKind.MEDIA_REFUSED, "A media file could not be read.")
    try:
        refusals = await adapter.validate(account, outgoing)
    except PublishError as error:
        return error
    except OutcomeUnknown:
        return PublishError(FailureKind.RETRYABLE, "The platform's limits could not be read.")
    if refusals:
        return PublishError(FailureKind.CONTENT_REJECTED, "; ".join(refusals))
    outcome = await _attempt(adapter, account, outgoing)
    expired = isinstance(outcome, PublishError) and outcome.kind is FailureKind.AUTH_REVOKED
    if expired and account.credentials.refresh_token is not None:
        renewed = await fresh_account(steps, resources, adapter, send, force=True)
        if renewed is not None:
            outcome = await _attempt(adapter, renewed, outgoing)
    return outcome


async def _attempt(adapter: PlatformAdapter, account: Account, outgoing: OutgoingPost) -> Outcome:
    try:
        return await adapter.publish(account, outgoing)
    except PublishError as error:
        return error
    except OutcomeUnknown:
        return Unknown()
    except Exception:
        # An adapter's bug, perhaps after sending: never resend blindly.
        log.exception("publishing.adapter_error", platform=adapter.platform)
        return Unknown()


async def _outgoing(resources: Resources, send: Send) -> OutgoingPost:
    storage = media_storage(resources.settings)
    ttl = resources.settings.media_download_url_ttl_s
    media = await asyncio.gather(*(read_media(storage, spec, ttl) for spec in send.media))
    return OutgoingPost(
        post_id=str(send.post_id),
        destination_id=str(send.destination_id),
        idempotency_key=send.idempotency_key,
        text=send.text,
        created_at=send.created_at,
        media=tuple(media),
        first_comment=send.first_comment,
        labels=send.labels,
    )


# How often a delivery waiting for another's refresh looks again.
_REFRESH_POLL_S = 0.25
# A refresh's call ends this long before its lease (the writes after it fit in the rest).
_LEASE_SPARE_S = 5.0


@dataclasses.dataclass(frozen=True)
class _Wait:
    """Another worker holds the refresh's lease."""


async def fresh_account(
    steps: EventSteps,
    resources: Resources,
    adapter: PlatformAdapter,
    send: Send,
    *,
    force: bool = False,
) -> Account | None:
    """The account with credentials good for the call: refreshed before they expire, once
    for concurrent publishes (the others find the new version). None when the account needs
    reconnecting.

    The refresh is leased, not locked: the row says until when one worker is at it
    (`refresh_lease_until`, the call's timeout and then some), and the platform is called
    with no transaction open. The others wait for the new credentials, or take the refresh
    over once the lease has run out (its worker died)."""
    credentials = send.account.credentials
    margin = timedelta(seconds=resources.settings.social_refresh_margin_s)
    expiring = credentials.expires_at is not None and (
        credentials.expires_at - datetime.now(UTC) <= margin
    )
    if not (force or expiring):
        return send.account
    lease_s = resources.settings.social_call_timeout_s + 10
    while True:  # another's lease: its new credentials come, or the lease runs out
        taken = await _lease_refresh(steps, resources, send, lease_s)
        if not isinstance(taken, _Wait):
            break
        await asyncio.sleep(_REFRESH_POLL_S)
    if taken is not send.account:
        return taken  # gone, or refreshed by another meanwhile
    try:
        # Within the lease, whatever the platform does (the client's timeout bounds each read,
        # not the call): past it another delivery may refresh with the same refresh token.
        async with asyncio.timeout(lease_s - _LEASE_SPARE_S):
            renewed = await adapter.refresh(send.account)
    except ReconnectNeeded:
        return await _revoked(steps, resources, send)
    except (PublishError, OutcomeUnknown, TimeoutError):
        await _let_go(steps, send)
        return send.account  # the platform is down or slow: try with what there is
    except Exception:
        await _let_go(steps, send)  # an adapter's bug: the others need not wait for the lease
        raise
    return await _keep_refreshed(steps, resources, send, renewed)


async def _as_kept(
    session: AsyncSession,
    resources: Resources,
    tenant_id: uuid.UUID,
    row: SocialAccount,
    send: Send,
) -> Account:
    """The account with the credentials its row keeps now (another delivery's refresh)."""
    opened = await sealing.open_sealed(session, resources.vault, tenant_id, row.id, row.credentials)
    return dataclasses.replace(send.account, credentials=opened)


async def _let_go(steps: EventSteps, send: Send) -> None:
    async with steps.transaction() as session:
        await _end_lease(session, send)


async def _revoked(steps: EventSteps, resources: Resources, send: Send) -> Account | None:
    """The platform refused this refresh: the account needs reconnecting, unless another
    delivery's refresh was kept meanwhile (this one's lease ran out and its refresh token was
    spent by the other): those credentials are then the ones to use."""
    async with steps.transaction() as session:
        tenant_id, slug = _tenant(steps)
        row, _now = await _locked_account(session, send)
        if row is not None and row.credentials_version != send.credentials_version:
            if row.status != "active":
                return None
            return await _as_kept(session, resources, tenant_id, row, send)
        await _end_lease(session, send)
        await mark_needs_reconnect(
            session, slug, send.account_id, "The platform revoked the grant."
        )
    return None


async def _locked_account(
    session: AsyncSession, send: Send
) -> tuple[SocialAccount | None, datetime]:
    """The account's row, locked until the transaction ends, and the database's time."""
    found = (
        await session.execute(
            select(SocialAccount, func.now())
            .where(SocialAccount.id == send.account_id)
            .with_for_update(of=SocialAccount)
        )
    ).one_or_none()
    if found is None:
        return None, datetime.now(UTC)
    return found[0], found[1]


async def _lease_refresh(
    steps: EventSteps, resources: Resources, send: Send, lease_s: float
) -> Account | _Wait | None:
    """`send.account` when this delivery now holds the refresh's lease; the newer credentials
    when another refreshed them; None when the account is gone; _Wait while another holds it."""
    async with steps.transaction() as session:
        tenant_id, _slug = _tenant(steps)
        row, now = await _locked_account(session, send)
        if row is None or row.status != "active":
            return None
        if row.credentials_version != send.credentials_version:
            return await _as_kept(session, resources, tenant_id, row, send)
        if row.refresh_lease_until is not None and row.refresh_lease_until > now:
            return _Wait()
        row.refresh_lease_until = now + timedelta(seconds=lease_s)
        return send.account


async def _end_lease(session: AsyncSession, send: Send) -> None:
    await session.execute(
        update(SocialAccount)
        .where(
            SocialAccount.id == send.account_id,
            SocialAccount.credentials_version == send.credentials_version,
        )
        .values(refresh_lease_until=None)
    )


async def _keep_refreshed(
    steps: EventSteps, resources: Resources, send: Send, renewed: Credentials
) -> Account | None:
    """Seal the refreshed credentials as the account's next version, unless another's refresh
    was kept first (this one's lease ran out meanwhile): those are then the ones to use."""
    async with steps.transaction() as session:
        tenant_id, slug = _tenant(steps)
        row, _now = await _locked_account(session, send)
        if row is None or row.status != "active":
            return None
        if row.credentials_version != send.credentials_version:
            return await _as_kept(session, resources, tenant_id, row, send)
        row.credentials = await sealing.seal(session, resources.vault, tenant_id, row.id, renewed)
        row.credentials_version += 1
        row.expires_at = renewed.expires_at
        row.refresh_lease_until = None
        row.refreshed_at = row.updated_at = datetime.now(UTC)
        await session.flush()
        refreshed = SocialAccountRefreshed(
            account_id=row.id,
            platform=row.platform,
            handle=row.handle,
            credentials_version=row.credentials_version,
        )
        await record_change(session, SYSTEM, refreshed, tenant=slug)
        return dataclasses.replace(send.account, credentials=renewed)


# -- 3. settle --------------------------------------------------------------------------------


async def _settle(
    steps: EventSteps, resources: Resources, send: Send, claimed: Claimed, outcome: Outcome
) -> None:
    platform = send.account.platform
    async with steps.transaction() as session:
        _tenant_id, slug = _tenant(steps)
        state = await deliveries.settle(
            session, resources.settings, slug, platform=platform, claimed=claimed, outcome=outcome
        )
        if isinstance(outcome, PublishError) and outcome.kind is FailureKind.AUTH_REVOKED:
            await mark_needs_reconnect(session, slug, send.account_id, outcome.detail)
    log.info(
        "publishing.settled",
        post_id=str(claimed.post_id),
        destination_id=str(claimed.destination_id),
        attempt=claimed.attempt,
        platform=platform,
        state=state,
    )


# -- reconciling ------------------------------------------------------------------------------


async def check_delivery(steps: EventSteps, event: Event, resources: Resources) -> None:
    """`post.delivery_check_due`: a delivery still `sending` past its bound (its worker died, or
    its call never returned) or `unconfirmed` is looked up on the platform: found → published;
    definitely absent → sent again; still unknown → looked up later, a bounded number of times
    (then it stays `unconfirmed` for a person to decide). A platform whose resend is idempotent
    by contract is sent again when the lookup cannot tell."""
    attempt = int(event.payload["attempt"])
    async with steps.transaction() as session:
        if await steps.already_processed(session):
            return
        send = await _begin_check(session, steps, event, resources, attempt)
        await steps.complete(session)
    if send is None:
        return
    claimed = Claimed(send.post_id, send.destination_id, attempt)
    adapter = platform_reach(resources.settings).adapter(send.account.platform)
    found = await _lookup(steps, resources, adapter, send)
    if isinstance(found, Receipt):
        await _settle(steps, resources, send, claimed, found)
        return
    if found is None or adapter.idempotent_resend:

        def still_unconfirmed(post: Post, state: str, attempts: int) -> bool:
            return state == "unconfirmed" and attempts == attempt

        async with steps.transaction() as session:
            again = await _claim_if(session, steps, event, resources, still_unconfirmed)
        if again is not None:
            outcome = await _bounded_publish(steps, resources, adapter, again[1])
            await _settle(steps, resources, again[1], again[0], outcome)
        return
    async with steps.transaction() as session:
        _tenant_id, slug = _tenant(steps)
        locked = await deliveries.locked_delivery(session, send.post_id, send.destination_id)
        if locked is not None:
            _post, destination = locked
            if destination.state == "unconfirmed" and destination.attempts == attempt:
                await deliveries.schedule_lookup(session, resources.settings, slug, destination)


async def _begin_check(
    session: AsyncSession, steps: EventSteps, event: Event, resources: Resources, attempt: int
) -> Send | None:
    tenant_id, slug = _tenant(steps)
    locked = await deliveries.locked_delivery_of(session, event.payload)
    if locked is None:
        return None
    post, destination = locked
    if destination.attempts != attempt or destination.state not in ("sending", "unconfirmed"):
        return None
    bound = datetime.now(UTC) - timedelta(seconds=resources.settings.publish_stalled_after_s)
    started = destination.sending_since or bound
    if destination.state == "sending" and started > bound:
        # Its call may still be under way (a clock ahead, a sweep): look again at its bound.
        again = DeliveryCheckDue(post_id=post.id, destination_id=destination.id, attempt=attempt)
        due = started + timedelta(seconds=resources.settings.publish_stalled_after_s + 1)
        await record_change(session, SYSTEM, again, tenant=slug, available_at=due)
        return None
    if destination.state == "sending":
        platform = await _platform(session, destination.account_id)
        destination.state = "unconfirmed"
        destination.sending_since = None
        unconfirmed = DestinationUnconfirmed(
            post_id=post.id, destination_id=destination.id, platform=platform
        )
        await session.flush()
        await record_change(session, SYSTEM, unconfirmed, tenant=slug)
    destination.lookups += 1
    await deliveries.derive_post_state(session, slug, post)
    content = await content_of(session, post)
    return await build_send(session, resources.vault, tenant_id, content, destination)


async def _lookup(
    steps: EventSteps, resources: Resources, adapter: PlatformAdapter, send: Send
) -> Receipt | Unknown | None:
    """The post on the platform, if it is there; found without its first comment (the worker
    died between the two), with that comment written: it is published either way."""
    account = await fresh_account(steps, resources, adapter, send)
    if account is None:
        return Unknown()
    probe = OutgoingPost(
        post_id=str(send.post_id),
        destination_id=str(send.destination_id),
        idempotency_key=send.idempotency_key,
        text=send.text,
        created_at=send.created_at,
        first_comment=send.first_comment,
        labels=send.labels,
    )
    try:
        found = await adapter.lookup(account, probe)
    except (OutcomeUnknown, PublishError):
        return Unknown()
    except Exception:  # an adapter's bug: the answer is unknown
        log.exception("publishing.lookup_error", platform=adapter.platform)
        return Unknown()
    if found is None or not found.incomplete:
        return found
    try:
        return await adapter.complete(account, probe, found)
    except Exception:  # an adapter's bug: the post stands, without its missing part
        log.exception("publishing.complete_error", platform=adapter.platform)
        return found
