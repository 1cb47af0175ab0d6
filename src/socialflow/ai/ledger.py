"""AI budgets and the usage ledger: reserve a call's upper bound before it is made, settle to
what it cost after, release what a failed call never spent.

A reservation is one statement, committed on its own: it raises the tenant's monthly AI spend
(plans.quota's conditional upsert, which never passes the limit) and writes the call's ledger
row `reserved` only if the raise happened, so however many workers reserve at once, the calls
made can never spend past the budget — the leak of gateways that check before and count after.
Settling is one statement too: the ledger row gets the call's outcome and cost, and the month's
counter is corrected by (cost - reserved) in the billing period the reservation was made in.

Why one statement each: every call of a tenant updates the same counter row, and its lock is
held until the transaction ends. In a transaction of several statements it would be held across
the client's round trips (and its event loop's delays): the tenant's calls would queue behind
each other. Committed by the server as the statement ends, it is held for the statement only.
Both run outside the caller's transactions (db.session.autocommitted): between them, the call.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import structlog
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from socialflow.db.session import autocommitted
from socialflow.db.tenant_schema import quote_schema
from socialflow.lib.problems import Problem
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from socialflow.plans.quota import QuotaTenant

log = structlog.get_logger(__name__)

AI_SPEND = Resource.AI_SPEND_USD_PER_MONTH
# What the fleet spends on providers and how its calls end (the ledger has it per tenant).
AI_COST = Counter(
    "socialflow_ai_cost_usd", "Provider cost of settled AI calls, USD", ["operation", "key_source"]
)
AI_CALLS = Counter("socialflow_ai_calls", "AI calls settled, by outcome", ["operation", "outcome"])

_COLUMNS = (
    "id, created_at, period_start, operation, model, key_source, reserved_usd, media_id, "
    "event_id, request_id"
)
_VALUES = (
    ":id, :created_at, :period_start, :operation, :model, :key_source, :reserved, :media_id, "
    ":event_id, :request_id"
)
# The counter raised and, only if it was, the ledger row written: one statement.
_RESERVE = """
WITH raised AS ({raise_}),
written AS (
    INSERT INTO {schema}.ai_usage ({columns}) SELECT {values} FROM raised RETURNING id
)
SELECT used FROM raised
"""
_INSERT = "INSERT INTO {schema}.ai_usage ({columns}) VALUES ({values})"
# The ledger row settled and the counter corrected by what the call cost more or less than
# was reserved (all of it when the reservation was released meanwhile: a redelivery took the
# call for lost and gave it back): one statement.
_SETTLE = """
WITH before AS (
    SELECT id, outcome, reserved_usd FROM {schema}.ai_usage
    WHERE id = :id AND outcome IN ('reserved', 'abandoned') FOR UPDATE
),
settled AS (
    UPDATE {schema}.ai_usage AS a SET cost_usd = :cost, prompt_tokens = :prompt_tokens,
        completion_tokens = :completion_tokens, latency_ms = :latency_ms, outcome = :outcome,
        error_type = :error_type, settled_at = now()
    FROM before WHERE a.id = before.id
    RETURNING CAST(:cost AS numeric)
        - CASE WHEN before.outcome = 'reserved' THEN before.reserved_usd ELSE 0 END AS delta
),
adjusted AS (
    INSERT INTO shared.tenant_usage AS u (tenant_id, resource, period_start, used)
    SELECT :tenant, :resource, :period, greatest(delta, 0) FROM settled WHERE delta <> 0
    ON CONFLICT (tenant_id, resource, period_start) DO UPDATE
        SET used = greatest(u.used + (SELECT delta FROM settled), 0), updated_at = now()
    RETURNING used
)
SELECT settled.delta, (SELECT used FROM adjusted) AS used FROM settled
"""


def _in(schema: str, statement: str) -> str:
    return statement.format(
        schema=quote_schema(schema), columns=_COLUMNS, values=_VALUES, raise_=quota.RAISE
    )


_ABANDON = text("""
UPDATE ai_usage SET outcome = 'abandoned', settled_at = now()
WHERE outcome = 'reserved'
  AND ((event_id = :event_id AND created_at < :over_before) OR created_at < :stale_before)
