"""Customer webhooks: endpoints (their secrets, rotation, a test delivery), replay, the delivery
log, and the catalogue of event types they can receive."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.lib.outbound import check_outbound_url, shown_url
from socialflow.lib.pagination import Page, PageRequest, SortKey, encode_cursor
from socialflow.lib.problems import Problem, invalid
from socialflow.lib.webhook_signing import new_secret
from socialflow.outbox.events import DomainEvent
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from socialflow.settings import Settings
from socialflow.vault.service import SealedSecret, Vault
from socialflow.webhooks import dispatch
from socialflow.webhooks.bodies import (
    AttemptOut,
    EventTypeOut,
    ReplayOut,
    ReplayRequest,
    SecretRotation,
    TestDeliveryOut,
    WebhookCreate,
    WebhookOut,
    WebhookUpdate,
)
from socialflow.webhooks.events import (
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointUpdated,
    WebhookReplayRequested,
    WebhookSecretRotated,
)
from socialflow.webhooks.models import WebhookAttempt, WebhookEndpoint
from socialflow.webhooks.sending import Result, body_of, send

ATTEMPT_ORDER = SortKey.of(id=int)
MAX_URL_CHARS = 2048
TEST_EVENT_TYPE = "webhook.test"


def out(endpoint: WebhookEndpoint, signing_secret: str | None = None) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        disabled_at=endpoint.disabled_at,
        failing_since=endpoint.failing_since,
        failure_streak=endpoint.failure_streak,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
        signing_secret=signing_secret,
    )


def _not_found(endpoint_id: uuid.UUID) -> Problem:
    return Problem(404, "not-found", f"No webhook endpoint {endpoint_id}.")


async def _endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool = False
) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    found = (await session.scalars(query.with_for_update() if lock else query)).one_or_none()
    if found is None:
        raise _not_found(endpoint_id)
    return found


async def _checked_url(settings: Settings, url: str) -> str:
    """HTTPS (unless the policy allows http), a public address also after DNS, a URL httpx
    sends as it is stored (at most 2,048 characters once encoded): else 422."""
    try:
        checked = str(httpx.URL(await check_outbound_url(url, settings, field="url")))
    except (httpx.InvalidURL, ValueError):
        raise invalid("url", "not a valid URL", source="body") from None
    if len(checked) > MAX_URL_CHARS:
        raise invalid("url", f"at most {MAX_URL_CHARS} characters once encoded", source="body")
    return checked


# -- endpoints ----------------------------------------------------------------------------------


# The tenant listed for the relay, its row locked (an update when it is listed already: it
# waits for a delete of the last endpoint deciding, and lists the tenant again if it unlisted).
_LIST_FOR_THE_RELAY = text(
    "INSERT INTO shared.webhook_tenants (tenant_id) VALUES (:tenant) "
    "ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id"
)
_LOCK_LISTING = text("SELECT 1 FROM shared.webhook_tenants WHERE tenant_id = :tenant FOR UPDATE")
# Its own statement, after the lock: it sees every endpoint committed meanwhile.
_UNLIST_WITHOUT_ENDPOINTS = text(
    "DELETE FROM shared.webhook_tenants WHERE tenant_id = :tenant "
    "AND NOT EXISTS (SELECT 1 FROM webhook_endpoints)"
)


async def create_endpoint(
    session: AsyncSession,
    access: TenantAccess,
    *,
    settings: Settings,
    vault: Vault,
    data: WebhookCreate,
) -> WebhookOut:
    """A new endpoint; its signing secret is in this answer only."""
    url = await _checked_url(settings, data.url)
    await quota.reserve(session, access.tenant, Resource.WEBHOOK_ENDPOINTS)
    endpoint_id = uuid.uuid4()
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        url=url,
        description=data.description,
        event_types=sorted(set(data.event_types)),
        enabled=data.enabled,
        secret=await dispatch.seal_secret(session, vault, access.tenant.id, endpoint_id, secret),
        created_by=access.principal.actor,
    )
    session.add(endpoint)
    await session.execute(_LIST_FOR_THE_RELAY, {"tenant": access.tenant.id})
    await session.flush()
    await session.refresh(endpoint)
    created = WebhookEndpointCreated(
        endpoint_id=str(endpoint_id),
        url=shown_url(url),
        event_types=endpoint.event_types,
        description=endpoint.description,
        enabled=endpoint.enabled,
    )
    await record_change(session, access.principal, created, tenant=access.tenant.slug)
    return out(endpoint, signing_secret=secret)


async def list_endpoints(session: AsyncSession) -> list[WebhookOut]:
    found = await session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at))
    return [out(e) for e in found]


async def get_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> WebhookOut:
    return out(await _endpoint(session, endpoint_id))


async def update_endpoint(
    session: AsyncSession,
    access: TenantAccess,
    endpoint_id: uuid.UUID,
    *,
    settings: Settings,
    data: WebhookUpdate,
) -> WebhookOut:
    """Change what was given; enabling a disabled endpoint sends what it kept."""
    endpoint = await _endpoint(session, endpoint_id, lock=True)
    changes: dict[str, Any] = {}
    if data.url is not msgspec.UNSET:
        changes["url"] = await _checked_url(settings, data.url)
    if data.event_types is not msgspec.UNSET:
        changes["event_types"] = sorted(set(data.event_types))
    if data.description is not msgspec.UNSET:
        changes["description"] = data.description
    if data.enabled is not msgspec.UNSET:
        changes["enabled"] = data.enabled
    changes = {k: v for k, v in changes.items() if getattr(endpoint, k) != v}
    if not changes:
        return out(endpoint)
    shown = {k: shown_url(v) if k == "url" else v for k, v in changes.items()}
    before = {
        k: shown_url(getattr(endpoint, k)) if k == "url" else getattr(endpoint, k) for k in changes
    }
    for name, value in changes.items():
        setattr(endpoint, name, value)
    endpoint.updated_at = func.now()
    if changes.get("enabled") is True:
        # A fresh start: its failures are forgotten and what it kept is due now.
        endpoint.disabled_reason = None
        endpoint.disabled_at = None
        endpoint.failure_streak = 0
        endpoint.failing_since = None
        endpoint.retry_at = None
    await session.flush()
    if changes.get("enabled") is True:
        await dispatch.ensure_drain(session, endpoint.id, datetime.now(UTC), access.tenant.slug)
    updated = WebhookEndpointUpdated(endpoint_id=str(endpoint.id), before=before, after=shown)
    await record_change(session, access.principal, updated, tenant=access.tenant.slug)
    await session.refresh(endpoint)
    return out(endpoint)


async def delete_endpoint(
    session: AsyncSession, access: TenantAccess, endpoint_id: uuid.UUID
) -> None:
    """The endpoint, its deliveries and its log go; the tenant's events stay in its history."""
    endpoint = await _endpoint(session, endpoint_id, lock=True)
    url = shown_url(endpoint.url)
    await session.delete(endpoint)
    await session.flush()
    # The last endpoint gone, the relay stops routing the tenant's events to webhooks. The
    # listing's row lock orders this against an endpoint created at the same moment (which
    # takes it too): whichever commits second sees the other's endpoint, or lists it again.
    await session.execute(_LOCK_LISTING, {"tenant": access.tenant.id})
    await session.execute(_UNLIST_WITHOUT_ENDPOINTS, {"tenant": access.tenant.id})
    deleted = WebhookEndpointDeleted(endpoint_id=str(endpoint_id), url=url)
    await record_change(session, access.principal, deleted, tenant=access.tenant.slug)


