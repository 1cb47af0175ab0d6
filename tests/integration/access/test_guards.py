"""Route guards: who may call each route is declared on it, checked before the handler (and
before its body is read), stated in the OpenAPI document, and costs no extra transaction."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from sqlalchemy import event

from socialflow.access.permissions import PERMISSIONS, Permission, Role
from tests.integration.tenancy_fixtures import Account, Platform, World

PROBLEM = "application/problem+json"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
MEMBER = "/api/v1/tenants/{tenant}/members/{user_id}"
LEAVE = "/api/v1/tenants/{tenant}/members/me"
# Roles from the least to the most: the first one a permission leaves out is refused.
ROLES = (Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.OWNER)
# A body no route accepts (every body is a JSON object): refused with 400 if it is ever read.
UNREADABLE_BODY = [1]


def _user_id(pg: psycopg.Connection[Any], account: Account) -> str:
    row = pg.execute("SELECT id FROM shared.users WHERE email = %s", (account.email,)).fetchone()
    assert row is not None
    return str(row[0])


def _memberships(pg: psycopg.Connection[Any], slug: str) -> set[tuple[str, str]]:
    rows = pg.execute(
        "SELECT u.email, m.role FROM shared.memberships m "
        "JOIN shared.tenants t ON t.id = m.tenant_id JOIN shared.users u ON u.id = m.user_id "
        "WHERE t.slug = %s",
        (slug,),
    ).fetchall()
    return {(email, role) for email, role in rows}


def _outbox_rows(pg: psycopg.Connection[Any]) -> int:
    row = pg.execute("SELECT count(*) FROM shared.outbox").fetchone()
    assert row is not None
    return int(row[0])


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


async def _document(platform: Platform) -> dict[tuple[str, str], dict[str, Any]]:
    response = await platform.client.get("/schema/openapi.json")
    assert response.status_code == 200
    return _operations(response.json())


@pytest.fixture
async def team(platform: Platform, world: World) -> dict[str, Account]:
    """tenant_a's members, one per role (its owner is world.owner_a)."""
    slug = world.tenant_a
    return {
        "viewer": await platform.member(slug, "viewer"),
        "editor": await platform.member(slug, "editor"),
        "admin": await platform.member(slug, "admin"),
        "owner": world.owner_a,
    }


