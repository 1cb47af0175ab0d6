"""Monthly resources (posts, AI spend): a counter per billing period, exact under concurrency,
released by rollback, reset on the anchor day in the tenant's time zone, 80 % warned once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from socialflow.access.directory import TenantDirectory, TenantRef
from socialflow.db.session import unit_of_work
from socialflow.lib.problems import Problem
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from tests.integration.tenancy_fixtures import Platform, World


async def _tenant(platform: Platform, slug: str) -> TenantRef:
    async with unit_of_work(platform.factory) as session:
        tenant = await TenantDirectory(ttl_s=0).find(session, slug)
    assert tenant is not None
    return tenant


async def _reserve(
    platform: Platform, tenant: TenantRef, resource: Resource, amount: Any = 1, **kw: Any
) -> quota.Quota | Problem:
    try:
        async with unit_of_work(platform.factory) as session:
            return await quota.reserve(session, tenant, resource, amount, **kw)
    except Problem as refused:
        return refused


def _events(pg: psycopg.Connection[Any], slug: str, prefix: str = "quota.") -> list[Any]:
    return pg.execute(
        "SELECT event_type, payload FROM shared.outbox WHERE tenant = %s AND event_type LIKE %s "
        "ORDER BY id",
        (slug, prefix + "%"),
    ).fetchall()


async def test_fifty_concurrent_posts_for_the_last_ten_of_the_month_admit_exactly_ten(
    platform: Platform, world: World
) -> None:
    await platform.entitle(world.operator, world.tenant_a, posts_per_month=10)
    tenant = await _tenant(platform, world.tenant_a)
    outcomes = await asyncio.gather(
        *(_reserve(platform, tenant, Resource.POSTS_PER_MONTH) for _ in range(50))
    )
    taken = [o for o in outcomes if isinstance(o, quota.Quota)]
    refused = [o for o in outcomes if isinstance(o, Problem)]
    assert len(taken) == 10
    assert sorted(q.used for q in taken) == [Decimal(n) for n in range(1, 11)]
    assert {(r.status, r.kind) for r in refused} == {(409, "quota-exceeded")}
    check = await _check(platform, tenant, Resource.POSTS_PER_MONTH)
    assert (check.allowed, check.remaining) == (False, 0)


async def _check(platform: Platform, tenant: TenantRef, resource: Resource) -> quota.Check:
    async with unit_of_work(platform.factory) as session:
        return await quota.check(session, tenant, resource)


async def test_a_rollback_gives_the_reservation_back(platform: Platform, world: World) -> None:
    await platform.entitle(world.operator, world.tenant_a, posts_per_month=1)
    tenant = await _tenant(platform, world.tenant_a)

    async def reserve_then_fail() -> None:
        async with unit_of_work(platform.factory) as session:
            await quota.reserve(session, tenant, Resource.POSTS_PER_MONTH)
            raise RuntimeError("the post could not be written")

    with pytest.raises(RuntimeError):
        await reserve_then_fail()
    assert (await _check(platform, tenant, Resource.POSTS_PER_MONTH)).allowed
    assert isinstance(await _reserve(platform, tenant, Resource.POSTS_PER_MONTH), quota.Quota)


async def test_the_month_resets_on_the_anchor_day_in_the_tenants_time_zone(
    platform: Platform, world: World
) -> None:
    settings = await platform.client.put(
        f"/api/v1/tenants/{world.tenant_a}/settings",
        json={"timezone": "Pacific/Auckland"},
        headers=world.owner_a.headers,
    )
    assert settings.status_code == 200, settings.text
    patched = await platform.client.patch(
        f"/api/v1/tenants/{world.tenant_a}/entitlements",
        json={"overrides": {"posts_per_month": 2}, "billing_anchor_day": 15},
        headers=world.admin_x.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["billing_anchor_day"] == 15
    tenant = await _tenant(platform, world.tenant_a)
    # 23:59 on 14 January in Auckland (UTC+13), then midnight of the 15th.
    last_minute = datetime(2027, 1, 14, 10, 59, tzinfo=UTC)
    new_month = datetime(2027, 1, 14, 11, 0, tzinfo=UTC)

    for _ in range(2):
        taken = await _reserve(platform, tenant, Resource.POSTS_PER_MONTH, now=last_minute)
        assert isinstance(taken, quota.Quota)
    full = await _reserve(platform, tenant, Resource.POSTS_PER_MONTH, now=last_minute)
    assert isinstance(full, Problem)
    assert full.extra["resets_at"] == new_month.isoformat()  # midnight in Auckland, in UTC

    fresh = await _reserve(platform, tenant, Resource.POSTS_PER_MONTH, now=new_month)
    assert isinstance(fresh, quota.Quota)
    assert fresh.used == 1
    assert fresh.resets_at == datetime(2027, 2, 14, 11, 0, tzinfo=UTC)


async def test_changing_the_time_zone_or_anchor_never_restarts_the_months_count(
    platform: Platform, world: World
) -> None:
    await platform.entitle(world.operator, world.tenant_a, posts_per_month=3)
    tenant = await _tenant(platform, world.tenant_a)
    for _ in range(3):
        assert isinstance(await _reserve(platform, tenant, Resource.POSTS_PER_MONTH), quota.Quota)
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu"):
        changed = await platform.client.put(
            f"/api/v1/tenants/{world.tenant_a}/settings",
            json={"timezone": zone},
            headers=world.owner_a.headers,
        )
        assert changed.status_code == 200, changed.text
        refused = await _reserve(platform, tenant, Resource.POSTS_PER_MONTH)
        assert isinstance(refused, Problem), zone
        assert refused.extra["used"] == 3
    for day in (1, 28, 31):
        await platform.client.patch(
            f"/api/v1/tenants/{world.tenant_a}/entitlements",
            json={"billing_anchor_day": day},
            headers=world.admin_x.headers,
        )
        refused = await _reserve(platform, tenant, Resource.POSTS_PER_MONTH)
        assert isinstance(refused, Problem), day


async def test_ai_spend_is_counted_in_dollars_and_adjusted_to_the_real_cost(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    await platform.entitle(world.operator, world.tenant_a, ai_spend_usd_per_month=1.5)
    tenant = await _tenant(platform, world.tenant_a)
    estimate = await _reserve(platform, tenant, Resource.AI_SPEND_USD_PER_MONTH, Decimal("0.75"))
    assert isinstance(estimate, quota.Quota)
    async with unit_of_work(platform.factory) as session:
        real = await quota.adjust(
            session, tenant, Resource.AI_SPEND_USD_PER_MONTH, Decimal("-0.250125")
        )
    assert real.used == Decimal("0.499875")
    assert real.remaining == Decimal("1.000125")
    over = await _reserve(platform, tenant, Resource.AI_SPEND_USD_PER_MONTH, Decimal("1.01"))
    assert isinstance(over, Problem)
    assert (over.extra["limit"], over.extra["used"]) == (1.5, 0.499875)
    assert over.extra["resource"] == "ai_spend_usd_per_month"


async def test_eighty_percent_is_warned_once_and_exceeding_is_noticed_once(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    await platform.entitle(world.operator, world.tenant_a, posts_per_month=5)
    tenant = await _tenant(platform, world.tenant_a)
    for _ in range(7):
        await _reserve(platform, tenant, Resource.POSTS_PER_MONTH)
    events = [(e[0], e[1]["used"], e[1]["limit"]) for e in _events(pg, world.tenant_a)]
    assert events == [("quota.warning", 4.0, 5.0), ("quota.exceeded", 5.0, 5.0)]
    payload = _events(pg, world.tenant_a)[0][1]
    assert payload["resource"] == "posts_per_month"
    assert datetime.fromisoformat(payload["resets_at"]) > datetime.now(UTC)


async def test_a_lowered_limit_blocks_new_use_and_takes_nothing_back(
    platform: Platform, world: World
) -> None:
    tenant = await _tenant(platform, world.tenant_a)
    for _ in range(4):
        assert isinstance(await _reserve(platform, tenant, Resource.POSTS_PER_MONTH), quota.Quota)
    lowered = await platform.entitle(world.operator, world.tenant_a, posts_per_month=2)
    assert lowered["over_limit"] == [{"resource": "posts_per_month", "limit": 2, "used": 4}]
    refused = await _reserve(platform, tenant, Resource.POSTS_PER_MONTH)
    assert isinstance(refused, Problem)
    assert (refused.extra["limit"], refused.extra["used"]) == (2, 4)
    usage = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/usage", headers=world.owner_a.headers
    )
    posts = next(r for r in usage.json()["resources"] if r["resource"] == "posts_per_month")
    assert (posts["limit"], posts["used"], posts["remaining"]) == (2, 4, 0)