async def rotate_secret(
    session: AsyncSession,
    access: TenantAccess,
    endpoint_id: uuid.UUID,
    *,
    settings: Settings,
    vault: Vault,
    data: SecretRotation,
) -> WebhookOut:
    """A new signing secret (in this answer only); the current one keeps signing too for the
    overlap, so receivers can switch without missing a delivery."""
    endpoint = await _endpoint(session, endpoint_id, lock=True)
    hours = settings.webhook_secret_overlap_h if data.overlap_hours is None else data.overlap_hours
    secret = new_secret()
    now = datetime.now(UTC)
    if hours > 0:
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + timedelta(hours=hours)
    else:
        endpoint.previous_secret = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret = await dispatch.seal_secret(
        session, vault, access.tenant.id, endpoint.id, secret
    )
    endpoint.updated_at = func.now()
    await session.flush()
    await session.refresh(endpoint)
    expires = endpoint.previous_secret_expires_at
    rotated = WebhookSecretRotated(
        endpoint_id=str(endpoint.id),
        previous_valid_until=expires.isoformat() if expires else None,
    )
    await record_change(session, access.principal, rotated, tenant=access.tenant.slug)
    return out(endpoint, signing_secret=secret)


async def test_delivery(
    session: AsyncSession,
    access: TenantAccess,
    endpoint_id: uuid.UUID,
    *,
    settings: Settings,
    vault: Vault,
    http: httpx.AsyncClient,
    release: Callable[[], Awaitable[None]],
) -> TestDeliveryOut:
    """Send a `webhook.test` event now, signed as any delivery, and tell what came back (it
    changes nothing: the answer is the record).

    The endpoint is sent to with no connection held: `release` ends the request's (read-only)
    transaction first, so a slow endpoint holds no pooled connection for as long as it takes."""
    endpoint = await _endpoint(session, endpoint_id)
    secrets = await dispatch.signing_secrets(session, vault, access.tenant.id, endpoint)
    endpoint_ref, url = endpoint.id, endpoint.url
    await release()
    webhook_id = f"test_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    body = body_of(
        TEST_EVENT_TYPE,
        now,
        {
            "endpoint_id": str(endpoint_ref),
            "tenant": access.tenant.slug,
            "sent_by": access.principal.actor,
        },
    )
    answer = await send(http, settings, url, secrets=secrets, webhook_id=webhook_id, body=body)
    delivered = answer.result is Result.DELIVERED
    return TestDeliveryOut(
        delivered=delivered,
        status_code=answer.status,
        latency_ms=answer.latency_ms,
        error=answer.error,
        response_excerpt=answer.excerpt,
        webhook_id=webhook_id,
    )


