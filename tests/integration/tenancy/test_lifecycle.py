"""Tenant lifecycle: suspend, resume, delete, restore, update — each with its event and audit."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.integration.tenancy_fixtures import Platform, World


def _events(pg: psycopg.Connection[Any], slug: str) -> list[str]:
    return [
        r[0]
        for r in pg.execute(
            "SELECT event_type FROM shared.outbox WHERE payload->>'slug' = %s ORDER BY id", (slug,)
        )
    ]


def _audit(pg: psycopg.Connection[Any], slug: str) -> list[tuple[str, Any, Any]]:
    return [
        (r[0], r[1], r[2])
        for r in pg.execute(
            "SELECT a.action, a.before, a.after FROM shared.platform_audit_log a "
            "JOIN shared.tenants t ON t.id = a.tenant_id WHERE t.slug = %s ORDER BY a.id",
            (slug,),
        )
    ]


async def test_the_whole_lifecycle_with_its_events_and_audit_entries(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    slug, admin, owner = world.tenant_a, world.admin_x, world.owner_a
    client = platform.client
    url = f"/api/v1/tenants/{slug}"

    assert (await client.get(f"{url}/settings", headers=owner.headers)).status_code == 200

    suspended = await client.post(f"{url}/suspend", headers=admin.headers)
    assert suspended.status_code == 200
    assert suspended.json()["status"] == "suspended"
    blocked = await client.get(f"{url}/settings", headers=owner.headers)
    assert blocked.status_code == 403
    assert blocked.json()["type"] == "/problems/tenant-suspended"
    assert (await client.get(url, headers=owner.headers)).status_code == 403
    assert (await client.get(url, headers=admin.headers)).json()["status"] == "suspended"

    assert (await client.post(f"{url}/resume", headers=admin.headers)).status_code == 200
    assert (await client.get(f"{url}/settings", headers=owner.headers)).status_code == 200

    deleted = await client.delete(url, headers=admin.headers)
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "deleted"
    assert deleted.json()["purge_after"] is not None
    assert (await client.get(url, headers=owner.headers)).status_code == 404
    assert (await client.get(f"{url}/settings", headers=owner.headers)).status_code == 404
    owner_list = (await client.get("/api/v1/tenants", headers=owner.headers)).json()["items"]
    assert slug not in [t["slug"] for t in owner_list]
    admin_list = (await client.get("/api/v1/tenants", headers=admin.headers)).json()["items"]
    assert {"slug": slug, "status": "deleted"}.items() <= next(
        t for t in admin_list if t["slug"] == slug
    ).items()
    schema = "t_" + slug.replace("-", "_")
    assert pg.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone() == (1,)

    restored = await client.post(f"{url}/restore", headers=admin.headers)
    assert restored.json()["status"] == "active"
    assert (await client.get(f"{url}/settings", headers=owner.headers)).status_code == 200

    renamed = await client.patch(
        url, json={"name": "Renamed", "plan": "enterprise"}, headers=admin.headers
    )
    assert (renamed.json()["name"], renamed.json()["plan"]) == ("Renamed", "enterprise")

    assert _events(pg, slug) == [
        "tenant.created",
        "tenant.suspended",
        "tenant.resumed",
        "tenant.deleted",
        "tenant.restored",
        "tenant.updated",
    ]
    audit = _audit(pg, slug)
    assert [a[0] for a in audit] == _events(pg, slug)
    assert audit[1][1:] == ({"status": "active"}, {"status": "suspended"})
    assert audit[-1][1:] == (
        {"name": f"Tenant {slug}", "plan": "pro"},
        {"name": "Renamed", "plan": "enterprise"},
    )


async def test_invalid_transitions_are_409_and_change_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}"
    for action in ("resume", "restore"):
        response = await platform.client.post(f"{url}/{action}", headers=world.admin_x.headers)
        assert response.status_code == 409, action
        assert response.json()["type"] == "/problems/invalid-transition"
    assert _events(pg, world.tenant_a) == ["tenant.created"]


async def test_members_cannot_run_the_lifecycle(platform: Platform, world: World) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}"
    assert (
        await platform.client.post(f"{url}/suspend", headers=world.owner_a.headers)
    ).status_code == 403
    assert (await platform.client.delete(url, headers=world.owner_a.headers)).status_code == 403
    patched = await platform.client.patch(url, json={"name": "x"}, headers=world.owner_a.headers)
    assert patched.status_code == 403


async def test_an_agency_admin_cannot_see_or_manage_another_agencys_tenants(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    url = f"/api/v1/tenants/{world.tenant_b}"
    listing = (await platform.client.get("/api/v1/tenants", headers=world.admin_x.headers)).json()
    assert world.tenant_b not in [t["slug"] for t in listing["items"]]
    assert world.tenant_a in [t["slug"] for t in listing["items"]]
    for method, path in (
        ("GET", url),
        ("POST", f"{url}/suspend"),
        ("DELETE", url),
        ("PATCH", url),
        ("GET", f"{url}/members"),
    ):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
        response = await platform.client.request(
            method, path, headers=world.admin_x.headers, **kwargs
        )
        assert response.status_code == 404, (method, path)
    assert _events(pg, world.tenant_b) == ["tenant.created"]


async def test_agency_admins_see_metadata_but_not_content_unless_members(
    platform: Platform, world: World
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}"
    assert (await platform.client.get(url, headers=world.admin_x.headers)).status_code == 200
    content = await platform.client.get(f"{url}/settings", headers=world.admin_x.headers)
    assert content.status_code == 403
    assert content.json()["type"] == "/problems/not-a-member"


async def test_the_operator_sees_every_tenant(platform: Platform, world: World) -> None:
    from tests.integration.tenancy.test_pagination import _walk

    listing = await _walk(platform, "/api/v1/tenants?limit=200", world.operator.headers)
    slugs = [t["slug"] for t in listing]
    assert {world.tenant_a, world.tenant_b} <= set(slugs)
    assert slugs == sorted(slugs)
