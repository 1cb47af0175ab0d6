"""Deliveries in the database: made from an event, claimed for sending, settled from the answer,
and the endpoint's drain kept scheduled.

How a delivery travels:
- An event of a subscribed type makes one delivery per matching enabled endpoint (`fan_out`).
  A healthy endpoint gets it sent at once by the same actor, after the commit: the delivery is
  leased (`next_attempt_at` moved past the send's bound), so a worker that dies mid-send leaves
  it due again for the endpoint's drain, which is always scheduled by then (`ensure_drain`).
- A failed attempt is retried with exponential backoff and jitter (RETRY_SCHEDULE_S, about
  three days in all: WEBHOOK_RETRY_WINDOW_H); a receiver's Retry-After is honoured. It also
  marks the endpoint failing: from then on one attempt at a time probes it, at the endpoint's
  own backoff, and its other deliveries wait behind the probe instead of each hammering a
  receiver that is down. The first success ends that: what waited is due at once and the
  drain sends the backlog oldest event first (what is due goes in the order of its events).
- Retries are scheduled by deferred outbox events (`webhook_endpoint.due`, one per endpoint
  and time, not per delivery): they survive any process's crash, and a receiver down for a
  day costs one row per probe, not one per event. (The broker's own delays would hold every
  retry in Redis and lose the order across an endpoint's backlog.)
- 410 Gone disables the endpoint at once; failing for WEBHOOK_DISABLE_AFTER_FAILURES attempts
  in a row over WEBHOOK_DISABLE_AFTER_H disables it too, and its admins are emailed. A
  disabled endpoint keeps its pending deliveries: enabling it again sends them.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.audit.record import record_change
from socialflow.outbox.events import Event
from socialflow.settings import Settings
from socialflow.vault.service import Vault
from socialflow.webhooks.events import WebhookEndpointDisabled, WebhookEndpointDue
from socialflow.webhooks.models import WebhookDelivery, WebhookEndpoint
from socialflow.webhooks.sending import Answer, Result, body_of

SYSTEM = "system:webhooks"
SECRET_PURPOSE = "webhook_secret"  # noqa: S105 - a vault purpose name, not a secret
# Seconds before the n-th retry (then the last one again, until the retry window closes).
RETRY_SCHEDULE_S = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200)
JITTER = 0.2
LOG_RETENTION_DAYS = 30  # settled deliveries and their attempts are kept this long


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken for sending, with what sending needs (secrets only in memory)."""

    delivery_id: int
    endpoint_id: uuid.UUID
    url: str
    secrets: tuple[str, ...] = field(repr=False)
    event_id: uuid.UUID
    event_type: str
    body: str
    attempt: int  # this attempt's number
    probe: bool = False  # the one attempt at a failing endpoint