# -- replay -------------------------------------------------------------------------------------

# The tenant's kept events from a point on, oldest first, settled (no later commit can land
# behind them), within its retention.
_REPLAYED = """
SELECT event_id, event_type, occurred_at, payload FROM shared.event_history
WHERE tenant_id = :tenant AND occurred_at >= now() - make_interval(days => :days)
  AND txid < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint
"""
_SINCE = " AND occurred_at >= :since"
# The endpoint's types: exact ones, and patterns ("post.*") by their prefix ("post.").
_OF_TYPES = """ AND (event_type = ANY(CAST(:exact AS text[]))
  OR EXISTS (SELECT 1 FROM unnest(CAST(:prefixes AS text[])) AS p(prefix)
             WHERE starts_with(event_type, p.prefix)))"""
_FROM_EVENT = """ AND (txid, seq) >= (
    SELECT txid, seq FROM shared.event_history WHERE tenant_id = :tenant AND event_id = :event_id
    ORDER BY txid LIMIT 1)"""
_REPLAY_ORDER = " ORDER BY txid, seq LIMIT :limit"
# Made due again, or made: an event's delivery keeps its id (its webhook-id), so a receiver that
# has it already sees a duplicate it can drop; one still pending stays as it is.
_REDELIVER = text("""
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, body, next_attempt_at)
SELECT :endpoint, e.event_id, e.event_type, e.body, now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:bodies AS text[]))
     AS e(event_id, event_type, body)
ON CONFLICT (endpoint_id, event_id) DO UPDATE
SET state = 'pending', attempts = 0, next_attempt_at = now(), created_at = now(),
    last_error = NULL, last_status = NULL, delivered_at = NULL
WHERE webhook_deliveries.state <> 'pending'
""")


