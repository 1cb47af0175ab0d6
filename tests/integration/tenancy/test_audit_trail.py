"""Every mutation of tenant access leaves an audit entry in the tenant's own log."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.integration.tenancy.test_pagination import _walk
from tests.integration.tenancy_fixtures import Platform, World, unique


async def test_every_access_mutation_is_in_the_tenant_audit_log(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    base = f"/api/v1/tenants/{world.tenant_a}"
    owner = world.owner_a.headers
    viewer = await platform.member(world.tenant_a, "viewer")
    viewer_id = str(
        pg.execute("SELECT id FROM shared.users WHERE email = %s", (viewer.email,)).fetchone()[0]
    )  # type: ignore[index]
    calls = [
        ("POST", f"{base}/members", {"email": f"{unique('inv')}@example.com", "role": "editor"}),
        ("PATCH", f"{base}/members/{viewer_id}", {"role": "editor"}),
        ("PUT", f"{base}/settings", {"display_name": "Audited"}),
        ("PUT", f"{base}/ai/keys/openai", {"api_key": "sk-" + "z" * 30}),
        ("DELETE", f"{base}/ai/keys/openai", None),
        ("PUT", f"{base}/ai/settings", {"embedding_dimension": 768}),
        ("DELETE", f"{base}/members/{viewer_id}", None),
    ]
    for method, url, body in calls:
        response = await platform.client.request(method, url, json=body, headers=owner)
        assert response.status_code < 300, (method, url, response.text)
    key = await platform.client.post(
        f"{base}/api-keys", json={"name": "k", "role": "viewer"}, headers=owner
    )
    await platform.client.delete(f"{base}/api-keys/{key.json()['id']}", headers=owner)

    entries = await _walk(platform, f"{base}/audit-log?limit=3", owner)
    actions = {e["action"] for e in entries}
    assert {
        "member.invited",
        "member.role_changed",
        "settings.updated",
        "ai_key.created",
        "ai_key.removed",
        "ai_settings.updated",
        "member.removed",
        "api_key.created",
        "api_key.revoked",
    } <= actions
    assert all(e["actor"] and e["request_id"] for e in entries)
