"""Per-tenant overrides: set by the tenant's agency admins or operators, winning over the plan,
audited with an event; a plan change below usage is allowed, blocks new use and says so; usage
is visible to the tenant's members and to its agency's admins."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.integration.tenancy_fixtures import Platform, World


async def test_overrides_win_over_the_plan_and_null_gives_the_plans_limit_back(
    platform: Platform, world: World
) -> None:
    set_ = await platform.entitle(
        world.operator, world.tenant_a, seats=7, posts_per_month="unlimited", platform_ai_keys=False
    )
    assert set_["plan"] == "pro"
    assert set_["overrides"] == {
        "platform_ai_keys": False,
        "posts_per_month": "unlimited",
        "seats": 7,
    }
    limits = set_["limits"]
    assert (limits["seats"], limits["posts_per_month"], limits["platform_ai_keys"]) == (
        7,
        None,
        False,
    )
    assert limits["media_items"] == 50_000  # the plan's

    cleared = await platform.entitle(world.admin_x, world.tenant_a, seats=None)
    assert cleared["limits"]["seats"] == 50  # pro's again
    assert "seats" not in cleared["overrides"]
    assert cleared["limits"]["posts_per_month"] is None  # untouched overrides stay

    # Changing the plan keeps the overrides; the plan's other limits follow the new plan.
    moved = await platform.client.patch(
        f"/api/v1/tenants/{world.tenant_a}", json={"plan": "starter"}, headers=world.admin_x.headers
    )
    assert moved.status_code == 200, moved.text
    read = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/entitlements", headers=world.owner_a.headers
    )
    assert read.json()["limits"]["posts_per_month"] is None
    assert read.json()["limits"]["seats"] == 10  # starter's


async def test_an_override_change_is_audited_with_its_event(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    await platform.entitle(world.operator, world.tenant_a, webhook_endpoints=3)
    event = pg.execute(
        "SELECT payload FROM shared.outbox WHERE tenant = %s "
        "AND event_type = 'tenant.entitlements_changed'",
        (world.tenant_a,),
    ).fetchone()
    assert event is not None
    assert event[0]["after"]["overrides"] == {"webhook_endpoints": 3}
    assert event[0]["before"]["overrides"] == {}
    audited = pg.execute(
        "SELECT a.action, a.after FROM shared.platform_audit_log a "
        "JOIN shared.tenants t ON t.id = a.tenant_id WHERE t.slug = %s "
        "AND a.action = 'tenant.entitlements_changed'",
        (world.tenant_a,),
    ).fetchone()
    assert audited is not None
    assert audited[1]["overrides"] == {"webhook_endpoints": 3}


async def test_only_the_tenants_agency_admins_and_operators_set_overrides(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/entitlements"
    body = {"overrides": {"seats": 1000}}
    owner = await platform.client.patch(url, json=body, headers=world.owner_a.headers)
    assert owner.status_code == 403  # a member, even the owner, cannot raise its own limits
    other_agency = await platform.client.patch(url, json=body, headers=world.admin_y.headers)
    assert other_agency.status_code == 404
    assert pg.execute(
        "SELECT e.overrides FROM shared.tenant_entitlements e JOIN shared.tenants t "
        "ON t.id = e.tenant_id WHERE t.slug = %s",
        (world.tenant_a,),
    ).fetchone() == ({},)


async def test_the_platforms_ai_keys_are_for_operators_to_give_not_agencies(
    platform: Platform, world: World
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/entitlements"
    body = {"overrides": {"platform_ai_keys": True, "seats": 9}}
    refused = await platform.client.patch(url, json=body, headers=world.admin_x.headers)
    assert refused.status_code == 403, refused.text
    read = await platform.client.get(url, headers=world.admin_x.headers)
    assert read.json()["overrides"] == {}  # nothing of the request applied
    assert (await platform.client.patch(url, json=body, headers=world.operator.headers)).is_success


async def test_bad_overrides_are_refused_and_change_nothing(
    platform: Platform, world: World
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/entitlements"
    for body in (
        {"overrides": {"seats": 0}},
        {"overrides": {"seats": "lots"}},
        {"overrides": {"api_requests_per_minute": "unlimited"}},
        {"overrides": {"rockets": 3}},
        {"billing_anchor_day": 32},
    ):
        refused = await platform.client.patch(url, json=body, headers=world.operator.headers)
        assert refused.status_code in (400, 422), (body, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
    read = await platform.client.get(url, headers=world.operator.headers)
    assert read.json()["overrides"] == {}


async def test_a_plan_change_below_usage_is_allowed_blocks_new_use_and_says_so(
    platform: Platform, world: World
) -> None:
    await platform.member(world.tenant_a, "editor")
    await platform.member(world.tenant_a, "viewer")
    small = await platform.plan(world.operator, seats=2)
    moved = await platform.client.patch(
        f"/api/v1/tenants/{world.tenant_a}", json={"plan": small}, headers=world.admin_x.headers
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["plan"] == small
    assert moved.json()["over_limit"] == [{"resource": "seats", "limit": 2, "used": 3}]
    members = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/members", headers=world.owner_a.headers
    )
    assert len(members.json()["items"]) == 3  # nobody is removed
    invited = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/members",
        json={"email": "one-more@example.com", "role": "viewer"},
        headers=world.owner_a.headers,
    )
    assert invited.status_code == 409
    problem = invited.json()
    assert problem["type"] == "/problems/quota-exceeded"
    assert {k: problem[k] for k in ("resource", "limit", "used", "resets_at")} == {
        "resource": "seats",
        "limit": 2,
        "used": 3,
        "resets_at": None,
    }


async def test_members_see_their_tenants_usage_and_agency_admins_each_of_theirs(
    platform: Platform, world: World
) -> None:
    viewer = await platform.member(world.tenant_a, "viewer")
    url = f"/api/v1/tenants/{world.tenant_a}/usage"
    for who in (viewer, world.owner_a, world.admin_x, world.operator):
        usage = await platform.client.get(url, headers=who.headers)
        assert usage.status_code == 200, usage.text
    body = usage.json()
    resources = {r["resource"]: r for r in body["resources"]}
    assert resources["seats"] == {
        "resource": "seats",
        "measure": "stock",
        "limit": 50,
        "used": 2,
        "remaining": 48,
        "resets_at": None,
    }
    assert resources["posts_per_month"]["measure"] == "monthly"
    assert resources["posts_per_month"]["resets_at"] == body["period_end"]
    rate = resources["api_requests_per_minute"]
    assert (rate["measure"], rate["limit"]) == ("rate", 6000)
    assert rate["used"] >= 4  # this minute's requests of the tenant, the ones above included
    assert (await platform.client.get(url, headers=world.admin_y.headers)).status_code == 404
    assert (await platform.client.get(url, headers=world.owner_b.headers)).status_code == 404


async def test_an_agency_lists_each_of_its_tenants_usage_against_limits(
    platform: Platform, world: World
) -> None:
    second = await platform.tenant(world.admin_x, world.agency_x)
    url = f"/api/v1/agencies/{world.agency_x}/usage"
    first_page = await platform.client.get(f"{url}?limit=1", headers=world.admin_x.headers)
    assert first_page.status_code == 200, first_page.text
    assert first_page.headers["link"].endswith('rel="next"')
    rest = await platform.client.get(
        f"{url}?limit=1&cursor={first_page.json()['next_cursor']}", headers=world.admin_x.headers
    )
    listed = first_page.json()["items"] + rest.json()["items"]
    assert sorted(t["tenant"] for t in listed) == sorted([world.tenant_a, second])
    assert rest.json()["next_cursor"] is None
    for tenant in listed:
        seats = next(r for r in tenant["resources"] if r["resource"] == "seats")
        assert (seats["limit"], seats["used"]) == (50, 1)
    for stranger in (world.admin_y, world.owner_a):
        refused = await platform.client.get(url, headers=stranger.headers)
        assert refused.status_code == 404
    assert (await platform.client.get(url, headers=world.operator.headers)).status_code == 200
