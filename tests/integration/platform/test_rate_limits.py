"""Rate limits hold exactly across API processes sharing Redis, and say when to come back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import redis
from litestar.testing import AsyncTestClient

from socialflow.app import create_app
from socialflow.settings import Settings
from tests.integration.tenancy_fixtures import Platform, World


async def test_fifty_concurrent_requests_over_two_instances_admit_exactly_the_limit(
    platform: Platform, world: World, settings: Settings, redis_client: object
) -> None:
    tight = settings.model_copy(update={"rate_limit_user_per_minute": 10})
    account = await platform.user()
    async with (
        AsyncTestClient(create_app(tight)) as one,
        AsyncTestClient(create_app(tight)) as two,
    ):
        responses = await asyncio.gather(
            *((one if i % 2 else two).get("/api/v1/me", headers=account.headers) for i in range(50))
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 40
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["type"] == "/problems/rate-limited"
    assert 0 < int(limited.headers["retry-after"]) <= 60
    admitted = next(r for r in responses if r.status_code == 200)
    assert admitted.headers["ratelimit-limit"] == "10"
    assert int(admitted.headers["ratelimit-remaining"]) < 10


async def test_a_tenant_is_limited_by_its_plan_whoever_calls(
    platform: Platform, world: World, settings: Settings, redis_client: redis.Redis
) -> None:
    # The tenant's requests a minute come from the plans service: its override of the plan.
    await platform.entitle(world.operator, world.tenant_a, api_requests_per_minute=4)
    redis_client.flushdb()  # the override's own request counted against the tenant
    async with AsyncTestClient(create_app(settings)) as client:
        url = f"/api/v1/tenants/{world.tenant_a}/settings"
        responses = [
            await client.get(url, headers=who.headers)
            for who in (world.owner_a, world.admin_x, world.owner_a, world.owner_a, world.owner_a)
        ]
        other = await client.get(
            f"/api/v1/tenants/{world.tenant_b}/settings", headers=world.owner_b.headers
        )
    # The agency admin's call (403, not a member) still counts against the tenant.
    assert [r.status_code for r in responses] == [200, 403, 200, 200, 429]
    assert other.status_code == 200
    # Passing the plan's rate is the plan's quota: a 429 that says which, and until when.
    refused = responses[-1]
    problem = refused.json()
    assert problem["type"] == "/problems/quota-exceeded"
    assert problem["resource"] == "api_requests_per_minute"
    assert (problem["limit"], problem["used"]) == (4, 4)
    resets_at = datetime.fromisoformat(problem["resets_at"])
    assert 0 < (resets_at - datetime.now(UTC)).total_seconds() <= 61
    assert 0 < int(refused.headers["retry-after"]) <= 60