async def replay(
    session: AsyncSession,
    access: TenantAccess,
    endpoint_id: uuid.UUID,
    *,
    settings: Settings,
    data: ReplayRequest,
) -> ReplayOut:
    """Send the endpoint the kept events (of its types) from an event or a time on, again:
    with their own ids as `webhook-id`, so receivers drop what they have. One replay per
    endpoint per WEBHOOK_REPLAY_INTERVAL_S; at most WEBHOOK_REPLAY_MAX_EVENTS events."""
    if (data.from_event_id is None) == (data.since is None):
        raise invalid("since", "give either from_event_id or since", source="body")
    endpoint = await _endpoint(session, endpoint_id, lock=True)
    now = datetime.now(UTC)
    interval = timedelta(seconds=settings.webhook_replay_interval_s)
    if endpoint.last_replay_at is not None and endpoint.last_replay_at + interval > now:
        wait = int((endpoint.last_replay_at + interval - now).total_seconds()) + 1
        raise Problem(
            429,
            "rate-limited",
            f"This endpoint was replayed moments ago; try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )
    limits = await quota.limits_for(session, access.tenant)
    sql = _REPLAYED
    params: dict[str, Any] = {
        "tenant": access.tenant.id,
        "days": limits.event_retention_days,
        "limit": settings.webhook_replay_max_events,
    }
    if data.since is not None:
        since = data.since if data.since.tzinfo else data.since.replace(tzinfo=UTC)
        sql += _SINCE
        params["since"] = since
    else:
        sql += _FROM_EVENT
        params["event_id"] = data.from_event_id
        known = await session.scalar(
            text(
                "SELECT 1 FROM shared.event_history WHERE tenant_id = :tenant "
                "AND event_id = :event_id"
            ),
            {"tenant": access.tenant.id, "event_id": data.from_event_id},
        )
        if known is None:
            raise Problem(404, "not-found", f"No kept event {data.from_event_id}.")
    if "*" not in endpoint.event_types:
        sql += _OF_TYPES
        params["exact"] = [t for t in endpoint.event_types if not t.endswith(".*")]
        params["prefixes"] = [t[:-1] for t in endpoint.event_types if t.endswith(".*")]
    chosen = (await session.execute(text(sql + _REPLAY_ORDER), params)).all()
    if chosen:
        await session.execute(
            _REDELIVER,
            {
                "endpoint": endpoint.id,
                "ids": [r.event_id for r in chosen],
                "types": [r.event_type for r in chosen],
                "bodies": [body_of(r.event_type, r.occurred_at, r.payload) for r in chosen],
            },
        )
    endpoint.last_replay_at = now
    await session.flush()
    if chosen and endpoint.enabled:
        await dispatch.ensure_drain(session, endpoint.id, now, access.tenant.slug)
    requested = WebhookReplayRequested(
        endpoint_id=str(endpoint.id),
        events=len(chosen),
        from_event_id=str(data.from_event_id) if data.from_event_id else None,
        since=data.since.isoformat() if data.since else None,
    )
    await record_change(session, access.principal, requested, tenant=access.tenant.slug)
    # At the limit there may be more: the answer says so (replay again from the last one).
    complete = len(chosen) < settings.webhook_replay_max_events
    last = chosen[-1].event_id if chosen else None
    return ReplayOut(events=len(chosen), complete=complete, last_event_id=last)


# -- the delivery log ---------------------------------------------------------------------------


async def list_attempts(
    session: AsyncSession, endpoint_id: uuid.UUID, page: PageRequest
) -> Page[AttemptOut]:
    """The endpoint's attempts, newest first."""
    await _endpoint(session, endpoint_id)
    query = select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
    if page.after is not None:
        query = query.where(WebhookAttempt.id < page.after[0])
    rows = (
        await session.scalars(query.order_by(WebhookAttempt.id.desc()).limit(page.limit + 1))
    ).all()
    items = [
        AttemptOut(
            id=a.id,
            event_id=a.event_id,
            event_type=a.event_type,
            attempt=a.attempt,
            outcome=a.outcome,
            status_code=a.status_code,
            latency_ms=a.latency_ms,
            error=a.error,
            response_excerpt=a.response_excerpt,
            created_at=a.created_at,
        )
        for a in rows[: page.limit]
    ]
    more = len(rows) > page.limit
    return Page(items, encode_cursor((items[-1].id,)) if more else None)


# -- secrets under a rotated data key -------------------------------------------------------------


async def reseal_webhook_secrets(
    session: AsyncSession, vault: Vault, tenant_id: uuid.UUID, old_version: int
) -> int:
    """Re-encrypt the tenant's signing secrets sealed under `old_version` with its active data
    key (a `rotate_tenant_key` callback; the session is in the tenant's schema)."""
    count = 0
    for endpoint in await session.scalars(select(WebhookEndpoint).with_for_update()):
        for column in ("secret", "previous_secret"):
            sealed: bytes | None = getattr(endpoint, column)
            if sealed is None or SealedSecret.from_bytes(bytes(sealed)).key_version != old_version:
                continue
            resealed = await vault.reseal(
                session, tenant_id, dispatch.SECRET_PURPOSE, endpoint.id, sealed
            )
            setattr(endpoint, column, resealed.to_bytes())
            count += 1
    return count


# -- the catalogue of event types ---------------------------------------------------------------


def event_types(events: list[type[DomainEvent]]) -> list[EventTypeOut]:
    """Each event a webhook can receive, with the JSON schema of its `data`."""
    return [
        EventTypeOut(
            type=event.event_type,
            aggregate_type=event.aggregate_type,
            description=(inspect.getdoc(event) or event.event_type).split("\n\n")[0],
            schema=msgspec.json.schema(event),
        )
        for event in sorted(events, key=lambda e: e.event_type)
        if not event.internal
    ]
