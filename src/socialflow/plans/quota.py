"""The entitlements service every feature asks: `check` (may this tenant use this much, and
how much is left?) and `reserve` (use it, inside the caller's transaction).

Exact under concurrency, released by rollback:
- a *stock* resource (seats, storage, media items …) is counted from the feature's own rows
  under a transaction-scoped advisory lock on (tenant, resource): of two requests for the last
  seat, the second counts after the first commits (or rolls back) and sees its row;
- a *monthly* resource (posts, AI spend) is a counter row per billing period, raised by one
  conditional upsert that never passes the limit; the row lock orders concurrent reservations.

A limit lowered below what is used (a downgrade) blocks new use and takes nothing away.
Crossing 80 % emits `quota.warning` with the use; a refusal emits `quota.exceeded` (at most
once per period; for AI spend, `ai.budget.warning` and `ai.budget.exceeded`) in a
transaction of its own once the caller's has rolled back.
"""

from __future__ import annotations

import calendar
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from socialflow.audit.record import record_change
from socialflow.db.rows import fetch_rows
from socialflow.db.session import after_transaction
from socialflow.db.tenant_schema import quote_schema
from socialflow.lib.problems import Problem
from socialflow.plans.events import QuotaThreshold, threshold_events
from socialflow.plans.limits import STOCK_COUNTS, Limits, Measure, Resource, effective

WARNING_RATIO = Decimal("0.8")
SYSTEM_QUOTA = "system:quota"  # the actor of quota events

ENTITLEMENTS_SQL = text("""
SELECT t.plan, to_jsonb(p) AS plan_values, coalesce(e.overrides, '{}'::jsonb) AS overrides,
       coalesce(e.billing_anchor_day,
                extract(day FROM t.created_at AT TIME ZONE 'UTC')::int) AS anchor_day,
       e.period_start, e.period_end
FROM shared.tenants t
JOIN shared.plans p ON p.name = t.plan
LEFT JOIN shared.tenant_entitlements e ON e.tenant_id = t.id
WHERE t.id = :tenant
""")
# The period the tenant's monthly use is counted in from now on, unless one still runs.
PIN_PERIOD_SQL = text(
    "UPDATE shared.tenant_entitlements SET period_start = :start, period_end = :end "
    "WHERE tenant_id = :tenant AND (period_end IS NULL OR period_end <= :now)"
)
# Serialises the reservations of one stock resource of one tenant until the transaction ends.
LOCK_SQL = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
USED_SQL = text(
    "SELECT used FROM shared.tenant_usage "
    "WHERE tenant_id = :tenant AND resource = :resource AND period_start = :period"
)
# Raise the period's counter by :amount unless that passes :limit (NULL: no limit); nothing
# is returned when it would. A new row needs no check: :amount <= :limit was checked first.
# Also the first part of statements that write what the raise pays for in the same statement
# (ai.ledger's reservation): one statement, one transaction, the row's lock never held across
# a round trip of the client.
RAISE = """
INSERT INTO shared.tenant_usage AS u (tenant_id, resource, period_start, used)
VALUES (:tenant, :resource, :period, :amount)
ON CONFLICT (tenant_id, resource, period_start) DO UPDATE
    SET used = u.used + EXCLUDED.used, updated_at = now()
    WHERE CAST(:limit AS numeric) IS NULL OR u.used + EXCLUDED.used <= CAST(:limit AS numeric)
RETURNING used
"""
RESERVE_SQL = text(RAISE)
ADJUST_SQL = text("""
INSERT INTO shared.tenant_usage AS u (tenant_id, resource, period_start, used)
VALUES (:tenant, :resource, :period, greatest(CAST(:amount AS numeric), 0))
ON CONFLICT (tenant_id, resource, period_start) DO UPDATE
    SET used = greatest(u.used + CAST(:amount AS numeric), 0), updated_at = now()
RETURNING used
""")
NOTICE_SQL = text(
    "INSERT INTO shared.quota_notices (tenant_id, resource, period_start) "
    "VALUES (:tenant, :resource, :period) ON CONFLICT DO NOTHING RETURNING 1"
)