def backoff_s(failures: int) -> float:
    """The wait after the `failures`-th failure in a row, with jitter (never in lockstep)."""
    base = RETRY_SCHEDULE_S[min(max(failures, 1), len(RETRY_SCHEDULE_S)) - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not a secret


def type_matches(patterns: list[str], event_type: str) -> bool:
    """Whether an endpoint asking for `patterns` ("post.*", "*", or exact types) gets the type."""
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def claim_size(settings: Settings) -> int:
    """Deliveries one drain step claims: two rounds of requests in flight at most."""
    return min(settings.webhook_drain_batch, settings.webhook_concurrency * 2)


def lease_s(settings: Settings) -> float:
    """How long a claimed delivery may take before it is due again: past the bound of the
    requests before and with it in its step (a claim's two rounds), with a round to spare."""
    rounds = math.ceil(claim_size(settings) / settings.webhook_concurrency) + 1
    return settings.webhook_timeout_s * max(rounds, 3)


async def seal_secret(
    session: AsyncSession, vault: Vault, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, secret: str
) -> bytes:
    return (await vault.encrypt(session, tenant_id, SECRET_PURPOSE, endpoint_id, secret)).to_bytes()


class SecretHolder(Protocol):
    """An endpoint's row, or the columns of it that hold its secrets."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def secret(self) -> bytes: ...
    @property
    def previous_secret(self) -> bytes | None: ...
    @property
    def previous_secret_expires_at(self) -> datetime | None: ...


async def signing_secrets(
    session: AsyncSession, vault: Vault, tenant_id: uuid.UUID, endpoint: SecretHolder
) -> tuple[str, ...]:
    """The secrets that sign now: the current one, and the previous one during its overlap."""
    opened = [await vault.decrypt(session, tenant_id, SECRET_PURPOSE, endpoint.id, endpoint.secret)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret is not None and expires is not None and expires > _now():
        opened.append(
            await vault.decrypt(
                session, tenant_id, SECRET_PURPOSE, endpoint.id, endpoint.previous_secret
            )
        )
    return tuple(opened)


def _now() -> datetime:
    return datetime.now(UTC)


# -- making deliveries ----------------------------------------------------------------------------


async def fan_out(
    session: AsyncSession,
    event: Event,
    *,
    settings: Settings,
    vault: Vault,
    tenant_id: uuid.UUID,
    tenant: str,
) -> list[Claimed]:
    """One delivery of `event` per enabled endpoint that asks for its type; those of healthy
    endpoints come back leased, to be sent at once."""
    # Shared with every other fan-out of the tenant, exclusive with a drain settling its
    # schedule: the drain then sees these deliveries, and the drain times read below stand.
    await session.execute(_FAN_OUT_LOCK, {"cls": LOCK_CLASS, "key": str(tenant_id)})
    endpoints = (await session.execute(_ENABLED_ENDPOINTS)).all()
    matching = [e for e in endpoints if type_matches(e.event_types, event.event_type)]
    if not matching:
        return []
    now = _now()
    leased_until = now + timedelta(seconds=lease_s(settings))
    body = body_of(event.event_type, _occurred_at(event, now), event.payload)
    dues = [leased_until if e.failure_streak == 0 else now for e in matching]
    made: dict[uuid.UUID, int] = dict(
        (
            await session.execute(
                _MAKE_DELIVERIES,
                {
                    "ids": [e.id for e in matching],
                    "dues": dues,
                    "event_id": event.event_id,
                    "event_type": event.event_type,
                    "body": body,
                },
            )
        ).all()
    )
    claimed = []
    for endpoint in matching:
        delivery_id = made.get(endpoint.id)
        if delivery_id is None:
            continue  # made before (a replay, or this event delivered again)
        healthy = endpoint.failure_streak == 0
        drain_at = leased_until if healthy else max(now, endpoint.retry_at or now)
        scheduled = endpoint.drain_at
        if scheduled is None or scheduled <= now or scheduled > drain_at:
            # Only then is the endpoint's row locked: most events find their drain scheduled.
            await ensure_drain(session, endpoint.id, drain_at, tenant)
        if healthy:
            secrets = await signing_secrets(session, vault, tenant_id, endpoint)
            claimed.append(
                Claimed(
                    delivery_id,
                    endpoint.id,
                    endpoint.url,
                    secrets,
                    event.event_id,
                    event.event_type,
                    body,
                    1,
                )
            )
    return claimed


_ENABLED_ENDPOINTS = text("""
SELECT id, url, event_types, failure_streak, retry_at, drain_at, secret, previous_secret,
       previous_secret_expires_at
FROM webhook_endpoints WHERE enabled ORDER BY id
""")
_MAKE_DELIVERIES = text("""
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, body, next_attempt_at)
SELECT e.id, :event_id, :event_type, :body, e.due
FROM unnest(CAST(:ids AS uuid[]), CAST(:dues AS timestamptz[])) AS e(id, due)
ON CONFLICT (endpoint_id, event_id) DO NOTHING
RETURNING endpoint_id, id
""")


def _occurred_at(event: Event, default: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(event.occurred_at)
    except ValueError:
        return default
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- the endpoint's drain -------------------------------------------------------------------------

LOCK_CLASS = 7_310_200  # advisory locks of a tenant's webhook schedule (see fan_out)
_FAN_OUT_LOCK = text("SELECT pg_advisory_xact_lock_shared(:cls, hashtext(:key))")
_SETTLE_LOCK = text("SELECT pg_advisory_xact_lock(:cls, hashtext(:key))")

# Moves the endpoint's drain earlier (never later), locking its row: a drain settling its
# schedule waits for this transaction, then sees the delivery it made.
_DRAIN_EARLIER = text("""
WITH before AS (SELECT id, drain_at FROM webhook_endpoints WHERE id = :id FOR NO KEY UPDATE)
UPDATE webhook_endpoints AS e
SET drain_at = CASE WHEN before.drain_at IS NULL OR before.drain_at <= now()
                         OR before.drain_at > :at
                    THEN :at ELSE before.drain_at END
