"""A refused request changes nothing: no row, no outbox event, no audit entry, anywhere."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.tenancy_fixtures import Platform, World, bearer, unique

Snapshot = dict[str, object]


@pytest.fixture(autouse=True)
def _fresh_sign_in_limits(redis_client: Any) -> None:
    """Each test signs several accounts in: start with empty per-address windows."""


def _schema(slug: str) -> str:
    return "t_" + slug.replace("-", "_")


def snapshot(pg: psycopg.Connection[Any], world: World) -> Snapshot:
    """Every row of every shared table and of both tenants' schemas (as a digest per table),
    the row counts of the ones a refusal is about, and the set of tenant schemas."""
    schemas = ["shared", _schema(world.tenant_a), _schema(world.tenant_b)]
    tables = pg.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE' ORDER BY 1, 2",
        (schemas,),
    ).fetchall()
    state: Snapshot = {}
    for schema, table in tables:
        # Identifiers come from the catalog, quoted; the digest sees inserts, updates, deletes.
        row = pg.execute(
            "SELECT count(*), md5(coalesce(string_agg(x::text, chr(10) ORDER BY x::text), '')) "
            f'FROM "{schema}"."{table}" x'
        ).fetchone()
        state[f"{schema}.{table}"] = row
    state["schemas"] = {
        r[0] for r in pg.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'")
    }
    return state


def counts(state: Snapshot) -> dict[str, int]:
    """The row counts named in the refusal rules, for readable failures."""
    named = ("shared.outbox", "shared.platform_audit_log", "shared.tenants", "shared.users")
    return {name: state[name][0] for name in named}  # type: ignore[index]


def assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    assert counts(after) == counts(before)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], f"refused requests changed {changed}"


async def test_an_api_key_reaches_nothing_of_another_tenant_and_changes_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    created = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": "ci", "role": "admin"},
        headers=world.owner_a.headers,
    )
    assert created.status_code == 201, created.text
    key = bearer(created.json()["key"])
    # Used once on its own tenant, so the refusals below are not its first use.
    own = await platform.client.get(f"/api/v1/tenants/{world.tenant_a}/settings", headers=key)
    assert own.status_code == 200
    other = f"/api/v1/tenants/{world.tenant_b}"
    before = snapshot(pg, world)

    attempts = [
        ("PUT", f"{other}/settings", {"locale": "fr"}),
        ("POST", f"{other}/members", {"email": f"{unique('x')}@example.com", "role": "viewer"}),
        ("POST", f"{other}/api-keys", {"name": "stolen", "role": "viewer"}),
        ("PUT", f"{other}/ai/keys/openai", {"api_key": "sk-" + "b" * 40}),
        ("PATCH", other, {"name": "renamed"}),
        ("POST", f"{other}/suspend", None),
        ("DELETE", other, None),
    ]
    for method, url, body in attempts:
        response = await platform.client.request(method, url, json=body, headers=key)
        assert response.status_code == 404, (method, url, response.text)

    assert_unchanged(before, snapshot(pg, world))


async def test_lifecycle_refused_to_members_and_other_agencies_changes_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}"
    editor = await platform.member(world.tenant_a, "editor")
    before = snapshot(pg, world)

    for who, expected in ((world.owner_a, 403), (editor, 403), (world.admin_y, 404)):
        for method, path, body in (
            ("POST", f"{url}/suspend", None),
            ("DELETE", url, None),
            ("PATCH", url, {"name": "taken over", "plan": "enterprise"}),
        ):
            response = await platform.client.request(method, path, json=body, headers=who.headers)
            assert response.status_code == expected, (who.email, method, path, response.text)

    assert_unchanged(before, snapshot(pg, world))


async def test_refusing_resume_or_restore_by_a_member_of_a_suspended_tenant_changes_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}"
    suspended = await platform.client.post(f"{url}/suspend", headers=world.admin_x.headers)
    assert suspended.status_code == 200, suspended.text
    before = snapshot(pg, world)

    for action in ("resume", "restore"):
        response = await platform.client.post(f"{url}/{action}", headers=world.owner_a.headers)
        assert response.status_code == 403, (action, response.text)
    # A manager's move that the state machine refuses changes nothing either.
    restore = await platform.client.post(f"{url}/restore", headers=world.admin_x.headers)
    assert restore.status_code == 409

    assert_unchanged(before, snapshot(pg, world))


async def test_refused_provisionings_change_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    owner_email = f"{unique('new-owner')}@example.com"
    refusals: list[tuple[str, Any, str, dict[str, Any], int]] = [
        ("by a member", world.owner_a, unique("t"), {}, 404),
        ("by an admin of another agency", world.admin_y, unique("t"), {}, 404),
        ("for a taken slug", world.admin_x, world.tenant_b, {}, 409),
        ("with an unknown plan", world.admin_x, unique("t"), {"plan": "platinum"}, 422),
        ("with a bad slug", world.admin_x, "Bad_Slug", {}, 422),
    ]
    before = snapshot(pg, world)

    for refusal, by, slug, extra, expected in refusals:
        response = await platform.provision(
            by, slug=slug, agency=world.agency_x, owner_email=owner_email, **extra
        )
        assert response.status_code == expected, (refusal, response.text)

    assert_unchanged(before, snapshot(pg, world))


async def test_provisioning_that_fails_midway_leaves_no_row_event_or_audit_entry(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    # A schema squatting on the slug's name (left by hand, or by a broken restore) makes
    # CREATE SCHEMA fail after the tenant row was written: a real failure, no injection.
    slug = unique("squat")
    pg.execute(f"CREATE SCHEMA {_schema(slug)}")
    try:
        before = snapshot(pg, world)
        response = await platform.provision(
            world.operator,
            slug=slug,
            agency=world.agency_x,
            owner_email=f"{unique('new-owner')}@example.com",
        )
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == "/problems/schema-exists"

        assert_unchanged(before, snapshot(pg, world))
    finally:
        pg.execute(f"DROP SCHEMA {_schema(slug)} CASCADE")


async def test_byok_changes_refused_to_viewers_and_editors_change_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/ai"
    # A key is there already, so that replacing and deleting it are real changes.
    stored = await platform.client.put(
        f"{url}/keys/openai", json={"api_key": "sk-" + "a" * 40}, headers=world.owner_a.headers
    )
    assert stored.status_code == 200, stored.text
    viewer = await platform.member(world.tenant_a, "viewer")
    editor = await platform.member(world.tenant_a, "editor")
    before = snapshot(pg, world)

    for who in (viewer, editor):
        for method, path, body in (
            ("PUT", f"{url}/keys/openai", {"api_key": "sk-" + "c" * 40}),
            ("PUT", f"{url}/keys/anthropic", {"api_key": "sk-ant-" + "d" * 40}),
            ("DELETE", f"{url}/keys/openai", None),
            ("PUT", f"{url}/settings", {"caption_model": "openai/gpt-4o"}),
        ):
            response = await platform.client.request(method, path, json=body, headers=who.headers)
            assert response.status_code == 403, (method, path, response.text)

    assert_unchanged(before, snapshot(pg, world))