class QuotaTenant(Protocol):
    """What the service needs of a tenant (`access.directory.TenantRef` has it)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def slug(self) -> str: ...
    @property
    def schema_name(self) -> str: ...


@dataclass(frozen=True)
class TenantKey:
    """A tenant as the service needs it, for callers that hold no TenantRef."""

    id: uuid.UUID
    slug: str
    schema_name: str


@dataclass(frozen=True)
class Quota:
    """One resource of one tenant: its limit (None = unlimited), what is used, and when a
    monthly one starts again."""

    resource: Resource
    limit: Decimal | None
    used: Decimal
    resets_at: datetime | None = None
    # The billing period a monthly use was counted in (what `adjust(period_start=)` corrects).
    period_start: datetime | None = None

    @property
    def remaining(self) -> Decimal | None:
        return None if self.limit is None else max(self.limit - self.used, Decimal(0))

    @property
    def over_limit(self) -> bool:
        """More is used than the limit allows (after a limit was lowered)."""
        return self.limit is not None and self.used > self.limit

    def allows(self, amount: Decimal | int) -> bool:
        return self.limit is None or self.used + amount <= self.limit


@dataclass(frozen=True)
class Check:
    allowed: bool
    quota: Quota

    @property
    def remaining(self) -> Decimal | None:
        return self.quota.remaining


def number(resource: Resource, value: Decimal | None) -> int | float | None:
    """A limit or a use as the API shows it: whole units, dollars as a number."""
    if value is None:
        return None
    return float(value) if resource.is_money else int(value)


def quota_exceeded(quota: Quota, amount: Decimal | int = 1) -> Problem:
    """The `quota-exceeded` problem (409) for a use `quota` cannot take."""
    resource = quota.resource
    limit, used = number(resource, quota.limit), number(resource, quota.used)
    return Problem(
        409,
        "quota-exceeded",
        f"The plan allows {limit} {resource.value.replace('_', ' ')}; {used} used, "
        f"{number(resource, Decimal(amount))} more asked.",
        resource=resource.value,
        limit=limit,
        used=used,
        resets_at=quota.resets_at.isoformat() if quota.resets_at else None,
    )


# -- entitlements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entitlements:
    limits: Limits
    anchor_day: int
    # The billing period monthly use was last counted in, as it was pinned then.
    period: tuple[datetime, datetime] | None = None


async def entitlements_for(session: AsyncSession, tenant: QuotaTenant) -> Entitlements:
    """The tenant's effective limits (its plan, then its overrides) and its billing anchor."""
    # A hot statement (db.rows): every AI call and many requests read it.
    ((plan, plan_values, overrides, anchor_day, period_start, period_end),) = await fetch_rows(
        session, ENTITLEMENTS_SQL, {"tenant": tenant.id}
    )
    period = (period_start, period_end) if period_end is not None else None
    return Entitlements(effective(plan, plan_values, overrides), anchor_day, period)


async def limits_for(session: AsyncSession, tenant: QuotaTenant) -> Limits:
    return (await entitlements_for(session, tenant)).limits


# -- billing periods ------------------------------------------------------------------------


