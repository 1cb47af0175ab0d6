"""The plan catalogue: seeded on first start, read by everyone signed in, changed by operators
through the API, every change audited with its event."""

from __future__ import annotations

from typing import Any

import psycopg

from socialflow.settings import DEFAULT_PLAN_CATALOGUE
from tests.integration.tenancy_fixtures import Platform, World, unique


def _plan_body(name: str, **limits: Any) -> dict[str, Any]:
    return {
        "name": name,
        "display_name": name.title(),
        "seats": 5,
        "storage_bytes": 10 * 1024**3,
        "media_items": 1000,
        "posts_per_month": 100,
        "ai_spend_usd_per_month": 12.5,
        "social_accounts": 3,
        "webhook_endpoints": 2,
        "api_requests_per_minute": 600,
        "event_retention_days": 14,
        "platform_ai_keys": False,
        **limits,
    }


async def test_the_first_start_seeds_the_four_plans_of_the_settings(
    platform: Platform, world: World
) -> None:
    listed = await platform.client.get("/api/v1/plans", headers=world.owner_a.headers)
    assert listed.status_code == 200, listed.text
    plans = {plan["name"]: plan for plan in listed.json()["items"]}
    assert {"free", "starter", "pro", "enterprise"} <= set(plans)
    for name, seeded in DEFAULT_PLAN_CATALOGUE.items():
        for field, value in seeded.items():
            assert plans[name][field] == value, (name, field)
    assert plans["enterprise"]["seats"] is None  # unlimited


async def test_operators_add_and_change_plans_and_each_change_is_audited(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    name = unique("gold")
    created = await platform.client.post(
        "/api/v1/plans", json=_plan_body(name), headers=world.operator.headers
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/api/v1/plans/{name}"
    assert created.json()["ai_spend_usd_per_month"] == 12.5

    changed = await platform.client.patch(
        f"/api/v1/plans/{name}",
        json={"seats": None, "posts_per_month": 250},
        headers=world.operator.headers,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["seats"], changed.json()["posts_per_month"]) == (None, 250)
    assert changed.json()["media_items"] == 1000  # absent: unchanged

    again = await platform.client.post(
        "/api/v1/plans", json=_plan_body(name), headers=world.operator.headers
    )
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/plan-exists"

    events = pg.execute(
        "SELECT event_type, payload FROM shared.outbox WHERE aggregate_type = 'plan' "
        "AND aggregate_id = %s ORDER BY id",
        (name,),
    ).fetchall()
    assert [e[0] for e in events] == ["plan.created", "plan.updated"]
    assert events[1][1]["before"] == {"seats": 5, "posts_per_month": 100}
    assert events[1][1]["after"] == {"seats": None, "posts_per_month": 250}
    audited = pg.execute(
        "SELECT action FROM shared.platform_audit_log WHERE target_type = 'plan' "
        "AND target_id = %s ORDER BY id",
        (name,),
    ).fetchall()
    assert [a[0] for a in audited] == ["plan.created", "plan.updated"]


async def test_only_operators_change_the_catalogue(platform: Platform, world: World) -> None:
    name = unique("nope")
    for who in (world.admin_x, world.owner_a):
        created = await platform.client.post(
            "/api/v1/plans", json=_plan_body(name), headers=who.headers
        )
        assert created.status_code == 403
        changed = await platform.client.patch(
            "/api/v1/plans/pro", json={"seats": 1}, headers=who.headers
        )
        assert changed.status_code == 403
    assert (
        await platform.client.get(f"/api/v1/plans/{name}", headers=world.operator.headers)
    ).status_code == 404


async def test_bad_plans_are_refused_and_change_nothing(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    bad = [
        _plan_body("Upper"),  # names are lower-case slugs
        _plan_body(unique("p"), seats=0),  # a tenant has at least its owner
        _plan_body(unique("p"), api_requests_per_minute=None),  # a rate is never unlimited
        _plan_body(unique("p"), storage_bytes=-1),
        _plan_body(unique("p"), ai_spend_usd_per_month="lots"),
        {**_plan_body(unique("p")), "surprise": 1},
    ]
    before = pg.execute("SELECT count(*) FROM shared.plans").fetchone()
    for body in bad:
        response = await platform.client.post(
            "/api/v1/plans", json=body, headers=world.operator.headers
        )
        assert response.status_code in (400, 422), (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    patched = await platform.client.patch(
        "/api/v1/plans/free", json={"seats": -3}, headers=world.operator.headers
    )
    assert patched.status_code in (400, 422)
    assert pg.execute("SELECT count(*) FROM shared.plans").fetchone() == before
    assert pg.execute("SELECT seats FROM shared.plans WHERE name = 'free'").fetchone() == (3,)


async def test_a_tenant_can_only_be_on_a_plan_of_the_catalogue(
    platform: Platform, world: World
) -> None:
    unknown = await platform.provision(
        world.operator, slug=unique("t"), agency=world.agency_x, plan="platinum"
    )
    assert unknown.status_code == 422
    assert unknown.json()["type"] == "/problems/invalid-plan"
    name = await platform.plan(world.operator)
    moved = await platform.client.patch(
        f"/api/v1/tenants/{world.tenant_a}", json={"plan": name}, headers=world.admin_x.headers
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["plan"] == name
    assert moved.json()["over_limit"] == []
