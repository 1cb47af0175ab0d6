"""Purging a tenant: its events go with it, its slug can be provisioned again, and nothing the
old tenant left in flight ever runs in the new one."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.db.session import unit_of_work
from socialflow.members.events import MemberJoined
from socialflow.outbox import emit
from socialflow.outbox.events import Event
from socialflow.tenancy import services as tenancy_services
from socialflow.vault.service import Vault
from socialflow.workers.actors import apply_event
from tests.integration.tenancy_fixtures import Platform, World


def _count(pg: psycopg.Connection[Any], sql: str, *params: object) -> int:
    row = pg.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


async def _purge(platform: Platform, world: World, pg: psycopg.Connection[Any]) -> None:
    deleted = await platform.client.delete(
        f"/api/v1/tenants/{world.tenant_a}", headers=world.admin_x.headers
    )
    assert deleted.status_code == 200
    pg.execute(
        "UPDATE shared.tenants SET purge_after = now() - interval '1 second' WHERE slug = %s",
        (world.tenant_a,),
    )
    async with unit_of_work(platform.factory) as session:
        purged = await tenancy_services.purge_expired(
            session, Vault.from_settings(platform.settings)
        )
    assert world.tenant_a in purged


async def test_a_purged_slug_is_provisioned_again_and_old_events_never_run_in_it(
    platform: Platform, world: World, pg: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    old_id = pg.execute(
        "SELECT id FROM shared.tenants WHERE slug = %s", (world.tenant_a,)
    ).fetchone()[0]  # type: ignore[index]
    # In flight when the tenant goes: a deferred event, a dead letter, and a message that is
    # already in the broker (its envelope).
    async with unit_of_work(platform.factory) as session:
        joined = MemberJoined(user_id=uuid.uuid4(), role="viewer")
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        await emit(session, joined, tenant=world.tenant_a, available_at=tomorrow)
    pg.execute(
        "INSERT INTO shared.outbox_dead_letter (id, event_id, tenant, tenant_id, aggregate_type, "
        "aggregate_id, event_type, payload, headers, available_at, created_at, error) VALUES "
        "(-1, gen_random_uuid(), %s, %s, 'member', 'm', 'member.joined', '{}', '{}', now(), "
        "now(), 'test')",
        (world.tenant_a, old_id),
    )
    pg.execute(
        "INSERT INTO shared.event_history (occurred_at, event_id, tenant_id, aggregate_type, "
        "aggregate_id, event_type, payload) VALUES (now(), gen_random_uuid(), %s, 'member', 'm', "
        "'member.joined', '{}')",
        (old_id,),
    )
    in_broker = Event(
        event_id=uuid.uuid4(),
        event_type="member.joined",
        tenant=world.tenant_a,
        tenant_id=old_id,
        aggregate_type="member",
        aggregate_id="m",
        payload={},
    ).to_message_arg()

    await _purge(platform, world, pg)

    assert _count(pg, "SELECT count(*) FROM shared.outbox WHERE tenant_id = %s", old_id) == 0
    assert (
        _count(pg, "SELECT count(*) FROM shared.outbox_dead_letter WHERE tenant_id = %s", old_id)
        == 0
    )
    assert (
        _count(
            pg, "SELECT count(*) FROM shared.tenant_schema_migrations WHERE tenant_id = %s", old_id
        )
        == 0
    )
    assert _count(pg, "SELECT count(*) FROM shared.event_history WHERE tenant_id = %s", old_id) == 0

    again = await platform.provision(world.admin_x, slug=world.tenant_a, agency=world.agency_x)
    assert again.status_code == 201, again.text
    new_id = again.json()["id"]
    assert new_id != str(old_id)
    owner = await platform.member(world.tenant_a, "owner")
    assert (
        await platform.client.get(f"/api/v1/tenants/{world.tenant_a}", headers=owner.headers)
    ).json()["id"] == new_id

    ran: list[str] = []

    async def handler(session: AsyncSession, event: Event) -> None:
        ran.append(str((await session.execute(text("SHOW search_path"))).scalar_one()))

    caplog.set_level(logging.INFO)
    applied = await apply_event(handler, "test_actor", in_broker, platform.factory)
    assert applied is False
    assert ran == []
    assert any(
        isinstance(r.msg, dict) and r.msg.get("event") == "actor.tenant_gone"
        for r in caplog.records
    )

    # An event of the new tenant runs in the new tenant's schema.
    async with unit_of_work(platform.factory) as session:
        joined = MemberJoined(user_id=uuid.uuid4(), role="viewer")
        event_id = await emit(session, joined, tenant=world.tenant_a)
    row = pg.execute(
        "SELECT tenant_id FROM shared.outbox WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert row is not None
    assert str(row[0]) == new_id
    fresh = Event(
        event_id=event_id,
        event_type="member.joined",
        tenant=world.tenant_a,
        tenant_id=row[0],
        aggregate_type="member",
        aggregate_id="m",
        payload={},
    ).to_message_arg()
    assert await apply_event(handler, "test_actor", fresh, platform.factory) is True
    assert ran == [f'"t_{world.tenant_a.replace("-", "_")}", extensions']


async def test_events_of_a_deleted_tenant_are_dropped_by_workers(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant_id = pg.execute(
        "SELECT id FROM shared.tenants WHERE slug = %s", (world.tenant_b,)
    ).fetchone()[0]  # type: ignore[index]
    deleted = await platform.client.delete(
        f"/api/v1/tenants/{world.tenant_b}", headers=world.admin_y.headers
    )
    assert deleted.status_code == 200
    ran: list[Event] = []

    async def handler(session: AsyncSession, event: Event) -> None:
        ran.append(event)

    envelope = Event(
        event_id=uuid.uuid4(),
        event_type="member.joined",
        tenant=world.tenant_b,
        tenant_id=tenant_id,
        aggregate_type="member",
        aggregate_id="m",
        payload={},
    ).to_message_arg()
    assert await apply_event(handler, "test_actor", envelope, platform.factory) is False
    assert ran == []
