"""Idempotency-Key: a replayed POST returns the first answer to the same caller only, changes
nothing twice, keeps no secret, and never turns a Redis failure or a crash into a stuck key."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import redis as redis_lib
from litestar import Litestar, post
from litestar.di import NamedDependency
from litestar.testing import AsyncTestClient

from socialflow.access.guards import authenticated
from socialflow.access.principal import Principal
from socialflow.app import create_app
from socialflow.lib import idempotency
from socialflow.settings import Settings
from tests.integration.tenancy_fixtures import PASSWORD, Platform, World, unique


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _stored(redis_client: redis_lib.Redis) -> list[bytes]:
    return [redis_client.get(k) or b"" for k in redis_client.scan_iter("socialflow:idempotency:*")]


async def test_the_same_key_and_body_replay_the_first_response(
    platform: Platform, world: World, pg: psycopg.Connection[Any], redis_client: redis_lib.Redis
) -> None:
    body = {"slug": unique("ag"), "name": "Replayed"}
    headers = {**world.operator.headers, **_key()}
    first = await platform.client.post("/api/v1/agencies", json=body, headers=headers)
    second = await platform.client.post("/api/v1/agencies", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert pg.execute(
        "SELECT count(*) FROM shared.agencies WHERE slug = %s", (body["slug"],)
    ).fetchone() == (1,)
    ttl = max(redis_client.ttl(k) for k in redis_client.scan_iter("socialflow:idempotency:*"))
    assert 23 * 3600 < ttl <= 24 * 3600


async def test_replayed_headers_are_the_first_responses(platform: Platform, world: World) -> None:
    slug = unique("loc")
    body = {
        "slug": slug,
        "name": slug,
        "agency": world.agency_x,
        "plan": "pro",
        "owner_email": f"{slug}@example.com",
    }
    headers = {**world.operator.headers, **_key(), "X-Request-ID": "first-request"}
    first = await platform.client.post("/api/v1/tenants", json=body, headers=headers)
    headers["X-Request-ID"] = "second-request"
    second = await platform.client.post("/api/v1/tenants", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.headers["location"] == first.headers["location"] == f"/api/v1/tenants/{slug}"
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["x-request-id"] == "second-request"  # per response, not replayed


async def test_the_same_key_with_another_body_is_422(platform: Platform, world: World) -> None:
    headers = {**world.operator.headers, **_key()}
    await platform.client.post(
        "/api/v1/agencies", json={"slug": unique("ag"), "name": "a"}, headers=headers
    )
    other = await platform.client.post(
        "/api/v1/agencies", json={"slug": unique("ag"), "name": "b"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"


async def test_the_same_key_from_another_caller_is_not_replayed(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    key = _key()
    other_operator = await platform.operator()
    bodies = [{"slug": unique("ag"), "name": "one"}, {"slug": unique("ag"), "name": "two"}]
    first = await platform.client.post(
        "/api/v1/agencies", json=bodies[0], headers={**world.operator.headers, **key}
    )
    # Another caller, same key, same path: its own request runs (even with another body).
    second = await platform.client.post(
        "/api/v1/agencies", json=bodies[1], headers={**other_operator.headers, **key}
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert "idempotent-replayed" not in second.headers
    assert second.json()["slug"] == bodies[1]["slug"]


async def test_the_same_key_on_another_path_is_not_replayed(
    platform: Platform, world: World
) -> None:
    key = _key()
    agency = await platform.client.post(
        "/api/v1/agencies",
        json={"slug": unique("ag"), "name": "x"},
        headers={**world.operator.headers, **key},
    )
    admin = await platform.client.post(
        f"/api/v1/agencies/{world.agency_x}/admins",
        json={"email": f"{unique('a')}@example.com"},
        headers={**world.operator.headers, **key},
    )
    assert (agency.status_code, admin.status_code) == (201, 201)
    assert "idempotent-replayed" not in admin.headers


async def test_a_refreshed_token_of_the_same_person_gets_the_replay(
    platform: Platform, world: World
) -> None:
    key = _key()
    body = {"slug": unique("ag"), "name": "x"}
    first = await platform.client.post(
        "/api/v1/agencies", json=body, headers={**world.operator.headers, **key}
    )
    again = await platform.login(world.operator.email)  # a new token for the same person
    assert again.token != world.operator.token
    second = await platform.client.post(
        "/api/v1/agencies", json=body, headers={**again.headers, **key}
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.headers["idempotent-replayed"] == "true"


async def _api_key(platform: Platform, world: World, role: str = "admin") -> tuple[str, str]:
    created = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": unique("k"), "role": role},
        headers=world.owner_a.headers,
    )
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


async def test_a_revoked_api_key_gets_no_replay_and_no_secret_is_ever_stored(
    platform: Platform, world: World, redis_client: redis_lib.Redis
) -> None:
    key_id, secret = await _api_key(platform, world)
    url = f"/api/v1/tenants/{world.tenant_a}/api-keys"
    headers = {"Authorization": f"Bearer {secret}", **_key()}
    body = {"name": unique("child"), "role": "viewer"}
    first = await platform.client.post(url, json=body, headers=headers)
    assert first.status_code == 201
    child_secret = first.json()["key"]
    assert child_secret.startswith("sfk_")
    # What Redis holds never contains the one-time secret.
    assert all(child_secret.encode() not in value for value in _stored(redis_client))
    replay = await platform.client.post(url, json=body, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["idempotent-withheld"] == "key"
    assert replay.json() == {**first.json(), "key": None}

    revoked = await platform.client.delete(f"{url}/{key_id}", headers=world.owner_a.headers)
    assert revoked.status_code == 204
    after = await platform.client.post(url, json=body, headers=headers)
    assert after.status_code == 401
    assert "idempotent-replayed" not in after.headers


async def test_a_forbidden_answer_is_not_kept_and_a_validation_error_is(
    platform: Platform, world: World
) -> None:
    forbidden = {**world.admin_x.headers, **_key()}
    body = {"slug": unique("ag"), "name": "x"}
    refused = await platform.client.post("/api/v1/agencies", json=body, headers=forbidden)
    again = await platform.client.post("/api/v1/agencies", json=body, headers=forbidden)
    assert (refused.status_code, again.status_code) == (403, 403)
    assert "idempotent-replayed" not in again.headers  # permissions change: asked again

    invalid = {**world.operator.headers, **_key()}
    bad = {"slug": "X", "name": "x"}
    first = await platform.client.post("/api/v1/agencies", json=bad, headers=invalid)
    second = await platform.client.post("/api/v1/agencies", json=bad, headers=invalid)
    assert (first.status_code, second.status_code) == (422, 422)
    assert second.headers["idempotent-replayed"] == "true"


# -- a route that waits, to hold a request in flight -------------------------------------

GATE: dict[str, asyncio.Event] = {}


@post("/test/held", guards=[authenticated])
async def held(principal: NamedDependency[Principal]) -> dict[str, str]:
    GATE["entered"].set()
    await GATE["release"].wait()
    return {"done": str(principal.user_id)}


@post("/test/flaky", guards=[authenticated])
async def flaky(principal: NamedDependency[Principal]) -> None:
    raise RuntimeError("a server-side failure")


@pytest.fixture
async def held_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app served in this event loop (Litestar's test client runs one request at a time
    in a thread of its own, so it cannot hold one request while another arrives)."""
    app = create_app(settings)
    app.register(held)
    app.register(flaky)
    GATE.update(entered=asyncio.Event(), release=asyncio.Event())
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:  # entered and left in one task, as anyio requires
        async with app.lifespan():
            started.set()
            await stop.wait()

    running = asyncio.create_task(lifespan())
    await asyncio.wait_for(started.wait(), timeout=10)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
        GATE["release"].set()
    stop.set()
    await running


