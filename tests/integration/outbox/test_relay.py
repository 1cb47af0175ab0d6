"""The relay moves exactly the committed, due outbox rows to Dramatiq's Redis queues."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from dramatiq import Message
from outbox_relay.messages import MAX_MESSAGE_BYTES
from psycopg.types.json import Jsonb
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.engine import libpq_url
from socialflow.outbox import OutboxError, emit
from socialflow.workers.broker import NAMESPACE, create_broker
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import (
    NOTES_QUEUE,
    NoteAdded,
    NoteEvent,
    NoteShared,
    NoteSilent,
    emit_notes,
    queued_event_ids,
    queued_messages,
    wait_until,
)

Factory = async_sessionmaker[AsyncSession]


async def _emit_one(
    session: AsyncSession, event: type[NoteEvent] = NoteAdded, **options: Any
) -> uuid.UUID:
    options.setdefault("tenant", None)
    return await emit(session, event(note_id="n-1", body="hello"), **options)


async def test_an_event_from_a_rolled_back_transaction_is_never_dispatched(
    make_relay: RelayFactory, session_factory: Factory, redis_client: redis_lib.Redis
) -> None:
    async with session_factory() as session:
        await session.begin()
        await _emit_one(session)
        await session.rollback()
    assert await make_relay().dispatch_batch() == 0
    assert queued_event_ids(redis_client) == []


async def test_a_committed_event_is_dispatched_exactly_once(
    make_relay: RelayFactory, session_factory: Factory, redis_client: redis_lib.Redis
) -> None:
    async with session_factory() as session, session.begin():
        event_id = await _emit_one(session, tenant="alpha")
    relay = make_relay()
    assert await relay.dispatch_batch() == 1
    assert await relay.dispatch_batch() == 0
    assert queued_event_ids(redis_client) == [str(event_id)]


async def test_emit_refuses_to_write_outside_a_transaction(session_factory: Factory) -> None:
    async with session_factory() as session:
        with pytest.raises(OutboxError, match="open transaction"):
            await _emit_one(session)


async def test_emit_refuses_an_event_class_that_declares_no_event_type(
    session_factory: Factory,
) -> None:
    async with session_factory() as session, session.begin():
        with pytest.raises(OutboxError, match="not a declared event type"):
            await _emit_one(session, NoteEvent)


async def test_messages_are_what_dramatiqs_redis_broker_writes(
    make_relay: RelayFactory,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
    redis_url: str,
    event_tenants: dict[str, uuid.UUID],
) -> None:
    async with session_factory() as session, session.begin():
        event_id = await _emit_one(session, NoteShared, tenant="alpha")
    alpha = str(event_tenants["alpha"])
    await make_relay().dispatch_batch()

    (note,) = queued_messages(redis_client, NOTES_QUEUE)
    (count,) = queued_messages(redis_client, "test_counts")
    assert note["message_id"] == count["message_id"] == str(event_id)
    assert (note["actor_name"], count["actor_name"]) == ("add_note", "count_note")
    assert note["options"]["tenant"] == "alpha"
    assert note["args"][0]["payload"] == {"note_id": "n-1", "body": "hello"}
    assert note["args"][0]["event_type"] == "note.shared"
    # The queue entry is the message's redis id, as the broker's enqueue script writes it …
    redis_ids = redis_client.lrange(f"{NAMESPACE}:{NOTES_QUEUE}", 0, -1)
    assert [i.decode() for i in redis_ids] == [note["options"]["redis_message_id"]]
    # … and it decodes to the very message RedisBroker.enqueue would have written …
    raw = redis_client.hget(f"{NAMESPACE}:{NOTES_QUEUE}.msgs", redis_ids[0])
    assert raw is not None
    decoded = Message.decode(raw)
    envelope = dict(decoded.args[0])
    assert datetime.fromisoformat(envelope.pop("occurred_at")).tzinfo is not None
    assert envelope == {
        "event_id": str(event_id),
        "event_type": "note.shared",
        "tenant": "alpha",
        "tenant_id": alpha,
        "aggregate_type": "note",
        "aggregate_id": "n-1",
        "payload": {"note_id": "n-1", "body": "hello"},
        "headers": {},
    }
    broker_built = Message(
        queue_name=NOTES_QUEUE,
        actor_name="add_note",
        args=decoded.args,
        kwargs={},
        options={"tenant": "alpha", "tenant_id": alpha, "request_id": None, "traceparent": None},
        message_id=str(event_id),
        message_timestamp=decoded.message_timestamp,
    ).copy(options={"redis_message_id": redis_ids[0].decode()})
    assert decoded == broker_built
    assert list(json.loads(raw)) == list(json.loads(broker_built.encode()))
    # … so Dramatiq's own consumer fetches and decodes it.
    broker = create_broker(redis_url)
    broker.declare_queue(NOTES_QUEUE)
    consumer = broker.consume(NOTES_QUEUE, prefetch=1, timeout=1000)
    fetched = next(consumer)
    assert fetched is not None
    assert fetched.message_id == str(event_id)
    assert fetched.actor_name == "add_note"
    consumer.ack(fetched)
    consumer.close()


@pytest.mark.parametrize("relay_count", [2, 4])
async def test_concurrent_relays_dispatch_every_event_exactly_once(
    relay_count: int,
    make_relay: RelayFactory,
    running_relays: Any,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
    pg: psycopg.Connection[Any],
) -> None:
    emitted = await emit_notes(session_factory, 10_000, tenant="alpha")
    for _ in range(relay_count):
        running_relays(make_relay(batch_size=250))

    await wait_until(
        lambda: (
            redis_client.llen(f"{NAMESPACE}:{NOTES_QUEUE}") >= 10_000
            and pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)
        ),
        timeout_s=120,
        message="10,000 events dispatched",
    )
    dispatched = queued_event_ids(redis_client)
    assert len(dispatched) == 10_000
    assert set(dispatched) == {str(e) for e in emitted}


async def test_rows_committing_out_of_id_order_are_all_dispatched(
    make_relay: RelayFactory, session_factory: Factory, redis_client: redis_lib.Redis
) -> None:
    relay = make_relay()
    async with session_factory() as early, session_factory() as late:
        await early.begin()
        first = await _emit_one(early)  # takes the lower id, commits last
        await late.begin()
        second = await _emit_one(late)
        await late.commit()

        assert await relay.dispatch_batch() == 1
        assert queued_event_ids(redis_client) == [str(second)]

        await early.commit()
    assert await relay.dispatch_batch() == 1
    assert queued_event_ids(redis_client) == [str(second), str(first)]


async def test_a_long_open_transaction_does_not_stop_dispatch(
    make_relay: RelayFactory,
    running_relays: Any,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
    database_url: str,
) -> None:
    with psycopg.connect(libpq_url(database_url)) as holder:
        # An open transaction that holds a snapshot and an uncommitted outbox row.
        holder.execute("SELECT txid_current()")
        holder.execute(
            "INSERT INTO shared.outbox (event_id, aggregate_type, aggregate_id, event_type, "
            "payload) VALUES (gen_random_uuid(), 'note', 'held', 'note.added', '{}')"
        )
        running_relays(make_relay())
        emitted = await emit_notes(session_factory, 300, per_transaction=10)
        await wait_until(
            lambda: len(queued_event_ids(redis_client)) >= 300, message="dispatch past a held tx"
        )
        assert set(queued_event_ids(redis_client)) == {str(e) for e in emitted}
        holder.rollback()


async def test_a_deferred_event_waits_for_its_available_at(
    make_relay: RelayFactory,
    running_relays: Any,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
) -> None:
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    async with session_factory() as session, session.begin():
        deferred = await _emit_one(session, available_at=due)
        now = await _emit_one(session)
    running_relays(make_relay(poll_interval_s=10.0))

    await wait_until(lambda: str(now) in queued_event_ids(redis_client), message="due event")
    assert str(deferred) not in queued_event_ids(redis_client)
    await wait_until(
        lambda: str(deferred) in queued_event_ids(redis_client),
        timeout_s=8,
        message="deferred event after its time (the relay wakes for it, not for the 10 s poll)",
    )
    assert datetime.now(UTC) >= due


async def test_an_idle_relay_wakes_on_notify_rather_than_its_poll(
    make_relay: RelayFactory,
    running_relays: Any,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
) -> None:
    relay = make_relay(poll_interval_s=60.0)
    running_relays(relay)
    await asyncio.sleep(1.2)  # let the relay leave its post-traffic fast-poll window
    async with session_factory() as session, session.begin():
        event_id = await _emit_one(session)
    await wait_until(
        lambda: queued_event_ids(redis_client) == [str(event_id)],
        timeout_s=10,
        message="dispatch within seconds although the poll interval is 60 s",
    )


async def test_poison_rows_are_dead_lettered_and_the_rows_behind_them_go_through(
    make_relay: RelayFactory,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
    pg: psycopg.Connection[Any],
) -> None:
    async with session_factory() as session, session.begin():
        before = await _emit_one(session)
    insert = (
        "INSERT INTO shared.outbox (event_id, aggregate_type, aggregate_id, event_type, payload) "
        "VALUES (%s, 'note', 'p', %s, %s)"
    )
    unknown, oversized = uuid.uuid4(), uuid.uuid4()
    pg.execute(insert, (unknown, "note.from_the_future", Jsonb({})))
    pg.execute(insert, (oversized, "note.added", Jsonb({"blob": "x" * MAX_MESSAGE_BYTES})))
    async with session_factory() as session, session.begin():
        after = await _emit_one(session)

    await make_relay().dispatch_batch()

    assert queued_event_ids(redis_client) == [str(before), str(after)]
    dead = dict(pg.execute("SELECT event_id, error FROM shared.outbox_dead_letter").fetchall())
    assert set(dead) == {unknown, oversized}
    assert "unknown event type" in dead[unknown]
    assert "limit" in dead[oversized]
    assert pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)


async def test_an_event_with_no_consumer_yet_leaves_the_outbox_without_a_message(
    make_relay: RelayFactory,
    session_factory: Factory,
    redis_client: redis_lib.Redis,
    pg: psycopg.Connection[Any],
) -> None:
    async with session_factory() as session, session.begin():
        await _emit_one(session, NoteSilent)
    assert await make_relay().dispatch_batch() == 1
    assert queued_event_ids(redis_client) == []
    assert pg.execute("SELECT count(*) FROM shared.outbox_dead_letter").fetchone() == (0,)


async def test_events_carry_the_request_id_traceparent_and_actor_of_their_cause(
    make_relay: RelayFactory, session_factory: Factory, redis_client: redis_lib.Redis
) -> None:
    import structlog

    from socialflow.lib.tracing import current_traceparent

    parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    token = current_traceparent.set(parent)
    structlog.contextvars.bind_contextvars(request_id="req-77")
    try:
        async with session_factory() as session, session.begin():
            await _emit_one(session, actor="user:42")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
        current_traceparent.reset(token)
    await make_relay().dispatch_batch()
    (message,) = queued_messages(redis_client)
    assert message["args"][0]["headers"] == {
        "request_id": "req-77",
        "traceparent": parent,
        "actor": "user:42",
    }
    assert message["options"]["request_id"] == "req-77"
    assert message["options"]["traceparent"] == parent


async def test_processed_event_records_past_retention_are_pruned(
    make_relay: RelayFactory, pg: psycopg.Connection[Any]
) -> None:
    old, recent = uuid.uuid4(), uuid.uuid4()
    pg.execute(
        "INSERT INTO shared.processed_event (event_id, actor, processed_at) VALUES "
        "(%s, 'a', now() - interval '200 hours'), (%s, 'a', now() - interval '1 hour')",
        (old, recent),
    )
    await make_relay(processed_retention_hours=168)._prune_processed_events()
    remaining = [r[0] for r in pg.execute("SELECT event_id FROM shared.processed_event")]
    assert remaining == [recent]


async def test_the_outbox_is_empty_once_dispatched(
    make_relay: RelayFactory, session_factory: Factory, pg: psycopg.Connection[Any]
) -> None:
    await emit_notes(session_factory, 1_000)
    relay = make_relay(batch_size=300)
    while await relay.dispatch_batch():
        pass
    assert pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)


async def test_a_session_without_a_tenant_sees_no_tenant_schema(session_factory: Factory) -> None:
    async with session_factory() as session, session.begin():
        path = (await session.execute(text("SHOW search_path"))).scalar_one()
    assert path == "extensions"


async def test_an_idle_relay_does_not_spin_on_a_row_another_relay_holds(
    make_relay: RelayFactory,
    session_factory: Factory,
    database_url: str,
    running_relays: Any,
) -> None:
    async with session_factory() as session, session.begin():
        await _emit_one(session)
    with psycopg.connect(libpq_url(database_url)) as peer:
        # A peer relay mid-batch: the only due row is locked.
        peer.execute("SELECT id FROM shared.outbox FOR UPDATE")
        relay = make_relay(poll_interval_s=0.5)
        claims = 0
        original = relay.dispatch_batch

        async def counting() -> int:
            nonlocal claims
            claims += 1
            return await original()

        relay.dispatch_batch = counting  # type: ignore[method-assign]
        running_relays(relay)
        await asyncio.sleep(1.5)
        peer.rollback()
    assert claims < 20


async def test_emit_refuses_a_naive_available_at(session_factory: Factory) -> None:
    async with session_factory() as session, session.begin():
        with pytest.raises(OutboxError, match="timezone-aware"):
            await _emit_one(session, available_at=datetime(2030, 1, 1, 12, 0))