RETURNING reserved_usd, created_at, period_start
""")
# Whether a delivery of the event holds an unsettled reservation (its own statement).
_HELD = (
    "SELECT 1 FROM {schema}.ai_usage WHERE event_id = :event_id AND outcome = 'reserved' LIMIT 1"
)
_ATTEMPTS = text("""
SELECT outcome, count(*) AS n FROM ai_usage
WHERE event_id = :event_id AND operation = :operation GROUP BY outcome
""")


@dataclass(frozen=True)
class Allowance:
    """What a call reserves against, read in a transaction before: the month's AI budget
    (None: unlimited) and the billing period its spend counts in."""

    limit: Decimal | None
    period_start: datetime
    period_end: datetime
    at: datetime  # when it was read: the reservation's time (its period is this one)


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    amount: Decimal
    reserved_at: datetime
    period_start: datetime
    operation: str = ""
    key_source: str = ""


@dataclass(frozen=True)
class Settlement:
    """What a finished call cost and used."""

    outcome: str  # ok, failed, refused, rate_limited, provider_error, malformed, invalid_key …
    cost: Decimal = Decimal(0)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    error_type: str | None = None


class BudgetExceeded(Exception):
    """The call's upper bound does not fit in what is left of the month's AI budget."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


async def allowance(
    session: AsyncSession, tenant: QuotaTenant, *, now: datetime | None = None
) -> Allowance:
    """The tenant's AI budget now, in the caller's transaction (a new billing period is pinned
    here, before anything counts in it)."""
    now = now or datetime.now(UTC)
    entitlements = await quota.entitlements_for(session, tenant)
    start, end = await quota.current_period(session, tenant, entitlements, now, pin=True)
    return Allowance(entitlements.limits.limit(AI_SPEND), start, end, now)


async def reserve_call(
    engine: AsyncEngine,
    tenant: QuotaTenant,
    allowance: Allowance,
    *,
    operation: str,
    model: str,
    key_source: str,
    amount: Decimal,
    media_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    request_id: str | None = None,
) -> Reservation:
    """Reserve `amount` of the tenant's AI budget for one call and write its ledger row, in a
    statement of its own (never inside a unit of work). BudgetExceeded when it does not fit:
    nothing is reserved or written then. The 80 % warning and the month's one `exceeded` event
    are recorded after, each in a transaction of its own (best effort: the reservation stands).

    The row keeps the billing period the reservation counted in, so a release gives back to
    that period, even across a period's end or a change of anchor day or time zone."""
    now = allowance.at
    reservation = Reservation(
        uuid.uuid4(), amount, now, allowance.period_start, operation, key_source
    )
    params = {
        "id": reservation.id,
        "created_at": now,
        "period_start": allowance.period_start,
        "operation": operation,
        "model": model,
        "key_source": key_source,
        "reserved": amount,
        "media_id": media_id,
        "event_id": event_id,
        "request_id": request_id,
    }
    if amount <= 0:
        await autocommitted(engine, text(_in(tenant.schema_name, _INSERT)), params)
        return reservation
    counter = {
        "tenant": tenant.id,
        "resource": AI_SPEND.value,
        "period": allowance.period_start,
        "amount": amount,
        "limit": allowance.limit,
    }
    raised = None
    if allowance.limit is None or amount <= allowance.limit:
        statement = text(_in(tenant.schema_name, _RESERVE))
        raised = await autocommitted(engine, statement, params | counter)
    if not raised:
        used = await _used(engine, tenant, allowance)
        spent = quota.Quota(AI_SPEND, allowance.limit, used, allowance.period_end)
        await _best_effort(quota.noted_refusal(engine, tenant, spent, allowance.period_start))
        raise BudgetExceeded(quota.quota_exceeded(spent, amount))
    after = quota.Quota(AI_SPEND, allowance.limit, Decimal(raised[0].used), allowance.period_end)
    await _best_effort(quota.noted_use(engine, tenant, after, amount, allowance.period_start))
    return reservation


