"""The AI budget: a call's upper bound reserved before it is made, exact under concurrency,
settled to the real cost, released when nothing was spent, given back when a delivery died."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from socialflow.access.directory import TenantDirectory, TenantRef
from socialflow.ai import ledger
from socialflow.db.session import unit_of_work
from socialflow.db.tenant_schema import search_path_for
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from tests.integration.tenancy_fixtures import Platform, World

DIME = Decimal("0.100000")


async def _with_a_dollar(platform: Platform, world: World) -> TenantRef:
    """Tenant A with a monthly AI budget of one dollar."""
    await platform.entitle(world.operator, world.tenant_a, ai_spend_usd_per_month=1.0)
    return await _tenant(platform, world.tenant_a)


def _budget_events(pg: psycopg.Connection[Any], slug: str) -> list[Any]:
    return pg.execute(
        "SELECT event_type FROM shared.outbox WHERE tenant = %s AND event_type LIKE 'ai.budget.%%'",
        (slug,),
    ).fetchall()


async def _tenant(platform: Platform, slug: str) -> TenantRef:
    async with unit_of_work(platform.factory) as session:
        tenant = await TenantDirectory(ttl_s=0).find(session, slug)
    assert tenant is not None
    return tenant


def _engine(platform: Platform) -> AsyncEngine:
    engine: AsyncEngine = platform.factory.kw["bind"]
    return engine


async def _reserve(
    platform: Platform, tenant: TenantRef, amount: Decimal, **kw: Any
) -> ledger.Reservation | None:
    async with unit_of_work(platform.factory) as session:
        allowance = await ledger.allowance(session, tenant)
    try:
        return await ledger.reserve_call(
            _engine(platform),
            tenant,
            allowance,
            operation="caption",
            model="openai/gpt-4o-mini",
            key_source="byok",
            amount=amount,
            **kw,
        )
    except ledger.BudgetExceeded:
        return None


async def _enter(session: Any, tenant: TenantRef) -> None:
    await session.execute(
        text("SELECT set_config('search_path', :p, true)"),
        {"p": search_path_for(tenant.schema_name)},
    )


async def _spent(platform: Platform, tenant: TenantRef) -> Decimal:
    async with unit_of_work(platform.factory) as session:
        return (await quota.quota_of(session, tenant, Resource.AI_SPEND_USD_PER_MONTH)).used


def _ledger(pg: psycopg.Connection[Any], tenant: TenantRef) -> list[Any]:
    return pg.execute(
        f'SELECT outcome, reserved_usd, cost_usd FROM "{tenant.schema_name}".ai_usage '
        "ORDER BY created_at"
    ).fetchall()


async def test_a_hundred_concurrent_reservations_against_a_budget_for_ten_admit_exactly_ten(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant = await _with_a_dollar(platform, world)
    outcomes = await asyncio.gather(*(_reserve(platform, tenant, DIME) for _ in range(100)))
    taken = [o for o in outcomes if o is not None]
    assert len(taken) == 10
    assert await _spent(platform, tenant) == Decimal("1.0")
    rows = _ledger(pg, tenant)
    assert len(rows) == 10  # a refused reservation writes no ledger row
    assert {r[0] for r in rows} == {"reserved"}
    events = _budget_events(pg, world.tenant_a)
    assert sorted(e[0] for e in events) == ["ai.budget.exceeded", "ai.budget.warning"]


async def test_settling_charges_the_real_cost_and_releasing_gives_everything_back(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant = await _with_a_dollar(platform, world)
    paid = await _reserve(platform, tenant, DIME)
    failed = await _reserve(platform, tenant, DIME)
    assert paid is not None
    assert failed is not None
    assert await _spent(platform, tenant) == Decimal("0.2")
    engine = _engine(platform)
    await ledger.settle(
        engine,
        tenant,
        paid,
        ledger.Settlement("ok", cost=Decimal("0.003"), prompt_tokens=900, completion_tokens=80),
    )
    await ledger.settle(engine, tenant, failed, ledger.Settlement("failed"))
    assert await _spent(platform, tenant) == Decimal("0.003")
    assert sorted((r[0], r[2]) for r in _ledger(pg, tenant)) == [
        ("failed", Decimal(0)),
        ("ok", Decimal("0.003")),
    ]


async def _lost_dime(
    platform: Platform, world: World
) -> tuple[TenantRef, uuid.UUID, ledger.Reservation]:
    """A dime reserved by a delivery of an event that then died mid-call."""
    tenant = await _with_a_dollar(platform, world)
    event_id = uuid.uuid4()
    lost = await _reserve(platform, tenant, DIME, event_id=event_id)
    assert lost is not None
    return tenant, event_id, lost


async def test_a_redelivery_gives_back_what_the_lost_delivery_reserved(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant, event_id, lost = await _lost_dime(platform, world)
    async with unit_of_work(platform.factory) as session:
        await _enter(session, tenant)
        kept = await ledger.release_abandoned(
            session, tenant, event_id=event_id, stale_after_s=900, call_over_s=90
        )
        # Made just now, it may be a duplicate delivery's call still running: it stays.
        assert kept == 0
        assert await _spent(platform, tenant) == DIME
        # Once a call could no longer be running (here: at once), it is given back.
        released = await ledger.release_abandoned(
            session, tenant, event_id=event_id, stale_after_s=900, call_over_s=0
        )
    assert released == 1
    assert await _spent(platform, tenant) == Decimal(0)
    # The lost call answers after all: its cost is counted in full.
    await ledger.settle(
        _engine(platform), tenant, lost, ledger.Settlement("ok", cost=Decimal("0.02"))
    )
    assert await _spent(platform, tenant) == Decimal("0.02")


def _spent_by_period(pg: psycopg.Connection[Any], tenant: TenantRef) -> list[tuple[Any, Decimal]]:
    rows = pg.execute(
        "SELECT period_start, used FROM shared.tenant_usage "
        "WHERE tenant_id = %s AND resource = 'ai_spend_usd_per_month' ORDER BY period_start",
        (tenant.id,),
    ).fetchall()
    return [(start, Decimal(used)) for start, used in rows]


async def test_a_release_gives_back_to_the_period_the_reservation_counted_in(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant, event_id, lost = await _lost_dime(platform, world)
    [(current, spent)] = _spent_by_period(pg, tenant)
    assert spent == DIME
    # As if reserved in the previous billing period, as that period was then (the anchor day or
    # time zone may have changed since: no period computed today from the row's time is it).
    previous = current - timedelta(days=30, hours=5)
    pg.execute(
        f'UPDATE "{tenant.schema_name}".ai_usage SET period_start = %s WHERE id = %s',
        (previous, lost.id),
    )
    pg.execute(
        "UPDATE shared.tenant_usage SET period_start = %s "
        "WHERE tenant_id = %s AND resource = 'ai_spend_usd_per_month'",
        (previous, tenant.id),
    )
    this_month = await _reserve(platform, tenant, DIME)
    assert this_month is not None
    assert _spent_by_period(pg, tenant) == [(previous, DIME), (current, DIME)]

    async with unit_of_work(platform.factory) as session:
        await _enter(session, tenant)
        released = await ledger.release_abandoned(
            session, tenant, event_id=event_id, stale_after_s=900, call_over_s=0
        )
    assert released == 1
    # The previous period is given its dime back; this month still counts its own.
    assert _spent_by_period(pg, tenant) == [(previous, Decimal(0)), (current, DIME)]


async def test_a_call_that_cost_more_than_reserved_is_counted_in_full_and_warns_once(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant = await _with_a_dollar(platform, world)
    small = await _reserve(platform, tenant, DIME)
    assert small is not None
    await ledger.settle(
        _engine(platform), tenant, small, ledger.Settlement("ok", cost=Decimal("0.85"))
    )
    assert await _spent(platform, tenant) == Decimal("0.85")
    assert [r[0] for r in _ledger(pg, tenant)] == ["ok"]
    events = _budget_events(pg, world.tenant_a)
    assert [e[0] for e in events] == ["ai.budget.warning"]