def billing_period(now: datetime, anchor_day: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The billing period holding `now`: from the last anchor day (00:00 in the tenant's time
    zone; the month's last day when it is shorter) to the next. Both in UTC."""
    local = now.astimezone(zone)
    year, month = local.year, local.month
    start = _anchor(year, month, anchor_day, zone)
    if start > local:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        start = _anchor(year, month, anchor_day, zone)
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    end = _anchor(next_year, next_month, anchor_day, zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _anchor(year: int, month: int, day: int, zone: ZoneInfo) -> datetime:
    return datetime(year, month, min(day, calendar.monthrange(year, month)[1]), tzinfo=zone)


async def tenant_zone(session: AsyncSession, tenant: QuotaTenant) -> ZoneInfo:
    """The tenant's time zone, from its general settings (UTC if it names none we know)."""
    found = await session.execute(
        text(f"SELECT timezone FROM {quote_schema(tenant.schema_name)}.settings WHERE id = 1")  # noqa: S608 - a validated, quoted schema name
    )
    name = found.scalar_one_or_none() or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


async def current_period(
    session: AsyncSession,
    tenant: QuotaTenant,
    entitlements: Entitlements,
    now: datetime | None = None,
    *,
    pin: bool = False,
) -> tuple[datetime, datetime]:
    """The billing period holding `now`. A period, once use was counted in it, runs to its
    end as it was: a time zone or anchor day changed meanwhile applies from the next one, and
    the next starts where it ended (never earlier), so no change restarts a month's count.
    With `pin` (what counts use), a new period is recorded for the tenant."""
    now = now or datetime.now(UTC)
    pinned = entitlements.period
    if pinned is not None and pinned[0] <= now < pinned[1]:
        return pinned
    zone = await tenant_zone(session, tenant)
    start, end = billing_period(now, entitlements.anchor_day, zone)
    if pinned is not None and now >= pinned[1]:
        start = max(start, pinned[1])
    if pin and (pinned is None or now >= pinned[1]):
        params = {"tenant": tenant.id, "start": start, "end": end, "now": now}
        await session.execute(PIN_PERIOD_SQL, params)
    return start, end


# -- use ------------------------------------------------------------------------------------


async def quota_of(
    session: AsyncSession,
    tenant: QuotaTenant,
    resource: Resource,
    *,
    entitlements: Entitlements | None = None,
    now: datetime | None = None,
) -> Quota:
    """What the tenant may use of `resource` and has used (the current period's, if monthly).
    Rates are the rate limiter's: their use here is 0."""
    entitlements = entitlements or await entitlements_for(session, tenant)
    limit = entitlements.limits.limit(resource)
    if resource.measure is Measure.STOCK:
        return Quota(resource, limit, await _stock_used(session, tenant, resource))
    if resource.measure is Measure.MONTHLY:
        start, end = await current_period(session, tenant, entitlements, now)
        used = await _monthly_used(session, tenant, resource, start)
        return Quota(resource, limit, used, end)
    return Quota(resource, limit, Decimal(0))


async def check(
    session: AsyncSession, tenant: QuotaTenant, resource: Resource, amount: Decimal | int = 1
) -> Check:
    """Whether the tenant may use `amount` more of `resource` now, and what remains; takes
    nothing (a later `reserve` decides)."""
    quota = await quota_of(session, tenant, resource)
    return Check(quota.allows(amount), quota)


async def reserve(
    session: AsyncSession,
    tenant: QuotaTenant,
    resource: Resource,
    amount: Decimal | int = 1,
    *,
    counted_by: str | None = None,
    now: datetime | None = None,
) -> Quota:
    """Use `amount` of `resource` in the caller's transaction, or raise the `quota-exceeded`
    problem. Stock: the caller then writes its row (the lock is held until it commits);
    `counted_by` counts the use another way than the resource's own (limits.MEMBER_SEATS).
    Monthly: the period's counter is raised now. A rollback gives it all back."""
    if amount <= 0:
        raise ValueError("reserve a positive amount")
    if resource.measure is Measure.RATE:
        raise ValueError(f"{resource} is counted by the rate limiter")
    entitlements = await entitlements_for(session, tenant)
    limit = entitlements.limits.limit(resource)
    if resource.measure is Measure.STOCK:
        await hold(session, tenant, resource)
        used = await _stock_used(session, tenant, resource, counted_by)
        quota = Quota(resource, limit, used)
        if not quota.allows(amount):
            await _refused(session, tenant, quota, amount, _day(now))
        after = Quota(resource, limit, used + amount)
    else:
        start, end = await current_period(session, tenant, entitlements, now, pin=True)
        params = {
            "tenant": tenant.id,
            "resource": resource.value,
            "period": start,
            "amount": Decimal(amount),
            "limit": limit,
        }
        raised = None
        if limit is None or amount <= limit:
            raised = (await session.execute(RESERVE_SQL, params)).scalar_one_or_none()
        if raised is None:
            used = await _monthly_used(session, tenant, resource, start)
            await _refused(session, tenant, Quota(resource, limit, used, end), amount, start)
        after = Quota(resource, limit, Decimal(raised), end, start)
    await _warn_on_crossing(session, tenant, after, amount)
    return after


async def hold(session: AsyncSession, tenant: QuotaTenant, resource: Resource) -> None:
    """Take the lock `reserve` takes for a stock resource, until the transaction ends: for a
    caller that must change the resource's rows (replace an invitation) before reserving."""
    await session.execute(LOCK_SQL, {"key": f"quota:{tenant.id}:{resource.value}"})


async def adjust(
    session: AsyncSession,
    tenant: QuotaTenant,
    resource: Resource,
    amount: Decimal | int,
    *,
    now: datetime | None = None,
    period_start: datetime | None = None,
) -> Quota:
    """Correct a monthly use by `amount` (negative gives back), never refused: what a call
    really cost once it is known, after `reserve` took an estimate. `period_start`: the period
    the use was counted in (`Quota.period_start` of the reservation), else the one holding
    `now`."""
    if resource.measure is not Measure.MONTHLY:
        raise ValueError(f"{resource} is counted from its rows, not adjusted")
    entitlements = await entitlements_for(session, tenant)
    start, current_end = await current_period(session, tenant, entitlements, now, pin=True)
    end: datetime | None = current_end
    if period_start is not None and period_start != start:
        start, end = period_start, None  # an earlier period: no notice is due for it
    params = {"tenant": tenant.id, "resource": resource.value, "period": start, "amount": amount}
    used = Decimal((await session.execute(ADJUST_SQL, params)).scalar_one())
    after = Quota(resource, entitlements.limits.limit(resource), used, end, start)
    if amount > 0 and end is not None:
        await _warn_on_crossing(session, tenant, after, amount)
        if after.over_limit:  # the real cost passed what the estimate left
            _notice_after_transaction(session, tenant, after, start)
    return after


async def usage(
    session: AsyncSession, tenant: QuotaTenant, *, now: datetime | None = None
) -> tuple[Entitlements, list[Quota]]:
    """Every resource of the tenant, with its limit and use."""
    entitlements = await entitlements_for(session, tenant)
    quotas = [
        await quota_of(session, tenant, resource, entitlements=entitlements, now=now)
        for resource in Resource
    ]
    return entitlements, quotas


async def _stock_used(
    session: AsyncSession,
    tenant: QuotaTenant,
    resource: Resource,
    counted_by: str | None = None,
) -> Decimal:
    count = counted_by if counted_by is not None else STOCK_COUNTS.get(resource)
    if count is None:
        return Decimal(0)
    # The schema is validated and quoted; the count is a constant of plans.limits.
    statement = text(count.format(schema=quote_schema(tenant.schema_name)))
    return Decimal((await session.execute(statement, {"tenant": tenant.id})).scalar_one())


async def _monthly_used(
    session: AsyncSession, tenant: QuotaTenant, resource: Resource, start: datetime
) -> Decimal:
    params = {"tenant": tenant.id, "resource": resource.value, "period": start}
    used = (await session.execute(USED_SQL, params)).scalar_one_or_none()
    return Decimal(used or 0)


def _day(now: datetime | None) -> datetime:
    """Today (UTC): the period of a stock resource's `quota.exceeded` notices."""
    today = (now or datetime.now(UTC)).astimezone(UTC)
    return today.replace(hour=0, minute=0, second=0, microsecond=0)


def _event_fields(quota: Quota) -> dict[str, Any]:
    return {
        "resource": quota.resource.value,
        "limit": float(quota.limit) if quota.limit is not None else -1.0,
        "used": float(quota.used),
        "resets_at": quota.resets_at.isoformat() if quota.resets_at else None,
    }


async def noted_use(
    engine: AsyncEngine,
    tenant: QuotaTenant,
    after: Quota,
    amount: Decimal | int,
    period: datetime,
) -> None:
    """After a use counted by a statement of its own (no transaction of the caller's): the
    warning if it crossed the threshold, `quota.exceeded` if it went past the limit (a cost
    known only afterwards), each in a transaction of its own."""
    if after.limit is None or after.limit == 0:
        return
    if amount > 0 and after.used - amount < after.limit * WARNING_RATIO <= after.used:
        async with AsyncSession(engine) as session, session.begin():
            await _warn_on_crossing(session, tenant, after, amount)
    if amount > 0 and after.over_limit:
        await _notice_exceeded(engine, tenant, after, period)


async def noted_refusal(
    engine: AsyncEngine, tenant: QuotaTenant, quota: Quota, period: datetime
) -> None:
    """After a use refused by a statement of its own: `quota.exceeded` noted, once per
    tenant, resource and period (the caller answers `quota_exceeded`)."""
    await _notice_exceeded(engine, tenant, quota, period)


async def _warn_on_crossing(
    session: AsyncSession, tenant: QuotaTenant, after: Quota, amount: Decimal | int
) -> None:
    if after.limit is None or after.limit == 0:
        return
    threshold = after.limit * WARNING_RATIO
    if after.used - amount < threshold <= after.used:
        warning: QuotaThreshold = threshold_events(after.resource.value)[0](**_event_fields(after))
        await record_change(session, SYSTEM_QUOTA, warning, tenant=tenant.slug)


async def _refused(
    session: AsyncSession,
    tenant: QuotaTenant,
    quota: Quota,
    amount: Decimal | int,
    period: datetime,
) -> NoReturn:
    """Raise the problem. The refusal is noted once the caller's transaction has ended (it
    rolls back) in a transaction of its own: `quota.exceeded` once per tenant, resource and
    period. Not before: holding a second connection while waiting for it could starve the
    pool when many requests are refused at once."""
    _notice_after_transaction(session, tenant, quota, period)
    raise quota_exceeded(quota, amount)


def _notice_after_transaction(
    session: AsyncSession, tenant: QuotaTenant, quota: Quota, period: datetime
) -> None:
    bind = session.bind
    engine = bind.engine if isinstance(bind, AsyncConnection) else bind

    async def notice() -> None:
        if engine is not None:
            await _notice_exceeded(engine, tenant, quota, period)

    after_transaction(session, notice)


async def _notice_exceeded(
    engine: AsyncEngine, tenant: QuotaTenant, quota: Quota, period: datetime
) -> None:
    async with AsyncSession(engine) as session, session.begin():
        params = {"tenant": tenant.id, "resource": quota.resource.value, "period": period}
        if (await session.execute(NOTICE_SQL, params)).first() is not None:
            exceeded = threshold_events(quota.resource.value)[1](**_event_fields(quota))
            await record_change(session, SYSTEM_QUOTA, exceeded, tenant=tenant.slug)
