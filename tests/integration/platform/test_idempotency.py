"""Idempotency-Key: a replayed POST returns the first response and changes nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import redis as redis_lib
from litestar import Litestar, post
from litestar.testing import AsyncTestClient

from tests.integration.tenancy_fixtures import Platform, World, unique


async def test_the_same_key_and_body_replay_the_first_response(
    platform: Platform, world: World, pg: psycopg.Connection[Any], redis_client: redis_lib.Redis
) -> None:
    body = {"slug": unique("ag"), "name": "Replayed"}
    headers = {**world.operator.headers, "Idempotency-Key": str(uuid.uuid4())}
    first = await platform.client.post("/api/v1/agencies", json=body, headers=headers)
    second = await platform.client.post("/api/v1/agencies", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert pg.execute("SELECT count(*) FROM shared.agencies WHERE slug = %s",
                      (body["slug"],)).fetchone() == (1,)  # fmt: skip
    ttl = max(redis_client.ttl(k) for k in redis_client.scan_iter("socialflow:idempotency:*"))
    assert 23 * 3600 < ttl <= 24 * 3600


async def test_the_same_key_with_another_body_is_422(platform: Platform, world: World) -> None:
    headers = {**world.operator.headers, "Idempotency-Key": str(uuid.uuid4())}
    await platform.client.post("/api/v1/agencies", json={"slug": unique("ag"), "name": "a"},
                               headers=headers)  # fmt: skip
    other = await platform.client.post("/api/v1/agencies", json={"slug": unique("ag"), "name": "b"},
                                       headers=headers)  # fmt: skip
    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"


async def test_concurrent_requests_with_one_key_run_once(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    slug = unique("once")
    headers = {**world.operator.headers, "Idempotency-Key": str(uuid.uuid4())}
    body = {"slug": slug, "name": slug, "agency": world.agency_x, "plan": "pro",
            "owner_email": f"{slug}@example.com"}  # fmt: skip
    responses = await asyncio.gather(
        *(platform.client.post("/api/v1/tenants", json=body, headers=headers) for _ in range(4))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 201
    assert set(statuses) <= {201, 409}
    for response in responses:
        if response.status_code == 409:
            assert response.json()["type"] == "/problems/idempotency-in-progress"
    assert pg.execute("SELECT count(*) FROM shared.tenants WHERE slug = %s",
                      (slug,)).fetchone() == (1,)  # fmt: skip


async def test_a_client_error_is_kept_and_replayed_like_any_answer(
    platform: Platform, world: World
) -> None:
    headers = {**world.admin_x.headers, "Idempotency-Key": str(uuid.uuid4())}
    body = {"slug": unique("ag"), "name": "x"}
    refused = await platform.client.post("/api/v1/agencies", json=body, headers=headers)
    assert refused.status_code == 403  # a client error is an answer: it is kept and replayed
    again = await platform.client.post("/api/v1/agencies", json=body, headers=headers)
    assert again.status_code == 403
    assert again.headers["idempotent-replayed"] == "true"


@post("/test/flaky")
async def flaky() -> None:
    raise RuntimeError("a server-side failure")


async def test_a_server_error_is_not_kept_so_the_key_can_be_retried(
    app: Litestar, redis_client: redis_lib.Redis
) -> None:
    app.register(flaky)
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    async with AsyncTestClient(app) as client:
        first = await client.post("/test/flaky", json={}, headers=headers)
        second = await client.post("/test/flaky", json={}, headers=headers)
    assert (first.status_code, second.status_code) == (500, 500)
    assert "idempotent-replayed" not in second.headers
    assert list(redis_client.scan_iter("socialflow:idempotency:*")) == []
