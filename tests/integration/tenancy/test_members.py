"""Member roles: escalation is refused, the last owner stays, changes are evented and audited."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.tenancy_fixtures import Account, Platform, World


def _user_id(pg: psycopg.Connection[Any], account: Account) -> str:
    return str(
        pg.execute("SELECT id FROM shared.users WHERE email = %s", (account.email,)).fetchone()[0]
    )  # type: ignore[index]


@pytest.fixture
async def team(platform: Platform, world: World, pg: psycopg.Connection[Any]) -> dict[str, Account]:
    slug = world.tenant_a
    return {
        "owner": world.owner_a,
        "admin": await platform.member(slug, "admin"),
        "editor": await platform.member(slug, "editor"),
        "viewer": await platform.member(slug, "viewer"),
    }


def _role(pg: psycopg.Connection[Any], slug: str, account: Account) -> str | None:
    row = pg.execute(
        "SELECT m.role FROM shared.memberships m JOIN shared.tenants t ON t.id = m.tenant_id "
        "JOIN shared.users u ON u.id = m.user_id WHERE t.slug = %s AND u.email = %s",
        (slug, account.email),
    ).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize(
    ("actor", "target", "role", "status"),
    [
        ("admin", "viewer", "owner", 403),  # only owners grant owner
        ("admin", "owner", "viewer", 403),  # nor take it away
        ("editor", "viewer", "editor", 403),  # editors do not manage members
        ("viewer", "editor", "viewer", 403),
        ("admin", "viewer", "admin", 200),  # up to their own role
        ("owner", "viewer", "owner", 200),
    ],
)
async def test_role_changes_follow_the_rules(
    platform: Platform,
    world: World,
    team: dict[str, Account],
    pg: psycopg.Connection[Any],
    actor: str,
    target: str,
    role: str,
    status: int,
) -> None:
    before = _role(pg, world.tenant_a, team[target])
    response = await platform.client.patch(
        f"/api/v1/tenants/{world.tenant_a}/members/{_user_id(pg, team[target])}",
        json={"role": role},
        headers=team[actor].headers,
    )
    assert response.status_code == status, response.text
    assert _role(pg, world.tenant_a, team[target]) == (role if status == 200 else before)


async def test_the_last_owner_can_neither_be_demoted_nor_leave(
    platform: Platform, world: World, team: dict[str, Account], pg: psycopg.Connection[Any]
) -> None:
    owner_id = _user_id(pg, team["owner"])
    url = f"/api/v1/tenants/{world.tenant_a}/members"
    demote = await platform.client.patch(
        f"{url}/{owner_id}", json={"role": "admin"}, headers=team["owner"].headers
    )
    leave = await platform.client.delete(f"{url}/{owner_id}", headers=team["owner"].headers)
    assert (demote.status_code, leave.status_code) == (409, 409)
    assert demote.json()["type"] == "/problems/last-owner"

    promote = await platform.client.patch(
        f"{url}/{_user_id(pg, team['admin'])}",
        json={"role": "owner"},
        headers=team["owner"].headers,
    )
    assert promote.status_code == 200
    left = await platform.client.delete(f"{url}/{owner_id}", headers=team["owner"].headers)
    assert left.status_code == 204
    assert _role(pg, world.tenant_a, team["owner"]) is None


async def test_removing_a_member_is_evented_and_audited(
    platform: Platform, world: World, team: dict[str, Account], pg: psycopg.Connection[Any]
) -> None:
    editor_id = _user_id(pg, team["editor"])
    response = await platform.client.delete(
        f"/api/v1/tenants/{world.tenant_a}/members/{editor_id}", headers=team["admin"].headers
    )
    assert response.status_code == 204
    event = pg.execute(
        "SELECT payload FROM shared.outbox WHERE event_type = 'member.removed' AND tenant = %s",
        (world.tenant_a,),
    ).fetchone()
    assert event == ({"user_id": editor_id, "role": "editor", "left": False},)
    schema = "t_" + world.tenant_a.replace("-", "_")
    audit = pg.execute(
        f"SELECT action, target_id FROM \"{schema}\".audit_log WHERE action = 'member.removed'"
    ).fetchall()
    assert audit == [("member.removed", editor_id)]
    # The removed user no longer reaches the tenant at all.
    gone = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/settings", headers=team["editor"].headers
    )
    assert gone.status_code == 404


async def test_a_member_of_another_tenant_is_not_a_member_here(
    platform: Platform, world: World, team: dict[str, Account], pg: psycopg.Connection[Any]
) -> None:
    response = await platform.client.patch(
        f"/api/v1/tenants/{world.tenant_a}/members/{_user_id(pg, world.owner_b)}",
        json={"role": "viewer"},
        headers=team["owner"].headers,
    )
    assert response.status_code == 404
    assert _role(pg, world.tenant_b, world.owner_b) == "owner"