async def _best_effort(notice: Awaitable[None]) -> None:
    """The warning or notice a committed (or refused) statement calls for: a failure writing
    it must not make the caller take the statement for undone (and pay a call twice)."""
    try:
        await notice
    except Exception:
        log.exception("ai.budget.notice_failed")


async def _used(engine: AsyncEngine, tenant: QuotaTenant, allowance: Allowance) -> Decimal:
    params = {"tenant": tenant.id, "resource": AI_SPEND.value, "period": allowance.period_start}
    rows = await autocommitted(engine, quota.USED_SQL, params)
    return Decimal(rows[0].used) if rows else Decimal(0)


async def settle(
    engine: AsyncEngine, tenant: QuotaTenant, reservation: Reservation, result: Settlement
) -> None:
    """Record what the call cost and correct the month's spend by (cost - reserved), in a
    statement of its own (never inside a unit of work)."""
    params = {
        "id": reservation.id,
        "cost": result.cost,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "latency_ms": result.latency_ms,
        "outcome": result.outcome,
        "error_type": result.error_type,
        "tenant": tenant.id,
        "resource": AI_SPEND.value,
        "period": reservation.period_start,
    }
    rows = await autocommitted(engine, text(_in(tenant.schema_name, _SETTLE)), params)
    if rows:  # settled now (not already by an earlier delivery)
        AI_CALLS.labels(reservation.operation, result.outcome).inc()
        AI_COST.labels(reservation.operation, reservation.key_source).inc(float(result.cost))
    if rows and rows[0].used is not None and rows[0].delta > 0:
        # The call cost more than was reserved (a provider counting otherwise): rare, noted.
        used, delta = Decimal(rows[0].used), Decimal(rows[0].delta)
        await _best_effort(_note_excess(engine, tenant, reservation, used, delta))


async def _note_excess(
    engine: AsyncEngine,
    tenant: QuotaTenant,
    reservation: Reservation,
    used: Decimal,
    delta: Decimal,
) -> None:
    async with AsyncSession(engine) as session:
        entitlements = await quota.entitlements_for(session, tenant)
    after = quota.Quota(AI_SPEND, entitlements.limits.limit(AI_SPEND), used)
    await quota.noted_use(engine, tenant, after, delta, reservation.period_start)


async def release_abandoned(
    session: AsyncSession,
    tenant: QuotaTenant,
    *,
    event_id: uuid.UUID,
    stale_after_s: int,
    call_over_s: float,
) -> int:
    """Give back reservations of calls that never settled: those of `event_id` made longer
    than `call_over_s` ago (a call's timeout and then some: a delivery that died mid-call; this
    one makes the call again), and any older than `stale_after_s`. A younger one of the same
    event may be a duplicate delivery's call still running: it stays counted (the budget then
    errs on the safe side until it settles or goes stale)."""
    now = datetime.now(UTC)
    params = {
        "event_id": event_id,
        "over_before": now - timedelta(seconds=call_over_s),
        "stale_before": now - timedelta(seconds=stale_after_s),
    }
    rows = (await session.execute(_ABANDON, params)).all()
    for row in rows:
        if row.reserved_usd > 0:
            # Rows written before the ledger kept their period: the one holding their time.
            await quota.adjust(
                session,
                tenant,
                AI_SPEND,
                -Decimal(row.reserved_usd),
                now=row.created_at,
                period_start=row.period_start,
            )
    return len(rows)


async def holds_reservation(engine: AsyncEngine, tenant: QuotaTenant, event_id: uuid.UUID) -> bool:
    """Whether a delivery of `event_id` still holds an unsettled reservation (one that died
    mid-call, or a duplicate's call under way), outside any transaction."""
    rows = await autocommitted(engine, text(_in(tenant.schema_name, _HELD)), {"event_id": event_id})
    return bool(rows)


async def attempts(session: AsyncSession, *, event_id: uuid.UUID, operation: str) -> dict[str, int]:
    """The ledger's outcomes of the calls made for one event (retries count themselves)."""
    rows = await session.execute(_ATTEMPTS, {"event_id": event_id, "operation": operation})
    return {row.outcome: int(row.n) for row in rows}
