"""A tenant's events stay readable after the relay dispatched them: newest first, or forward
from a position without ever skipping an event committed later; within the plan's retention,
kept by day partitions the relay creates and drops."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from outbox_relay import history
from outbox_relay.relay import product_routes
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.engine import libpq_url
from socialflow.outbox import emit
from socialflow.outbox.status import requeue_dead_letters
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import NoteAdded, NoteDoomed
from tests.integration.tenancy_fixtures import Platform, World

Factory = async_sessionmaker[AsyncSession]


async def _drain(make_relay: RelayFactory, **options: Any) -> None:
    relay = make_relay(routes=product_routes(), **options)
    while await relay.dispatch_batch():
        pass


async def _events(platform: Platform, tenant: str, headers: dict[str, str], query: str = "") -> Any:
    response = await platform.client.get(f"/api/v1/tenants/{tenant}/events{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _tenant_id(pg: psycopg.Connection[Any], slug: str) -> uuid.UUID:
    row = pg.execute("SELECT id FROM shared.tenants WHERE slug = %s", (slug,)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _history_row(
    pg: psycopg.Connection[Any], tenant_id: uuid.UUID, *, at: datetime, event_type: str
) -> uuid.UUID:
    event_id = uuid.uuid4()
    pg.execute(
        "INSERT INTO shared.event_history (occurred_at, event_id, tenant_id, aggregate_type, "
        "aggregate_id, event_type, payload) VALUES (%s, %s, %s, 'probe', 'p-1', %s, %s)",
        (at, event_id, tenant_id, event_type, Jsonb({"n": 1})),
    )
    return event_id


async def test_admins_read_their_tenants_dispatched_events_newest_first(
    platform: Platform, world: World, make_relay: RelayFactory
) -> None:
    owner = world.owner_a.headers
    for name in ("First", "Second"):
        response = await platform.client.put(
            f"/api/v1/tenants/{world.tenant_a}/settings",
            json={"display_name": name},
            headers=owner | {"X-Request-ID": f"req-{name}"},
        )
        assert response.status_code == 200, response.text
    before = await _events(platform, world.tenant_a, owner, "?type=settings.updated")
    assert before["items"] == []  # not dispatched yet: the outbox still holds them
    await _drain(make_relay)

    items = (await _events(platform, world.tenant_a, owner, "?type=settings.updated"))["items"]
    assert [i["payload"]["after"]["display_name"] for i in items][:2] == ["Second", "First"]
    assert items[0]["request_id"] == "req-Second"
    assert items[0]["aggregate_type"] == "settings"
    assert items[0]["position"]
    # The other tenant's feed has none of them; its owner cannot read this one.
    others = await _events(platform, world.tenant_b, world.owner_b.headers)
    assert not {i["event_id"] for i in others["items"]} & {i["event_id"] for i in items}
    refused = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/events", headers=world.owner_b.headers
    )
    assert refused.status_code in (403, 404)


@pytest.mark.parametrize("role", ["viewer", "editor"])
async def test_below_admin_the_history_is_refused(
    platform: Platform, world: World, role: str
) -> None:
    member = await platform.member(world.tenant_a, role)
    response = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/events", headers=member.headers
    )
    assert response.status_code == 403


async def test_filters_by_type_pattern_and_aggregate(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant_id = _tenant_id(pg, world.tenant_a)
    now = datetime.now(UTC)
    published = _history_row(pg, tenant_id, at=now, event_type="probe.published")
    failed = _history_row(pg, tenant_id, at=now, event_type="probe.failed")
    other = _history_row(pg, tenant_id, at=now, event_type="probelike.added")
    owner = world.owner_a.headers

    def ids(body: Any) -> set[str]:
        return {i["event_id"] for i in body["items"]}

    assert ids(await _events(platform, world.tenant_a, owner, "?type=probe.*")) == {
        str(published),
        str(failed),
    }
    exact = await _events(platform, world.tenant_a, owner, "?type=probe.failed")
    assert ids(exact) == {str(failed)}
    by_aggregate = await _events(
        platform, world.tenant_a, owner, "?aggregate_type=probe&aggregate_id=p-1"
    )
    assert ids(by_aggregate) == {str(published), str(failed), str(other)}
    for bad in ("?type=post.*.x", "?type=Robert');", "?aggregate_id=" + "x" * 129, "?limit=0"):
        response = await platform.client.get(
            f"/api/v1/tenants/{world.tenant_a}/events{bad}", headers=owner
        )
        assert response.status_code == 422, (bad, response.text)


async def test_a_forward_reader_never_skips_an_event_committed_after_a_later_one(
    platform: Platform, world: World, pg: psycopg.Connection[Any], database_url: str
) -> None:
    """Two relays record events: the first's transaction is older but commits last. A reader
    following positions must not pass the second's event before the first's is visible."""
    tenant_id = _tenant_id(pg, world.tenant_a)
    owner = world.owner_a.headers
    start = await _events(platform, world.tenant_a, owner, "?after=beginning&limit=200")
    position = start["items"][-1]["position"] if start["items"] else "beginning"
    slow = psycopg.connect(libpq_url(database_url))
    try:
        slow.execute("SELECT 1")  # a transaction is open; its id comes with its first write
        early = _history_row(slow, tenant_id, at=datetime.now(UTC), event_type="probe.early")
        late = _history_row(pg, tenant_id, at=datetime.now(UTC), event_type="probe.late")

        newest = await _events(platform, world.tenant_a, owner)
        assert newest["items"][0]["event_id"] == str(late)  # committed: shown newest first
        held = await _events(platform, world.tenant_a, owner, f"?after={position}")
        assert str(late) not in {i["event_id"] for i in held["items"]}
        slow.commit()
    finally:
        slow.close()
    caught_up = await _events(platform, world.tenant_a, owner, f"?after={position}")
    assert [i["event_id"] for i in caught_up["items"]][-2:] == [str(early), str(late)]


async def test_pages_forward_follow_the_cursor_without_repeats(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant_id = _tenant_id(pg, world.tenant_b)
    written = [
        _history_row(pg, tenant_id, at=datetime.now(UTC), event_type="probe.paged")
        for _ in range(5)
    ]
    owner = world.owner_b.headers
    seen: list[str] = []
    query = "?type=probe.paged&limit=2&after=beginning"
    while True:
        body = await _events(platform, world.tenant_b, owner, query)
        seen += [i["event_id"] for i in body["items"]]
        if body["next_cursor"] is None:
            break
        query = f"?type=probe.paged&limit=2&after={body['next_cursor']}"
    assert seen == [str(e) for e in written]
    backwards: list[str] = []
    query = "?type=probe.paged&limit=2"
    while True:
        body = await _events(platform, world.tenant_b, owner, query)
        backwards += [i["event_id"] for i in body["items"]]
        if body["next_cursor"] is None:
            break
        query = f"?type=probe.paged&limit=2&cursor={body['next_cursor']}"
    assert backwards == [str(e) for e in reversed(written)]


async def test_events_older_than_the_plans_retention_are_not_shown(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    tenant_id = _tenant_id(pg, world.tenant_a)
    now = datetime.now(UTC)
    recent = _history_row(pg, tenant_id, at=now - timedelta(hours=12), event_type="probe.kept")
    old = _history_row(pg, tenant_id, at=now - timedelta(days=3), event_type="probe.kept")
    await platform.entitle(world.admin_x, world.tenant_a, event_retention_days=2)
    body = await _events(platform, world.tenant_a, world.owner_a.headers, "?type=probe.kept")
    assert {i["event_id"] for i in body["items"]} == {str(recent)}
    assert str(old) not in str(body)


async def test_a_deferred_event_enters_the_history_when_due_as_of_its_due_time(
    session_factory: Factory,
    make_relay: RelayFactory,
    pg: psycopg.Connection[Any],
    event_tenants: dict[str, uuid.UUID],
) -> None:
    slug, tenant_id = next(iter(event_tenants.items()))
    due = datetime.now(UTC) + timedelta(seconds=30)
    async with session_factory() as session, session.begin():
        event_id = await emit(session, NoteAdded(note_id="d-1"), tenant=slug, available_at=due)
    relay = make_relay()
    assert await relay.dispatch_batch() == 0
    pg.execute(
        "UPDATE shared.outbox SET available_at = created_at + interval '1 millisecond' "
        "WHERE event_id = %s",
        (event_id,),
    )
    fell_due = pg.execute(
        "SELECT available_at FROM shared.outbox WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert fell_due is not None
    assert await relay.dispatch_batch() == 1
    row = pg.execute(
        "SELECT occurred_at, tenant_id FROM shared.event_history WHERE event_id = %s",
        (event_id,),
    ).fetchall()
    assert row == [(fell_due[0], tenant_id)]


async def test_an_event_is_recorded_once_across_a_dead_letter_and_its_requeue(
    session_factory: Factory,
    make_relay: RelayFactory,
    pg: psycopg.Connection[Any],
    event_tenants: dict[str, uuid.UUID],
) -> None:
    slug = next(iter(event_tenants))
    async with session_factory() as session, session.begin():
        event_id = await emit(session, NoteDoomed(note_id="x-1"), tenant=slug)  # no route
    relay = make_relay()
    assert await relay.dispatch_batch() == 1
    async with session_factory() as session, session.begin():
        assert await requeue_dead_letters(session, [event_id]) == 1
    requeued = pg.execute(
        "SELECT tenant_id FROM shared.outbox WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert requeued is not None
    assert requeued[0] == event_tenants[slug]  # it keeps its tenant's id
    assert await relay.dispatch_batch() == 1
    count = pg.execute(
        "SELECT count(*) FROM shared.event_history WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert count == (1,)


async def test_events_without_a_tenant_are_not_kept(
    session_factory: Factory, make_relay: RelayFactory, pg: psycopg.Connection[Any]
) -> None:
    async with session_factory() as session, session.begin():
        event_id = await emit(session, NoteAdded(note_id="p-1"), tenant=None)
    assert await make_relay().dispatch_batch() == 1
    found = pg.execute(
        "SELECT count(*) FROM shared.event_history WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert found == (0,)


def _partitions(pg: psycopg.Connection[Any]) -> set[str]:
    return {
        row[0]
        for row in pg.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'shared.event_history'::regclass"
        ).fetchall()
    }


async def test_upkeep_makes_days_ahead_drops_days_past_every_retention_and_prunes_short_ones(
    platform: Platform, world: World, pg: psycopg.Connection[Any], database_url: str
) -> None:
    now = datetime.now(UTC)
    short_id, long_id = _tenant_id(pg, world.tenant_a), _tenant_id(pg, world.tenant_b)
    await platform.entitle(world.admin_x, world.tenant_a, event_retention_days=1)
    short_old = _history_row(pg, short_id, at=now - timedelta(days=2), event_type="probe.x")
    short_new = _history_row(pg, short_id, at=now - timedelta(hours=1), event_type="probe.x")
    long_old = _history_row(pg, long_id, at=now - timedelta(days=2), event_type="probe.x")
    ancient_day = (now - timedelta(days=4000)).date()
    pg.execute(
        f"CREATE TABLE IF NOT EXISTS shared.{history.partition_name(ancient_day)} PARTITION OF "
        f"shared.event_history FOR VALUES FROM ('{ancient_day}') "
        f"TO ('{ancient_day + timedelta(days=1)}')"
    )
    ancient = _history_row(pg, long_id, at=now - timedelta(days=4000), event_type="probe.x")
    in_default = _history_row(pg, long_id, at=now - timedelta(days=3990), event_type="probe.x")

    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url))
    try:
        await history.maintain(conn, now=now)
    finally:
        await conn.close()

    partitions = _partitions(pg)
    for offset in range(-1, history.DAYS_AHEAD + 1):
        assert history.partition_name((now + timedelta(days=offset)).date()) in partitions
    assert history.partition_name(ancient_day) not in partitions
    kept = {
        row[0]
        for row in pg.execute(
            "SELECT event_id FROM shared.event_history WHERE event_id = ANY(%s)",
            ([short_old, short_new, long_old, ancient, in_default],),
        ).fetchall()
    }
    assert kept == {short_new, long_old}
