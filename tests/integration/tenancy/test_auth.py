"""Sign-in, access tokens, refresh rotation with reuse detection, and the caller's profile."""

from __future__ import annotations

import time
from typing import Any

import jwt
import psycopg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from socialflow.settings import Settings
from tests.integration.tenancy_fixtures import PASSWORD, Platform, World, bearer, unique


async def _sign_in(client: AsyncTestClient[Litestar], email: str, password: str) -> Any:
    return await client.post("/api/v1/auth/token", json={"email": email, "password": password})


async def test_sign_in_returns_a_token_pair_that_opens_me(platform: Platform) -> None:
    user = await platform.user()
    response = await _sign_in(platform.client, user.email.upper(), PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == platform.settings.access_token_ttl_s
    me = await platform.client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == user.email
    assert me.json()["memberships"] == []


async def test_a_wrong_password_and_an_unknown_email_get_the_same_401(platform: Platform) -> None:
    user = await platform.user()
    wrong = await _sign_in(platform.client, user.email, "not the password at all")
    unknown = await _sign_in(platform.client, f"{unique('nobody')}@example.com", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert wrong.headers["content-type"].startswith("application/problem+json")


async def test_passwords_are_stored_as_argon2id_hashes(
    platform: Platform, pg: psycopg.Connection[Any]
) -> None:
    user = await platform.user()
    (stored,) = pg.execute(
        "SELECT password_hash FROM shared.users WHERE email = %s", (user.email,)
    ).fetchone()  # type: ignore[misc]
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_emails_are_unique_regardless_of_case(platform: Platform) -> None:
    operator = await platform.operator()
    agency = await platform.agency(operator)
    email = f"{unique('Mixed')}@Example.com"
    first = await platform.client.post(
        f"/api/v1/agencies/{agency}/admins", json={"email": email}, headers=operator.headers
    )
    second = await platform.client.post(
        f"/api/v1/agencies/{agency}/admins",
        json={"email": email.lower()},
        headers=operator.headers,
    )
    assert first.json()["created"] is True
    assert second.json()["created"] is False
    assert first.json()["user_id"] == second.json()["user_id"]


def _forge(settings: Settings, key: str, **claims: Any) -> str:
    now = int(time.time())
    base = {
        "iss": settings.jwt_issuer,
        "sub": "00000000-0000-0000-0000-000000000001",
        "iat": now,
        "exp": now + 60,
        "typ": "access",
    }
    return jwt.encode({**base, **claims}, key, algorithm="HS256")


async def test_expired_tampered_and_foreign_tokens_are_401(
    platform: Platform, settings: Settings
) -> None:
    user = await platform.user()
    header, payload, signature = user.token.split(".")
    tampered_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    key = settings.signing_key()
    candidates = {
        "expired": _forge(settings, key, exp=int(time.time()) - 5),
        "tampered": f"{header}.{tampered_payload}.{signature}",
        "wrong signature": _forge(settings, "another-key-" + "z" * 40),
        "wrong issuer": _forge(settings, key, iss="someone-else"),
        "not an access token": _forge(settings, key, typ="refresh"),
        "unsigned": jwt.encode({"sub": "x"}, None, algorithm="none"),
        "garbage": "not-a-jwt",
    }
    for name, token in candidates.items():
        response = await platform.client.get("/api/v1/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert response.json()["type"] == "/problems/unauthorized", name
    missing = await platform.client.get("/api/v1/me")
    assert missing.status_code == 401


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(platform: Platform) -> None:
    user = await platform.user()
    first = (await _sign_in(platform.client, user.email, PASSWORD)).json()

    rotated = await platform.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]

    # The first token again: stolen and replayed. It fails, and so does the legitimate one.
    replay = await platform.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert replay.status_code == 401
    after = await platform.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert after.status_code == 401
    # Another sign-in (another family) is unaffected.
    other = (await _sign_in(platform.client, user.email, PASSWORD)).json()
    fresh = await platform.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert fresh.status_code == 200


async def test_an_unknown_refresh_token_is_401(platform: Platform) -> None:
    response = await platform.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": "sfr_made-up"}
    )
    assert response.status_code == 401


async def test_me_lists_memberships_and_agency_roles(platform: Platform, world: World) -> None:
    owner = (await platform.client.get("/api/v1/me", headers=world.owner_a.headers)).json()
    assert owner["memberships"] == [
        {
            "tenant": world.tenant_a,
            "tenant_name": f"Tenant {world.tenant_a}",
            "status": "active",
            "role": "owner",
        }
    ]
    admin = (await platform.client.get("/api/v1/me", headers=world.admin_x.headers)).json()
    assert admin["agency_roles"] == [
        {"agency": world.agency_x, "name": world.agency_x, "role": "admin"}
    ]
