"""Provisioning: one transaction, every tenant table at head, exactly one winner per slug."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.tenancy import services as tenancy_services
from socialflow.tenancy.fleet.ddl import tenant_head
from socialflow.vault.service import Vault
from tests.integration.tenancy_fixtures import Platform, World, unique


def _schema_tables(pg: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = pg.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    return {r[0] for r in rows}


async def test_an_agency_admin_provisions_a_complete_tenant(
    platform: Platform, pg: psycopg.Connection[Any]
) -> None:
    operator = await platform.operator()
    agency = await platform.agency(operator)
    admin = await platform.agency_admin(operator, agency)
    slug = unique("acme")
    owner_email = f"{unique('Owner')}@Example.com"
    response = await platform.client.post(
        "/api/v1/tenants",
        json={
            "slug": slug,
            "name": "Acme",
            "agency": agency,
            "plan": "pro",
            "owner_email": owner_email,
        },
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["slug"], body["agency"], body["plan"], body["status"]) == (
        slug,
        agency,
        "pro",
        "active",
    )
    assert response.headers["location"] == f"/api/v1/tenants/{slug}"

    schema = "t_" + slug.replace("-", "_")
    assert _schema_tables(pg, schema) == {
        "alembic_version",
        "settings",
        "audit_log",
        "ai_provider_keys",
        "ai_settings",
        "media_items",
        "media_embeddings",
        "ai_usage",
        "posts",
        "post_media",
        "post_destinations",
        "post_comments",
        "social_accounts",
        "social_apps",
        "webhook_endpoints",
        "webhook_deliveries",
        "webhook_attempts",
    }
    assert pg.execute(f'SELECT version_num FROM "{schema}".alembic_version').fetchone() == (
        tenant_head(),
    )
    # The vector column is typed for the tenant's embedding model (1536 by default).
    assert pg.execute(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attname = 'embedding'",
        (f'"{schema}".media_embeddings',),
    ).fetchone() == ("extensions.vector(1536)",)
    owner = pg.execute(
        "SELECT u.email, m.role, u.password_hash IS NULL FROM shared.memberships m "
        "JOIN shared.users u ON u.id = m.user_id JOIN shared.tenants t ON t.id = m.tenant_id "
        "WHERE t.slug = %s",
        (slug,),
    ).fetchall()
    assert owner == [(owner_email.split("@", maxsplit=1)[0] + "@example.com", "owner", True)]
    invitations = pg.execute(
        "SELECT count(*) FROM shared.invitations i JOIN shared.tenants t ON t.id = i.tenant_id "
        "WHERE t.slug = %s AND i.role = 'owner' AND i.accepted_at IS NULL",
        (slug,),
    ).fetchone()
    assert invitations == (1,)
    events = pg.execute(
        "SELECT event_type, payload->>'slug', payload->>'email' FROM shared.outbox "
        "WHERE tenant = %s ORDER BY id",
        (slug,),
    ).fetchall()
    owner_address = owner_email.split("@", maxsplit=1)[0] + "@example.com"
    # The new owner is invited to set a password (the email job mails the token).
    assert events == [("tenant.created", slug, None), ("member.invited", None, owner_address)]
    audit = pg.execute(
        "SELECT action FROM shared.platform_audit_log a "
        "JOIN shared.tenants t ON t.id = a.tenant_id WHERE t.slug = %s",
        (slug,),
    ).fetchall()
    assert audit == [("tenant.created",)]


@pytest.mark.parametrize(
    ("slug", "kind"),
    [
        ("ab", "invalid-slug"),
        ("Acme", "invalid-slug"),
        ("1acme", "invalid-slug"),
        ("acme-", "invalid-slug"),
        ("ac--me", "invalid-slug"),
        ("a" * 41, "invalid-slug"),
        ('acme"; DROP SCHEMA shared CASCADE; --', "invalid-slug"),
        ("acme_co", "invalid-slug"),
        ("admin", "reserved-slug"),
        ("shared", "reserved-slug"),
    ],
)
async def test_bad_slugs_are_refused_and_change_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any], slug: str, kind: str
) -> None:
    tenants_before = pg.execute("SELECT count(*) FROM shared.tenants").fetchone()
    schemas_before = pg.execute("SELECT count(*) FROM pg_namespace").fetchone()
    response = await platform.provision(world.operator, slug=slug, agency=world.agency_x)
    assert response.status_code == 422
    assert response.json()["type"] == f"/problems/{kind}"
    assert pg.execute("SELECT count(*) FROM shared.tenants").fetchone() == tenants_before
    assert pg.execute("SELECT count(*) FROM pg_namespace").fetchone() == schemas_before


async def test_a_taken_slug_is_409(platform: Platform, world: World) -> None:
    response = await platform.provision(world.operator, slug=world.tenant_a, agency=world.agency_x)
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/slug-taken"


async def test_an_unknown_plan_is_422(platform: Platform, world: World) -> None:
    response = await platform.provision(
        world.operator, slug=unique("t"), agency=world.agency_x, plan="platinum"
    )
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/invalid-plan"


async def test_concurrent_creation_of_one_slug_has_exactly_one_winner(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    slug = unique("race")
    responses = await asyncio.gather(
        *(platform.provision(world.operator, slug=slug, agency=world.agency_x) for _ in range(6))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409, 409]
    assert pg.execute(
        "SELECT count(*) FROM shared.tenants WHERE slug = %s", (slug,)
    ).fetchone() == (1,)
    assert pg.execute(
        "SELECT count(*) FROM shared.outbox WHERE event_type = 'tenant.created' AND tenant = %s",
        (slug,),
    ).fetchone() == (1,)


async def test_a_failure_after_create_schema_leaves_nothing_behind(
    platform: Platform,
    world: World,
    pg: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = tenancy_services.create_tenant_schema

    async def create_then_fail(session: AsyncSession, schema: str) -> None:
        await real(session, schema)
        raise RuntimeError("injected failure after CREATE SCHEMA")

    monkeypatch.setattr(tenancy_services, "create_tenant_schema", create_then_fail)
    slug = unique("doomed")
    owner_email = f"{unique('new-owner')}@example.com"
    response = await platform.provision(
        world.operator, slug=slug, agency=world.agency_x, owner_email=owner_email
    )
    assert response.status_code == 500
    schema = "t_" + slug.replace("-", "_")
    assert pg.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone() == (0,)
    assert pg.execute(
        "SELECT count(*) FROM shared.tenants WHERE slug = %s", (slug,)
    ).fetchone() == (0,)
    assert pg.execute(
        "SELECT count(*) FROM shared.outbox WHERE tenant = %s", (slug,)
    ).fetchone() == (0,)
    assert pg.execute(
        "SELECT count(*) FROM shared.users WHERE email = %s", (owner_email,)
    ).fetchone() == (0,)


async def test_an_admin_of_another_agency_cannot_provision_into_it(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    slug = unique("intruder")
    response = await platform.provision(world.admin_x, slug=slug, agency=world.agency_y)
    assert response.status_code == 404
    assert pg.execute(
        "SELECT count(*) FROM shared.tenants WHERE slug = %s", (slug,)
    ).fetchone() == (0,)


async def test_members_cannot_provision(platform: Platform, world: World) -> None:
    response = await platform.provision(world.owner_a, slug=unique("t"), agency=world.agency_x)
    assert response.status_code == 404


async def test_only_operators_create_agencies_and_admins(platform: Platform, world: World) -> None:
    create = await platform.client.post(
        "/api/v1/agencies", json={"slug": unique("ag"), "name": "x"}, headers=world.admin_x.headers
    )
    admins = await platform.client.post(
        f"/api/v1/agencies/{world.agency_x}/admins",
        json={"email": f"{unique('x')}@example.com"},
        headers=world.admin_x.headers,
    )
    listing = await platform.client.get("/api/v1/agencies", headers=world.owner_a.headers)
    assert (create.status_code, admins.status_code, listing.status_code) == (403, 403, 403)
    from tests.integration.tenancy.test_pagination import _walk

    listing = await _walk(platform, "/api/v1/agencies?limit=200", world.operator.headers)
    slugs = [a["slug"] for a in listing]
    assert {world.agency_x, world.agency_y} <= set(slugs)
    assert slugs == sorted(slugs)


async def test_purge_expired_drops_schemas_past_retention(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    from socialflow.db.session import unit_of_work

    deleted = await platform.client.delete(
        f"/api/v1/tenants/{world.tenant_a}", headers=world.admin_x.headers
    )
    assert deleted.status_code == 200
    schema = "t_" + world.tenant_a.replace("-", "_")
    vault = Vault.from_settings(platform.settings)
    async with unit_of_work(platform.factory) as session:
        assert world.tenant_a not in await tenancy_services.purge_expired(session, vault)
    pg.execute(
        "UPDATE shared.tenants SET purge_after = now() - interval '1 second' WHERE slug = %s",
        (world.tenant_a,),
    )
    async with unit_of_work(platform.factory) as session:
        assert world.tenant_a in await tenancy_services.purge_expired(session, vault)
    assert pg.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone() == (0,)
    assert pg.execute(
        "SELECT status FROM shared.tenants WHERE slug = %s", (world.tenant_a,)
    ).fetchone() == ("purged",)
    assert pg.execute(
        "SELECT count(*) FROM shared.outbox WHERE event_type = 'tenant.purged' "
        "AND payload->>'slug' = %s",
        (world.tenant_a,),
    ).fetchone() == (1,)
    gone = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}", headers=world.admin_x.headers
    )
    assert gone.status_code == 404
