"""A tenant's members reach only their own schema, whatever they swap, craft or race."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from litestar import get
from litestar.di import NamedDependency
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.app import create_app
from socialflow.settings import Settings
from tests.integration.pooler_fixtures import PgBouncer, through_pooler
from tests.integration.tenancy_fixtures import Platform, World


@pytest.fixture(params=["direct", "through-pgbouncer"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Every test here runs twice: straight to PostgreSQL, and with the app, its fixtures and
    the provisioning of the tenants going through PgBouncer in transaction mode."""
    if request.param == "direct":
        return settings
    bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
    return through_pooler(settings, bouncer)


async def _set_display_name(
    platform: Platform, slug: str, headers: dict[str, str], name: str
) -> None:
    response = await platform.client.put(
        f"/api/v1/tenants/{slug}/settings", json={"display_name": name}, headers=headers
    )
    assert response.status_code == 200, response.text


async def test_settings_are_read_and_written_in_the_tenants_own_schema(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    await _set_display_name(platform, world.tenant_a, world.owner_a.headers, "Alpha Inc")
    schema_a = "t_" + world.tenant_a.replace("-", "_")
    schema_b = "t_" + world.tenant_b.replace("-", "_")
    assert pg.execute(f'SELECT display_name FROM "{schema_a}".settings').fetchone() == (
        "Alpha Inc",
    )
    assert pg.execute(f'SELECT display_name FROM "{schema_b}".settings').fetchone() == (None,)
    audit = pg.execute(f'SELECT action, after FROM "{schema_a}".audit_log').fetchall()
    assert audit == [("settings.updated", {"display_name": "Alpha Inc"})]
    read = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/settings", headers=world.owner_a.headers
    )
    assert read.json()["display_name"] == "Alpha Inc"


async def test_a_member_of_a_cannot_reach_b_by_swapping_the_slug(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    b = f"/api/v1/tenants/{world.tenant_b}"
    for method, path, body in (
        ("GET", b, None),
        ("GET", f"{b}/members", None),
        ("GET", f"{b}/settings", None),
        ("PUT", f"{b}/settings", {"display_name": "pwned"}),
        ("POST", f"{b}/suspend", None),
        ("DELETE", b, None),
    ):
        response = await platform.client.request(
            method, path, json=body, headers=world.owner_a.headers
        )
        assert response.status_code == 404, (method, path)
        assert response.json()["detail"] == f"No tenant {world.tenant_b!r}."
    schema_b = "t_" + world.tenant_b.replace("-", "_")
    assert pg.execute(f'SELECT display_name FROM "{schema_b}".settings').fetchone() == (None,)
    b_listing = await platform.client.get("/api/v1/tenants", headers=world.owner_a.headers)
    assert [t["slug"] for t in b_listing.json()["items"]] == [world.tenant_a]


async def test_an_unknown_tenant_looks_exactly_like_a_forbidden_one(
    platform: Platform, world: World
) -> None:
    unknown = await platform.client.get(
        "/api/v1/tenants/no-such-tenant", headers=world.owner_a.headers
    )
    forbidden = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_b}", headers=world.owner_a.headers
    )
    assert unknown.status_code == forbidden.status_code == 404
    assert unknown.json()["type"] == forbidden.json()["type"]


@pytest.mark.parametrize(
    "crafted",
    [
        'x"; DROP SCHEMA shared CASCADE; --',
        "shared",
        "public",
        "t_alpha",
        "pg_catalog",
        "..%2Fshared",
        "%22shared%22",
        "A" * 300,
        "extensions",
    ],
)
async def test_crafted_slugs_are_refused_and_change_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any], crafted: str
) -> None:
    before = pg.execute("SELECT count(*) FROM pg_namespace").fetchone()
    for path in (f"/api/v1/tenants/{crafted}/settings", f"/api/v1/tenants/{crafted}"):
        response = await platform.client.get(path, headers=world.operator.headers)
        assert response.status_code == 404, path
        put = await platform.client.put(
            f"/api/v1/tenants/{crafted}/settings",
            json={"display_name": "x"},
            headers=world.operator.headers,
        )
        assert put.status_code == 404
    assert pg.execute("SELECT count(*) FROM pg_namespace").fetchone() == before
    assert pg.execute("SELECT count(*) FROM shared.tenants").fetchone()[0] >= 2  # type: ignore[index]


@get("/test/search-path")
async def search_path(session: NamedDependency[AsyncSession]) -> dict[str, str]:
    return {"search_path": (await session.execute(text("SHOW search_path"))).scalar_one()}


async def test_concurrent_requests_for_two_tenants_over_a_small_pool_never_mix(
    platform: Platform, world: World, settings: Settings
) -> None:
    await _set_display_name(platform, world.tenant_a, world.owner_a.headers, "tenant A")
    await _set_display_name(platform, world.tenant_b, world.owner_b.headers, "tenant B")
    small = settings.model_copy(update={"db_pool_size": 3, "db_max_overflow": 0})
    app = create_app(small)
    app.register(search_path)
    async with AsyncTestClient(app) as client:

        async def read(i: int) -> tuple[str, str, str]:
            if i % 3 == 2:
                # A request without a tenant on the same connections: no tenant schema visible.
                response = await client.get("/test/search-path")
                return ("none", "extensions", response.json()["search_path"])
            slug, owner, expected = (
                (world.tenant_a, world.owner_a, "tenant A")
                if i % 2
                else (world.tenant_b, world.owner_b, "tenant B")
            )
            response = await client.get(f"/api/v1/tenants/{slug}/settings", headers=owner.headers)
            return (slug, expected, response.json()["display_name"])

        results = await asyncio.gather(*(read(i) for i in range(200)))
    mismatches = [r for r in results if r[1] != r[2]]
    assert mismatches == []
    assert {r[0] for r in results} == {world.tenant_a, world.tenant_b, "none"}
