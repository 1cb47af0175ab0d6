"""Tenant API keys: shown once, hashed, role-bound, their own tenant only, revocable at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.integration.tenancy_fixtures import Platform, World, bearer


async def _create(platform: Platform, world: World, role: str = "editor", **extra: Any) -> Any:
    return await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": "ci", "role": role, **extra},
        headers=world.owner_a.headers,
    )


async def test_a_key_is_shown_once_stored_hashed_and_opens_its_own_tenant(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    created = await _create(platform, world)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("sfk_")
    listing = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/api-keys", headers=world.owner_a.headers
    )
    assert key not in listing.text
    assert listing.json()["items"][0]["prefix"] == key[:12]
    stored = pg.execute("SELECT key_hash FROM shared.api_keys").fetchall()
    assert key not in str(stored)

    own = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/settings", headers=bearer(key)
    )
    assert own.status_code == 200
    other = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_b}/settings", headers=bearer(key)
    )
    assert other.status_code == 404
    used = pg.execute(
        "SELECT last_used_at IS NOT NULL FROM shared.api_keys WHERE prefix = %s", (key[:12],)
    ).fetchone()
    assert used == (True,)


async def test_a_keys_role_bounds_what_it_may_do(platform: Platform, world: World) -> None:
    viewer_key = (await _create(platform, world, role="viewer")).json()["key"]
    read = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/settings", headers=bearer(viewer_key)
    )
    write = await platform.client.put(
        f"/api/v1/tenants/{world.tenant_a}/settings",
        json={"locale": "fr"},
        headers=bearer(viewer_key),
    )
    assert (read.status_code, write.status_code) == (200, 403)


async def test_a_revoked_key_is_refused_at_once(platform: Platform, world: World) -> None:
    created = (await _create(platform, world)).json()
    url = f"/api/v1/tenants/{world.tenant_a}/settings"
    assert (await platform.client.get(url, headers=bearer(created["key"]))).status_code == 200
    revoke = await platform.client.delete(
        f"/api/v1/tenants/{world.tenant_a}/api-keys/{created['id']}", headers=world.owner_a.headers
    )
    assert revoke.status_code == 204
    refused = await platform.client.get(url, headers=bearer(created["key"]))
    assert refused.status_code == 401


async def test_an_expired_key_is_refused(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = (await _create(platform, world, expires_at=soon)).json()
    pg.execute(
        "UPDATE shared.api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
        (created["id"],),
    )
    response = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/settings", headers=bearer(created["key"])
    )
    assert response.status_code == 401


@pytest.mark.parametrize(("creator_role", "key_role"), [("editor", "viewer"), ("admin", "owner")])
async def test_nobody_creates_a_key_above_their_role(
    platform: Platform, world: World, pg: psycopg.Connection[Any], creator_role: str, key_role: str
) -> None:
    creator = await platform.member(world.tenant_a, creator_role)
    response = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": "x", "role": key_role},
        headers=creator.headers,
    )
    assert response.status_code == 403
