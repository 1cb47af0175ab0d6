"""Lists are paginated by cursor, in a deterministic order, with filters and a Link header."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import psycopg
import pytest

from tests.integration.tenancy_fixtures import Platform, World


async def _walk(platform: Platform, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every item, following `next_cursor`, checking the Link header agrees with the body."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        response = await platform.client.get(next_url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        if body["next_cursor"]:
            assert body["next_cursor"] in response.headers["link"]
            assert response.headers["link"].endswith('rel="next"')
            next_url = response.headers["link"].split(">", 1)[0].lstrip("<")
        else:
            assert "link" not in response.headers
            next_url = None
    return items


async def test_tenants_page_by_slug_with_filters(platform: Platform, world: World) -> None:
    agency = world.agency_x
    extra = [await platform.tenant(world.admin_x, agency) for _ in range(4)]
    walked = await _walk(
        platform, f"/api/v1/tenants?limit=2&agency={agency}", world.admin_x.headers
    )
    slugs = [t["slug"] for t in walked]
    assert slugs == sorted({world.tenant_a, *extra})
    await platform.client.post(f"/api/v1/tenants/{extra[0]}/suspend", headers=world.admin_x.headers)
    suspended = await platform.client.get(
        f"/api/v1/tenants?status=suspended&agency={agency}", headers=world.admin_x.headers
    )
    assert [t["slug"] for t in suspended.json()["items"]] == [extra[0]]


async def test_members_page_in_join_order(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    joined = []
    for _ in range(5):
        user = await platform.member(world.tenant_a, "viewer")
        joined.append(user.email)
    walked = await _walk(
        platform, f"/api/v1/tenants/{world.tenant_a}/members?limit=2", world.owner_a.headers
    )
    assert [m["email"] for m in walked][1:] == joined  # the owner joined first
    viewers = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/members?role=viewer", headers=world.owner_a.headers
    )
    assert [m["email"] for m in viewers.json()["items"]] == joined


async def test_the_audit_log_pages_newest_first(platform: Platform, world: World) -> None:
    for n in range(5):
        await platform.client.put(
            f"/api/v1/tenants/{world.tenant_a}/settings",
            json={"display_name": f"name {n}"},
            headers=world.owner_a.headers,
        )
    walked = await _walk(
        platform, f"/api/v1/tenants/{world.tenant_a}/audit-log?limit=2", world.owner_a.headers
    )
    names = [e["after"]["display_name"] for e in walked if e["action"] == "settings.updated"]
    assert names == [f"name {n}" for n in reversed(range(5))]
    assert all(e["request_id"] for e in walked)
    # Filtered by action, across pages: every entry of that action and nothing else.
    filtered = await _walk(
        platform,
        f"/api/v1/tenants/{world.tenant_a}/audit-log?limit=2&action=settings.updated",
        world.owner_a.headers,
    )
    assert [e["after"]["display_name"] for e in filtered] == names
    assert {e["action"] for e in filtered} == {"settings.updated"}
    members_cannot = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_b}/audit-log", headers=world.owner_a.headers
    )
    assert members_cannot.status_code == 404


async def test_a_forged_cursor_and_a_bad_limit_are_422(platform: Platform, world: World) -> None:
    for query in ("cursor=not-a-cursor!!", "limit=0", "limit=10000"):
        response = await platform.client.get(
            f"/api/v1/tenants?{query}", headers=world.admin_x.headers
        )
        assert response.status_code == 422, query


async def test_api_keys_and_ai_keys_page_too(platform: Platform, world: World) -> None:
    base = f"/api/v1/tenants/{world.tenant_a}"
    headers = world.owner_a.headers
    for name in ("one", "two", "three"):
        await platform.client.post(
            f"{base}/api-keys", json={"name": name, "role": "viewer"}, headers=headers
        )
    for provider in ("openai", "anthropic", "gemini"):
        await platform.client.put(
            f"{base}/ai/keys/{provider}", json={"api_key": "sk-" + "k" * 30}, headers=headers
        )
    keys = await _walk(platform, f"{base}/api-keys?limit=2", headers)
    assert [k["name"] for k in keys] == ["one", "two", "three"]
    providers = await _walk(platform, f"{base}/ai/keys?limit=2", headers)
    assert [p["provider"] for p in providers] == ["anthropic", "gemini", "openai"]


def _cursor(parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


WRONG_CURSORS = [
    ("audit-log", ["abc"]),  # the key is a bigint
    ("audit-log", ["99999999999999999999"]),  # past bigint
    ("audit-log", ["1", "2"]),  # one part too many
    ("api-keys", ["abc"]),  # (created_at, id): one part too few
    ("api-keys", ["abc", "def"]),
    ("api-keys", ["2026-01-01T00:00:00", str(uuid.uuid4())]),  # a time without its zone
    ("members", ["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
]


@pytest.mark.parametrize(("listing", "parts"), WRONG_CURSORS)
async def test_a_well_formed_cursor_of_the_wrong_type_is_422(
    platform: Platform, world: World, listing: str, parts: list[str]
) -> None:
    # Confirmed in review: these reached PostgreSQL as casts it refused, and answered 500.
    response = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/{listing}?cursor={_cursor(parts)}",
        headers=world.owner_a.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "/problems/invalid-cursor"


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor(["a\x00b"]),  # PostgreSQL refuses NUL in text
        base64.urlsafe_b64encode(b'["\\ud800"]').decode(),  # a lone surrogate
        base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(),  # deep nesting
        _cursor(["x" * 2000]),  # longer than any cursor this API returns
    ],
)
async def test_a_cursor_with_text_postgresql_refuses_is_422(
    platform: Platform, world: World, cursor: str
) -> None:
    response = await platform.client.get(
        f"/api/v1/tenants?cursor={cursor}", headers=world.admin_x.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "/problems/invalid-cursor"
