"""AI budgets and the usage ledger: reserve a call's upper bound before it is made, settle to
what it cost after, release what a failed call never spent.

The reservation raises the tenant's monthly AI spend (plans.quota, a conditional upsert that
never passes the limit) in the transaction that writes the call's ledger row `reserved`, so
however many workers reserve at once, the calls made can never spend past the budget — the
leak of gateways that check before and count after. Settling corrects the month's counter by
(real cost - reserved) in the billing period the reservation was made in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.problems import Problem
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from socialflow.plans.quota import QuotaTenant

AI_SPEND = Resource.AI_SPEND_USD_PER_MONTH

_INSERT = text("""
INSERT INTO ai_usage (id, created_at, operation, model, key_source, reserved_usd,
                      media_id, event_id, request_id)
VALUES (:id, :created_at, :operation, :model, :key_source, :reserved, :media_id, :event_id,
        :request_id)
""")
_SETTLE = text("""
UPDATE ai_usage SET cost_usd = :cost, prompt_tokens = :prompt_tokens,
       completion_tokens = :completion_tokens, latency_ms = :latency_ms, outcome = :outcome,
       error_type = :error_type, settled_at = now()
WHERE id = :id AND outcome = 'reserved'
RETURNING reserved_usd, created_at
""")
# A call settled after its reservation was released (abandoned) is counted in full.
_SETTLE_RELEASED = text("""
UPDATE ai_usage SET cost_usd = :cost, prompt_tokens = :prompt_tokens,
       completion_tokens = :completion_tokens, latency_ms = :latency_ms, outcome = :outcome,
       error_type = :error_type, settled_at = now()
WHERE id = :id
RETURNING created_at
""")
_ABANDON = text("""
UPDATE ai_usage SET outcome = 'abandoned', settled_at = now()
WHERE outcome = 'reserved' AND (event_id = :event_id OR created_at < :stale_before)
RETURNING reserved_usd, created_at
""")
_ATTEMPTS = text("""
SELECT outcome, count(*) AS n FROM ai_usage
WHERE event_id = :event_id AND operation = :operation GROUP BY outcome
""")


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    amount: Decimal
    reserved_at: datetime


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


async def reserve_call(
    session: AsyncSession,
    tenant: QuotaTenant,
    *,
    operation: str,
    model: str,
    key_source: str,
    amount: Decimal,
    media_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    request_id: str | None = None,
) -> Reservation:
    """Reserve `amount` of the tenant's AI budget for one call and write its ledger row, in the
    caller's transaction (the session is in the tenant's schema). BudgetExceeded when it does
    not fit: nothing is reserved or written then (a savepoint is rolled back)."""
    now = datetime.now(UTC)
    if amount > 0:
        try:
            async with session.begin_nested():
                await quota.reserve(session, tenant, AI_SPEND, amount, now=now)
        except Problem as refused:
            if refused.kind != "quota-exceeded":
                raise
            raise BudgetExceeded(refused) from None
    reservation = Reservation(uuid.uuid4(), amount, now)
    params = {
        "id": reservation.id,
        "created_at": now,
        "operation": operation,
        "model": model,
        "key_source": key_source,
        "reserved": amount,
        "media_id": media_id,
        "event_id": event_id,
        "request_id": request_id,
    }
    await session.execute(_INSERT, params)
    return reservation


async def settle(
    session: AsyncSession, tenant: QuotaTenant, reservation: Reservation, result: Settlement
) -> None:
    """Record what the call cost and correct the month's spend by (cost - reserved)."""
    params = {
        "id": reservation.id,
        "cost": result.cost,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "latency_ms": result.latency_ms,
        "outcome": result.outcome,
        "error_type": result.error_type,
    }
    row = (await session.execute(_SETTLE, params)).first()
    if row is not None:
        delta = result.cost - Decimal(row.reserved_usd)
        at = row.created_at
    else:  # released meanwhile (a redelivery took it for a lost call): count it all
        at = (await session.execute(_SETTLE_RELEASED, params)).scalar_one()
        delta = result.cost
    if delta != 0:
        await quota.adjust(session, tenant, AI_SPEND, delta, now=at)


async def release_abandoned(
    session: AsyncSession,
    tenant: QuotaTenant,
    *,
    event_id: uuid.UUID,
    stale_after_s: int,
) -> int:
    """Give back reservations of calls that never settled: those of `event_id` (a delivery
    that died mid-call; this one makes the call again) and any older than `stale_after_s`."""
    stale_before = datetime.now(UTC) - timedelta(seconds=stale_after_s)
    rows = (
        await session.execute(_ABANDON, {"event_id": event_id, "stale_before": stale_before})
    ).all()
    await _give_back(session, tenant, [(Decimal(r.reserved_usd), r.created_at) for r in rows])
    return len(rows)


async def _give_back(
    session: AsyncSession, tenant: QuotaTenant, amounts: Sequence[tuple[Decimal, datetime]]
) -> None:
    for amount, at in amounts:
        if amount > 0:
            await quota.adjust(session, tenant, AI_SPEND, -amount, now=at)


async def attempts(session: AsyncSession, *, event_id: uuid.UUID, operation: str) -> dict[str, int]:
    """The ledger's outcomes of the calls made for one event (retries count themselves)."""
    rows = await session.execute(_ATTEMPTS, {"event_id": event_id, "operation": operation})
    return {row.outcome: int(row.n) for row in rows}
