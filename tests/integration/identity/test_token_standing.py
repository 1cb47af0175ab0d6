"""Access tokens are checked against the database: a disabled user or a demoted operator loses
access within AUTH_USER_CACHE_S, whatever the token says; `authenticate()` for middleware."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import psycopg
import redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.access.principal import Principal
from socialflow.db.session import unit_of_work
from socialflow.identity.auth import authenticate
from socialflow.identity.services import ensure_operator
from socialflow.settings import Settings
from tests.integration.identity.conftest import ClientFactory, new_user, sign_in
from tests.integration.outbox.support import wait_until
from tests.integration.tenancy_fixtures import PASSWORD, World, bearer, unique

CACHE_S = 0.5


async def _token(client: httpx.AsyncClient, email: str) -> str:
    response = await sign_in(client, email)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def _status(client: httpx.AsyncClient, path: str, token: str) -> int:
    return (await client.get(path, headers=bearer(token))).status_code


async def test_a_demoted_operator_loses_operator_access_within_the_cache_time(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    pg: psycopg.Connection[Any],
) -> None:
    client, _ = await serve(auth_user_cache_s=CACHE_S)
    email = f"{unique('op')}@example.com"
    async with unit_of_work(session_factory) as session:
        await ensure_operator(session, settings, email=email, password=PASSWORD)
    token = await _token(client, email)
    assert await _status(client, "/api/v1/agencies", token) == 200

    pg.execute("UPDATE shared.users SET is_operator = false WHERE email = %s", (email,))
    demoted_at = time.monotonic()

    async def refused() -> bool:
        return await _status(client, "/api/v1/agencies", token) == 403

    await wait_until(refused, timeout_s=CACHE_S + 2, message="operator access withdrawn")
    assert time.monotonic() - demoted_at < CACHE_S + 2
    assert await _status(client, "/api/v1/me", token) == 200  # still a person, not an operator


async def test_a_disabled_user_loses_access_within_the_cache_time(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    pg: psycopg.Connection[Any],
) -> None:
    client, _ = await serve(auth_user_cache_s=CACHE_S)
    user = await new_user(session_factory, settings)
    token = await _token(client, user.email)
    assert await _status(client, "/api/v1/tenants", token) == 200

    pg.execute("UPDATE shared.users SET is_active = false WHERE id = %s", (user.id,))

    async def refused() -> bool:
        return await _status(client, "/api/v1/tenants", token) == 401

    await wait_until(refused, timeout_s=CACHE_S + 2, message="access withdrawn")
    tenants = await client.get("/api/v1/tenants", headers=bearer(token))
    assert tenants.json()["type"] == "/problems/unauthorized"


async def test_an_operator_claim_in_a_token_does_not_make_an_operator(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    client, _ = await serve()
    user = await new_user(session_factory, settings)
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "sub": str(user.id),
        "email": user.email,
        "op": True,
        "iat": now,
        "exp": now + 60,
        "typ": "access",
    }
    token = jwt.encode(claims, settings.signing_key(), algorithm="HS256")
    assert await _status(client, "/api/v1/agencies", token) == 403
    me = await client.get("/api/v1/me", headers=bearer(token))
    assert me.json()["is_operator"] is False


async def test_authenticate_resolves_valid_credentials_and_nothing_else_without_counting(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    pg: psycopg.Connection[Any],
    redis_client: redis.Redis,
    world: World,
    platform: Any,
) -> None:
    client, app = await serve(auth_user_cache_s=0)
    operator_email = f"{unique('op')}@example.com"
    async with unit_of_work(session_factory) as session:
        operator = await ensure_operator(session, settings, email=operator_email, password=PASSWORD)
    token = await _token(client, operator_email)
    created = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": "ci", "role": "editor"},
        headers=world.owner_a.headers,
    )
    assert created.status_code == 201, created.text
    api_key = created.json()["key"]
    redis_client.flushdb()

    person = await authenticate(app.state, f"Bearer {token}")
    assert person == Principal(user_id=operator.id, email=operator_email, is_operator=True)
    integration = await authenticate(app.state, f"bearer {api_key}")
    assert integration is not None
    assert integration.kind == "api_key"
    assert integration.key_role == "editor"
    for header in (None, "", "Bearer", "Basic abc", "Bearer not-a-jwt", "Bearer sfk_unknown"):
        assert await authenticate(app.state, header) is None, header
    assert redis_client.keys("socialflow:ratelimit:*") == []

    pg.execute(
        "UPDATE shared.api_keys SET revoked_at = now() WHERE key_hash IS NOT NULL AND id = %s",
        (uuid.UUID(created.json()["id"]),),
    )
    assert await authenticate(app.state, f"Bearer {api_key}") is None
    pg.execute("UPDATE shared.users SET is_active = false WHERE id = %s", (operator.id,))
    assert await authenticate(app.state, f"Bearer {token}") is None


async def test_a_principal_resolved_before_the_route_is_used_and_still_rate_limited(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    _, app = await serve()
    user = await new_user(session_factory, settings)
    resolved = Principal(user_id=user.id, email=user.email, is_operator=False)

    async def resolving_middleware(scope: Any, receive: Any, send: Any) -> None:
        # What the idempotency middleware does: resolve once, hand it on in the scope state.
        scope.setdefault("state", {})["principal"] = resolved
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=resolving_middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://socialflow.test") as client:
        # The header would be refused if it were authenticated again.
        me = await client.get("/api/v1/me", headers=bearer("not-a-token"))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == str(user.id)
    assert int(me.headers["ratelimit-remaining"]) == settings.rate_limit_user_per_minute - 1