FROM before WHERE e.id = before.id
RETURNING before.drain_at, before.drain_at IS NULL OR before.drain_at <= now()
          OR before.drain_at > :at AS scheduled
""")


async def ensure_drain(
    session: AsyncSession, endpoint_id: uuid.UUID, at: datetime, tenant: str
) -> None:
    """A drain of the endpoint is scheduled no later than `at` (an event is written only when
    none was, or only a later one, or one whose time has passed: it ran, or died running)."""
    found = (await session.execute(_DRAIN_EARLIER, {"id": endpoint_id, "at": at})).first()
    if found is None:
        return  # deleted meanwhile
    if found.scheduled:
        await _schedule(session, endpoint_id, at, tenant)


async def _schedule(
    session: AsyncSession, endpoint_id: uuid.UUID, at: datetime, tenant: str
) -> None:
    due = None if at <= _now() else at
    event = WebhookEndpointDue(endpoint_id=str(endpoint_id))
    await record_change(session, SYSTEM, event, tenant=tenant, available_at=due)


async def settle_schedule(
    session: AsyncSession, endpoint_id: uuid.UUID, *, tenant: str, tenant_id: uuid.UUID
) -> None:
    """After a drain: schedule the next one for the endpoint's earliest pending delivery (not
    before the endpoint may be tried again), or none; forget its old settled deliveries. The
    tenant's schedule lock orders this after every transaction still making a delivery (its
    statements then see them), and keeps new ones waiting until this commits."""
    await session.execute(_SETTLE_LOCK, {"cls": LOCK_CLASS, "key": str(tenant_id)})
    endpoint = (
        await session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .with_for_update(key_share=True)
        )
    ).one_or_none()
    if endpoint is None:
        return
    await session.execute(_FORGET_SETTLED, {"id": endpoint_id, "days": LOG_RETENTION_DAYS})
    earliest = await session.scalar(
        select(WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.state == "pending")
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(1)
    )
    now = _now()
    if not endpoint.enabled or earliest is None:
        endpoint.drain_at = None
        return
    at = max(earliest, endpoint.retry_at or earliest)
    if endpoint.drain_at is None or endpoint.drain_at <= now or endpoint.drain_at > at:
        endpoint.drain_at = at
        await _schedule(session, endpoint_id, at, tenant)


# Settled deliveries (and, with them, their attempts) past the log's retention, a batch at a
# time: each drain takes its share, so no endpoint's log grows without bound.
_FORGET_SETTLED = text("""
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE endpoint_id = :id AND state <> 'pending'
      AND created_at < now() - make_interval(days => :days)
    LIMIT 1000)
""")


async def claim_due(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    *,
    settings: Settings,
    vault: Vault,
    tenant_id: uuid.UUID,
    tenant: str,
) -> list[Claimed]:
    """The endpoint's due deliveries, oldest event first, leased for sending: a batch while it
    is healthy, one (the probe) while it fails, none before it may be tried again."""
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    now = _now()
    if endpoint is None or not endpoint.enabled:
        return []
    probe = bool(endpoint.failure_streak)
    if probe:
        # One probe at a time: the row lock orders two drains, and the one that probes moves
        # the endpoint's retry time past its lease, so the other finds it not yet due.
        await session.refresh(endpoint, with_for_update={"key_share": True})
        if not endpoint.failure_streak:
            probe = False
        elif endpoint.retry_at is not None and endpoint.retry_at > now:
            return []
    limit = 1 if probe else claim_size(settings)
    rows = (
        await session.execute(
            select(
                WebhookDelivery.id,
                WebhookDelivery.event_id,
                WebhookDelivery.event_type,
                WebhookDelivery.body,
                WebhookDelivery.attempts,
            )
            .where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.state == "pending",
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not rows:
        return []
    leased_until = now + timedelta(seconds=lease_s(settings))
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_([r.id for r in rows]))
        .values(next_attempt_at=leased_until)
    )
    if probe:
        endpoint.retry_at = leased_until
    # Whatever becomes of this step, a drain comes back for what it leased.
    await ensure_drain(session, endpoint_id, leased_until, tenant)
    secrets = await signing_secrets(session, vault, tenant_id, endpoint)
    return [
        Claimed(
            r.id,
            endpoint_id,
            endpoint.url,
            secrets,
            r.event_id,
            r.event_type,
            r.body,
            r.attempts + 1,
            probe,
        )
        for r in rows
    ]


# -- settling answers -----------------------------------------------------------------------------

_DELIVERED = text("""
UPDATE webhook_deliveries AS d
SET state = 'delivered', delivered_at = now(), attempts = d.attempts + 1, last_error = NULL,
    last_status = s.status
FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS int[])) AS s(id, status)
WHERE d.id = s.id AND d.state = 'pending'
""")
# A failed attempt: due again after its backoff, or given up once past the retry window.
_RETRY = text("""
UPDATE webhook_deliveries
SET attempts = attempts + 1, last_status = :status, last_error = :error,
    next_attempt_at = :next,
    state = CASE WHEN created_at < :expired THEN 'failed' ELSE state END
WHERE id = :id AND state = 'pending'
RETURNING state
""")


_LOG_ATTEMPTS = text("""
INSERT INTO webhook_attempts (endpoint_id, delivery_id, event_id, event_type, attempt, outcome,
                              status_code, latency_ms, error, response_excerpt)
SELECT * FROM unnest(
    CAST(:endpoint_ids AS uuid[]), CAST(:delivery_ids AS bigint[]), CAST(:event_ids AS text[]),
    CAST(:event_types AS text[]), CAST(:attempts AS int[]), CAST(:outcomes AS text[]),
    CAST(:statuses AS int[]), CAST(:latencies AS int[]), CAST(:errors AS text[]),
    CAST(:excerpts AS text[]))
""")
_STREAKS = text("SELECT id, failure_streak FROM webhook_endpoints WHERE id = ANY(:ids)")


async def record_answers(
    session: AsyncSession,
    sent: list[tuple[Claimed, Answer]],
    *,
    settings: Settings,
    tenant: str,
) -> set[uuid.UUID]:
    """Settle each delivery from its answer, log the attempts, and update each endpoint's
    health (recovered, failing, disabled), in a few statements whatever the count. Returns the
    endpoints that are healthy and enabled."""
    if not sent:
        return set()
    now = _now()
    statuses = {c.delivery_id: a.status for c, a in sent if a.result is Result.DELIVERED}
    if statuses:
        await session.execute(
            _DELIVERED, {"ids": list(statuses), "statuses": list(statuses.values())}
        )
    failures: dict[uuid.UUID, list[tuple[Claimed, Answer]]] = {}
    given_up: set[int] = set()
    expired = now - timedelta(hours=settings.webhook_retry_window_h)
    for claimed, answer in sent:
        if answer.result is Result.DELIVERED:
            continue
        failures.setdefault(claimed.endpoint_id, []).append((claimed, answer))
        wait = max(backoff_s(claimed.attempt), answer.retry_after_s or 0.0)
        state = await session.scalar(
            _RETRY,
            {
                "id": claimed.delivery_id,
                "status": answer.status,
                "error": answer.error,
                "next": now + timedelta(seconds=wait),
                "expired": expired,
            },
        )
        if state == "failed":
            given_up.add(claimed.delivery_id)
    rows = [_attempt_row(c, a, gave_up=c.delivery_id in given_up) for c, a in sent]
    await session.execute(
        _LOG_ATTEMPTS, {name: [row[key] for row in rows] for key, name in _ATTEMPT_COLUMNS}
    )
    endpoint_ids = sorted({c.endpoint_id for c, _ in sent})
    # Healthy endpoints are not locked on success: only those failing, or failing before.
    streaks: dict[uuid.UUID, int] = dict(
        (await session.execute(_STREAKS, {"ids": endpoint_ids})).all()
    )
    healthy = {e for e in endpoint_ids if streaks.get(e) == 0 and e not in failures}
    for endpoint_id in endpoint_ids:
        if endpoint_id in healthy or endpoint_id not in streaks:
            continue
        endpoint = (
            await session.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id)
                .with_for_update(key_share=True)
            )
        ).one_or_none()
        if endpoint is None:
            continue
        if endpoint_id in failures:
            await _failed(
                session, endpoint, failures[endpoint_id], settings=settings, tenant=tenant
            )
            continue
        await _recovered(session, endpoint, settings)
        await ensure_drain(session, endpoint.id, now, tenant)
        if endpoint.enabled:
            healthy.add(endpoint_id)
    return healthy


_ATTEMPT_COLUMNS = (
    ("endpoint_id", "endpoint_ids"),
    ("delivery_id", "delivery_ids"),
    ("event_id", "event_ids"),
    ("event_type", "event_types"),
    ("attempt", "attempts"),
    ("outcome", "outcomes"),
    ("status_code", "statuses"),
    ("latency_ms", "latencies"),
    ("error", "errors"),
    ("response_excerpt", "excerpts"),
)


def _attempt_row(claimed: Claimed, answer: Answer, *, gave_up: bool) -> dict[str, Any]:
    outcome = {Result.DELIVERED: "delivered", Result.GONE: "gone"}.get(
        answer.result, "failed" if gave_up else "retrying"
    )
    return {
        "endpoint_id": claimed.endpoint_id,
        "delivery_id": claimed.delivery_id,
        "event_id": str(claimed.event_id),
        "event_type": claimed.event_type,
        "attempt": claimed.attempt,
        "outcome": outcome,
        "status_code": answer.status,
        "latency_ms": answer.latency_ms,
        "error": answer.error,
        "response_excerpt": answer.excerpt,
    }


async def _recovered(session: AsyncSession, endpoint: WebhookEndpoint, settings: Settings) -> None:
    """The endpoint answers again: its backlog is due now (sent oldest event first). Leases
    (within the send's bound) are left to their senders."""
    endpoint.failure_streak = 0
    endpoint.failing_since = None
    endpoint.retry_at = None
    await session.execute(
        text(
            "UPDATE webhook_deliveries SET next_attempt_at = now() "
            "WHERE endpoint_id = :id AND state = 'pending' "
            "AND next_attempt_at > now() + make_interval(secs => :lease)"
        ),
        {"id": endpoint.id, "lease": lease_s(settings)},
    )


async def _failed(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    failures: list[tuple[Claimed, Answer]],
    *,
    settings: Settings,
    tenant: str,
) -> None:
    """Failing: the next probe after the endpoint's backoff; disabled on 410 Gone or after
    failing long enough."""
    now = _now()
    waits = [a.retry_after_s or 0.0 for _, a in failures]
    probed = any(c.probe for c, _ in failures)
    if probed or endpoint.retry_at is None or endpoint.retry_at <= now:
        # A new failure of the endpoint (its probe, or the first while it was healthy); the
        # others of a batch already under way when it went down count as one.
        endpoint.failure_streak += 1
        endpoint.failing_since = endpoint.failing_since or now
        wait = max(backoff_s(endpoint.failure_streak), *waits)
        endpoint.retry_at = now + timedelta(seconds=wait)
    elif max(waits) > 0:
        endpoint.retry_at = max(endpoint.retry_at, now + timedelta(seconds=max(waits)))
    endpoint.failing_since = endpoint.failing_since or now
    gone = any(a.result is Result.GONE for _, a in failures)
    failing_for = now - endpoint.failing_since
    worn_out = (
        endpoint.failure_streak >= settings.webhook_disable_after_failures
        and failing_for >= timedelta(hours=settings.webhook_disable_after_h)
    )
    if not endpoint.enabled:
        return
    if gone or worn_out:
        reason = (
            "The receiver answered 410 Gone."
            if gone
            else f"Every attempt failed for {failing_for.total_seconds() / 3600:.0f} hours "
            f"({endpoint.failure_streak} in a row)."
        )
        endpoint.enabled = False
        endpoint.disabled_reason = reason
        endpoint.disabled_at = now
        endpoint.drain_at = None
        disabled = WebhookEndpointDisabled(
            endpoint_id=str(endpoint.id), reason=reason, failure_streak=endpoint.failure_streak
        )
        await record_change(session, SYSTEM, disabled, tenant=tenant)
        return
    await session.flush()
    await ensure_drain(session, endpoint.id, endpoint.retry_at, tenant)
