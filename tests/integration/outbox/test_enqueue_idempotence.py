"""A batch sent twice adds nothing twice; a queue that refuses the command does not hold the
relay forever; every event carries its tenant's id."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from outbox_relay.messages import EncodedMessage
from outbox_relay.relay import OutboxRelay
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.outbox import OutboxError, emit_many
from socialflow.workers.broker import NAMESPACE
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import (
    NOTES_QUEUE,
    TEST_ROUTES,
    NoteAdded,
    NoteShared,
    emit_notes,
    queued_messages,
)

Factory = async_sessionmaker[AsyncSession]


class TimeoutAfterExec(OutboxRelay):
    """Redis applies the batch, then the reply is lost (a timeout after EXEC), `lost` times."""

    lost: int = 0

    async def enqueue(self, client: redis_lib.Redis, encoded: list[EncodedMessage]) -> Any:
        refused = await super().enqueue(client, encoded)
        if self.lost > 0:
            self.lost -= 1
            raise RedisTimeoutError("Timeout reading from socket")
        return refused


async def test_a_batch_sent_again_after_a_lost_reply_adds_no_message_twice(
    database_url: str,
    redis_url: str,
    clean_outbox: None,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
    pg: psycopg.Connection[Any],
) -> None:
    emitted = await emit_notes(session_factory, 50, tenant="alpha")
    relay = TimeoutAfterExec(
        database_url=database_url.replace("+psycopg", ""),
        redis_url=redis_url,
        routes=TEST_ROUTES,
        batch_size=100,
    )
    relay.lost = 3
    try:
        for _ in range(3):  # each attempt rolls its claim back, as the relay's loop does
            with pytest.raises(RedisTimeoutError):
                await relay.dispatch_batch()
        assert await relay.dispatch_batch() == 50
    finally:
        await relay.close()
    assert pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)
    assert redis_client.llen(f"{NAMESPACE}:{NOTES_QUEUE}") == 50
    assert sorted(m["message_id"] for m in queued_messages(redis_client)) == sorted(
        map(str, emitted)
    )


async def test_a_queue_that_refuses_the_command_dead_letters_its_events_and_spares_the_others(
    make_relay: RelayFactory,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
    pg: psycopg.Connection[Any],
) -> None:
    # Someone wrote a string where the test_counts queue's list lives: WRONGTYPE, every time.
    redis_client.set(f"{NAMESPACE}:test_counts", "not a list")
    shared = await emit_notes(session_factory, 3, tenant="alpha", event=NoteShared)
    added = await emit_notes(session_factory, 2, tenant="alpha")
    relay = make_relay(max_enqueue_attempts=3, retry_base_s=0.0)
    for _ in range(3):
        await relay.dispatch_batch()
    # The events routed only to healthy queues went through at once …
    notes = [m["message_id"] for m in queued_messages(redis_client)]
    assert set(map(str, added)) <= set(notes)
    # … the others were retried, then dead-lettered with the error, none left behind.
    assert pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)
    dead = pg.execute(
        "SELECT event_id, attempts, error FROM shared.outbox_dead_letter ORDER BY event_id"
    ).fetchall()
    assert sorted(row[0] for row in dead) == sorted(shared)
    assert {row[1] for row in dead} == {3}
    assert all("WRONGTYPE" in row[2] for row in dead)
    # Their message on the healthy queue was written once, however many attempts were made,
    # and nothing of theirs lingers in the refusing queue's message store.
    assert sorted(notes) == sorted(map(str, [*shared, *added]))
    assert redis_client.hlen(f"{NAMESPACE}:test_counts.msgs") == 0


async def test_every_outbox_row_carries_its_tenants_id(
    clean_outbox: None,
    event_tenants: dict[str, uuid.UUID],
    session_factory: Factory,
    pg: psycopg.Connection[Any],
) -> None:
    await emit_notes(session_factory, 2, tenant="alpha")
    await emit_notes(session_factory, 1, tenant="beta")
    await emit_notes(session_factory, 1)
    rows = pg.execute("SELECT tenant, tenant_id FROM shared.outbox ORDER BY id").fetchall()
    assert rows == [
        ("alpha", event_tenants["alpha"]),
        ("alpha", event_tenants["alpha"]),
        ("beta", event_tenants["beta"]),
        (None, None),
    ]


async def test_an_event_naming_no_live_tenant_is_refused(
    clean_outbox: None, session_factory: Factory, pg: psycopg.Connection[Any]
) -> None:
    async def emit_in_a_transaction() -> None:
        async with session_factory() as session, session.begin():
            await emit_many(session, [NoteAdded(note_id="1")], tenant="ghost-tenant")

    with pytest.raises(OutboxError, match="no live tenant 'ghost-tenant'"):
        await emit_in_a_transaction()
    assert pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)