async def test_a_viewer_may_neither_change_nor_remove_a_member_and_the_document_says_so(
    platform: Platform, world: World, team: dict[str, Account], pg: psycopg.Connection[Any]
) -> None:
    base = f"/api/v1/tenants/{world.tenant_a}/members"
    editor, viewer = _user_id(pg, team["editor"]), _user_id(pg, team["viewer"])
    before, events = _memberships(pg, world.tenant_a), _outbox_rows(pg)

    attempts = [
        ("PATCH", f"{base}/{editor}", {"role": "viewer"}),
        # Refused before the body is read: an unreadable body is a 403 too, not a 400.
        ("PATCH", f"{base}/{editor}", UNREADABLE_BODY),
        ("DELETE", f"{base}/{editor}", None),
        # Leaving has its own route now: a viewer's own id is a member like any other.
        ("DELETE", f"{base}/{viewer}", None),
    ]
    for method, url, body in attempts:
        response = await platform.client.request(
            method, url, json=body, headers=team["viewer"].headers
        )
        assert response.status_code == 403, (method, url, body, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["type"] == "/problems/forbidden"
    assert _memberships(pg, world.tenant_a) == before
    assert _outbox_rows(pg) == events

    operations = await _document(platform)
    for method in ("PATCH", "DELETE"):
        operation = operations[(method, MEMBER)]
        assert operation["x-permission"] == "members:manage", method
        assert operation["x-access"] == ["requires(members:manage)"], method
        assert "`members:manage` (admin, owner)" in operation["description"], method
        assert {"401", "403", "404", "409"} <= set(operation["responses"]), method


async def test_any_member_may_leave_but_not_the_last_owner(
    platform: Platform, world: World, team: dict[str, Account], pg: psycopg.Connection[Any]
) -> None:
    leave = f"/api/v1/tenants/{world.tenant_a}/members/me"
    viewer_id = _user_id(pg, team["viewer"])

    left = await platform.client.delete(leave, headers=team["viewer"].headers)
    assert left.status_code == 204, left.text
    assert (team["viewer"].email, "viewer") not in _memberships(pg, world.tenant_a)
    event = pg.execute(
        "SELECT payload FROM shared.outbox WHERE event_type = 'member.removed' AND tenant = %s",
        (world.tenant_a,),
    ).fetchone()
    assert event is not None
    assert event[0]["user_id"] == viewer_id
    assert event[0]["left"] is True

    before, events = _memberships(pg, world.tenant_a), _outbox_rows(pg)
    last_owner = await platform.client.delete(leave, headers=team["owner"].headers)
    assert last_owner.status_code == 409, last_owner.text
    assert last_owner.json()["type"] == "/problems/last-owner"
    gone = await platform.client.delete(leave, headers=team["viewer"].headers)
    assert gone.status_code == 404, gone.text  # no longer a member: the tenant is not theirs
    outsider = await platform.client.delete(leave, headers=world.owner_b.headers)
    assert outsider.status_code == 404, outsider.text
    assert _memberships(pg, world.tenant_a) == before
    assert _outbox_rows(pg) == events

    operation = (await _document(platform))[("DELETE", LEAVE)]
    assert operation["x-permission"] == "tenant:read"  # every role has it
    assert "409" in operation["responses"]


def _path_values(world: World) -> dict[str, str]:
    return {
        "tenant": world.tenant_a,
        "agency": world.agency_x,
        "user_id": str(uuid.uuid4()),
        "key_id": str(uuid.uuid4()),
        "provider": "openai",
        "plan": "pro",
        "media_id": str(uuid.uuid4()),
        "profile": "story",
        "post_id": str(uuid.uuid4()),
        "account_id": str(uuid.uuid4()),
        "endpoint_id": str(uuid.uuid4()),
        "destination_id": str(uuid.uuid4()),
    }


def _refused_caller(
    access: list[str],
    permission: str | None,
    world: World,
    team: dict[str, Account],
    outsider: Account,
) -> tuple[Account | None, int, str]:
    """Who the route's declared guard must turn away, and with which status and problem."""
    (guard,) = access
    if guard == "authenticated":
        return None, 401, "unauthorized"
    if guard == "operator_only":
        return outsider, 403, "forbidden"
    if guard == "sees_tenant":
        return outsider, 404, "not-found"
    if guard == "manages_tenant":
        return team["owner"], 403, "forbidden"  # a member, even the owner, runs no lifecycle
    assert guard == f"requires({permission})", guard
    for role in ROLES:
        if Permission(permission) not in PERMISSIONS[role]:
            return team[role.value], 403, "forbidden"
    return outsider, 404, "not-found"  # every role has it: only non-members are turned away


async def test_every_route_refuses_whom_its_declared_guard_refuses_before_the_handler(
    platform: Platform, world: World, team: dict[str, Account], pg: psycopg.Connection[Any]
) -> None:
    outsider = world.owner_b  # a person with no standing in tenant_a nor on the platform
    values = _path_values(world)
    before, events = _memberships(pg, world.tenant_a), _outbox_rows(pg)
    checked = set()

    for (method, path), operation in (await _document(platform)).items():
        if not path.startswith("/api/") or "security" not in operation:
            continue  # open routes (sign-in, invitations, probes) have no guard
        access = operation.get("x-access")
        assert access, f"{method} {path} is authenticated but states no guard"
        who, status, kind = _refused_caller(
            access, operation.get("x-permission"), world, team, outsider
        )
        url = path.format(**values)
        body = UNREADABLE_BODY if "requestBody" in operation else None
        headers = who.headers if who else {}
        response = await platform.client.request(method, url, json=body, headers=headers)
        assert response.status_code == status, (method, path, response.text)
        assert response.json()["type"] == f"/problems/{kind}", (method, path)
        assert str(status) in operation["responses"], (method, path)
        checked.add((method, path))

    assert ("PATCH", MEMBER) in checked
    assert ("DELETE", LEAVE) in checked
    assert len(checked) >= 30
    assert _memberships(pg, world.tenant_a) == before
    assert _outbox_rows(pg) == events


async def test_refused_and_unreadable_requests_leave_no_connection_or_transaction_open(
    app: Litestar,
    platform: Platform,
    world: World,
    team: dict[str, Account],
    pg: psycopg.Connection[Any],
) -> None:
    base = f"/api/v1/tenants/{world.tenant_a}"
    owner, viewer = team["owner"].headers, team["viewer"].headers
    editor = _user_id(pg, team["editor"])
    requests: list[tuple[str, str, Any, dict[str, str], int]] = [
        # Refused by a guard after it read the caller and the tenant in the unit of work.
        ("PATCH", f"{base}/members/{editor}", {"role": "viewer"}, viewer, 403),
        ("PUT", f"{base}/settings", {"locale": "fr"}, viewer, 403),
        ("POST", f"{base}/suspend", None, owner, 403),
        ("GET", f"/api/v1/tenants/{world.tenant_b}/settings", None, owner, 404),
        ("GET", f"{base}/settings", None, {"Authorization": "Bearer nonsense"}, 401),
        # Let through by the guard, then the body fails validation: the handler never runs.
        ("PATCH", f"{base}/members/{editor}", {"role": "emperor"}, owner, 400),
        ("PUT", f"{base}/settings", UNREADABLE_BODY, owner, 400),
        ("GET", f"{base}/members?limit=many", None, owner, 400),
    ]
    for _ in range(25):
        for method, url, body, headers, status in requests:
            response = await platform.client.request(method, url, json=body, headers=headers)
            assert response.status_code == status, (method, url, response.text)

    assert app.state.engine.pool.checkedout() == 0
    stuck = pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%'"
    ).fetchone()
    assert stuck == (0,)
    # And the pool still serves: nothing was lost on the way.
    response = await platform.client.get(f"{base}/settings", headers=owner)
    assert response.status_code == 200


async def test_a_tenant_read_is_one_transaction_with_the_access_check_as_its_first_statement(
    app: Litestar, platform: Platform, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/settings"
    warm = await platform.client.get(url, headers=world.owner_a.headers)  # caches the standing
    assert warm.status_code == 200
    statements: list[str] = []
    begins: list[object] = []
    engine = app.state.engine.sync_engine
    execute = psycopg.AsyncCursor.execute

    # What reaches the driver, through SQLAlchemy or straight (hot statements, db/rows.py).
    async def recorded(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        return await execute(cursor, query, *args, **kwargs)

    def on_begin(connection: object) -> None:
        begins.append(connection)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", recorded)
    event.listen(engine, "begin", on_begin)
    try:
        response = await platform.client.get(url, headers=world.owner_a.headers)
    finally:
        event.remove(engine, "begin", on_begin)
    assert response.status_code == 200
    assert len(begins) == 1
    assert len(statements) == 2, statements
    assert "shared.memberships" in statements[0]
    assert "set_config('search_path'" in statements[0]