async def test_a_second_request_while_the_first_runs_gets_409_with_retry_after(
    held_app: httpx.AsyncClient, world: World
) -> None:
    headers = {**world.operator.headers, **_key()}
    first = asyncio.create_task(held_app.post("/test/held", json={}, headers=headers))
    await asyncio.wait_for(GATE["entered"].wait(), timeout=10)
    second = await held_app.post("/test/held", json={}, headers=headers)
    assert second.status_code == 409
    assert second.json()["type"] == "/problems/idempotency-in-progress"
    assert second.headers["retry-after"] == "1"
    GATE["release"].set()
    assert (await first).status_code == 201
    third = await held_app.post("/test/held", json={}, headers=headers)
    assert third.headers["idempotent-replayed"] == "true"


async def test_the_running_marker_is_a_lease_renewed_while_the_request_runs(
    held_app: httpx.AsyncClient,
    world: World,
    redis_client: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(idempotency, "LEASE_S", 1.0)
    headers = {**world.operator.headers, **_key()}
    first = asyncio.create_task(held_app.post("/test/held", json={}, headers=headers))
    await asyncio.wait_for(GATE["entered"].wait(), timeout=10)
    (record_key,) = list(redis_client.scan_iter("socialflow:idempotency:*"))
    # A crashed process would free the key within the lease, not after 24 hours …
    assert 0 < redis_client.pttl(record_key) <= 1000
    # … and a live one keeps it for as long as it runs: leases later, still in progress.
    await asyncio.sleep(2.5)
    assert json.loads(redis_client.get(record_key) or b"{}")["state"] == "running"
    assert 0 < redis_client.pttl(record_key) <= 1000
    GATE["release"].set()
    assert (await first).status_code == 201


async def test_a_server_error_is_not_kept_so_the_key_can_be_retried(
    held_app: httpx.AsyncClient, world: World, redis_client: redis_lib.Redis
) -> None:
    headers = {**world.operator.headers, **_key()}
    first = await held_app.post("/test/flaky", json={}, headers=headers)
    second = await held_app.post("/test/flaky", json={}, headers=headers)
    assert (first.status_code, second.status_code) == (500, 500)
    assert "idempotent-replayed" not in second.headers
    assert list(redis_client.scan_iter("socialflow:idempotency:*")) == []


async def test_an_unreachable_redis_is_a_503_problem_with_retry_after(
    settings: Settings, world: World, pg: psycopg.Connection[Any]
) -> None:
    broken = settings.model_copy(update={"cache_redis_url": "redis://127.0.0.1:9/0"})
    body = {"slug": unique("ag"), "name": "x"}
    async with AsyncTestClient(create_app(broken)) as client:
        answer = await client.post(
            "/api/v1/agencies", json=body, headers={**world.operator.headers, **_key()}
        )
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/idempotency-unavailable"
    assert int(answer.headers["retry-after"]) > 0
    assert pg.execute(
        "SELECT count(*) FROM shared.agencies WHERE slug = %s", (body["slug"],)
    ).fetchone() == (0,)


async def test_an_oversized_body_is_refused_on_content_length_without_reading_it(
    client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    app: Any = client.app
    received = 0
    answer: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/agencies",
        "raw_path": b"/api/v1/agencies",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
        "headers": [
            (b"idempotency-key", b"k1"),
            (b"content-length", b"209715200"),
            (b"content-type", b"application/json"),
        ],
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    assert answer[0]["status"] == 413
    assert received == 0

    # Without a Content-Length, reading stops just past the limit.
    received = 0
    answer.clear()
    scope["headers"] = [(b"idempotency-key", b"k2"), (b"content-type", b"application/json")]
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    assert answer[0]["status"] == 413
    assert received <= settings.max_request_body_bytes // 65536 + 2


async def test_sign_in_answers_are_never_kept_even_with_a_caller_and_a_key(
    platform: Platform, world: World, redis_client: redis_lib.Redis
) -> None:
    headers = {**world.operator.headers, **_key()}
    body = {"email": world.operator.email, "password": PASSWORD}
    first = await platform.client.post("/api/v1/auth/token", json=body, headers=headers)
    second = await platform.client.post("/api/v1/auth/token", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (200, 200)
    assert "idempotent-replayed" not in second.headers
    assert second.json()["refresh_token"] != first.json()["refresh_token"]
    tokens = [first.json()["refresh_token"].encode(), first.json()["access_token"].encode()]
    assert not any(token in value for value in _stored(redis_client) for token in tokens)


async def test_a_finished_record_is_not_turned_back_into_running_by_a_late_renewal(
    redis_client: redis_lib.Redis, redis_url: str
) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    slot = idempotency._Slot(
        redis=client, key="socialflow:idempotency:t", fingerprint="f", owner="me"
    )
    running = json.dumps({"state": "running", "body": "f", "owner": "me"})
    done = json.dumps({"state": "done", "body": "f", "owner": "me", "status": 201})
    try:
        await client.set(slot.key, running, px=30_000)
        await slot.renew(running, 30_000)  # a live request renews its lease …
        assert json.loads(redis_client.get(slot.key) or b"{}")["state"] == "running"
        await slot.if_owner(done, 3_600_000)
        await slot.renew(running, 30_000)  # … a renewal arriving after the answer was kept
        assert json.loads(redis_client.get(slot.key) or b"{}")["state"] == "done"
        assert redis_client.pttl(slot.key) > 30_000
    finally:
        await client.aclose()


async def test_idempotent_requests_count_against_the_callers_rate_limit_before_any_record(
    settings: Settings, world: World, redis_client: redis_lib.Redis
) -> None:
    limited = settings.model_copy(update={"rate_limit_user_per_minute": 3})
    async with AsyncTestClient(create_app(limited)) as client:
        statuses = [
            (
                await client.post(
                    "/api/v1/agencies",
                    json={"slug": "a\x00", "name": "x"},
                    headers={**world.operator.headers, **_key()},
                )
            ).status_code
            for _ in range(6)
        ]
    assert statuses[:3] == [422, 422, 422]
    assert statuses[3:] == [429, 429, 429]
    assert len(list(redis_client.scan_iter("socialflow:idempotency:*"))) == 3


async def test_the_stored_body_fingerprint_is_keyed_not_a_bare_hash(
    platform: Platform, world: World, redis_client: redis_lib.Redis
) -> None:
    import hashlib

    body = {"email": f"{unique('adm')}@example.com", "password": "a secret password 123"}
    raw = json.dumps(body).encode()
    answer = await platform.client.post(
        f"/api/v1/agencies/{world.agency_x}/admins",
        content=raw,
        headers={**world.operator.headers, **_key(), "content-type": "application/json"},
    )
    assert answer.status_code == 201
    (stored,) = _stored(redis_client)
    assert json.loads(stored)["body"] != hashlib.sha256(raw).hexdigest()
