"""Actors run in their event's tenant schema, apply each event once, retry, then dead-letter."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import psycopg
import pytest
import redis as redis_lib
import structlog
from dramatiq import Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.lib.tracing import current_traceparent
from socialflow.outbox import emit
from socialflow.outbox.routing import Route
from socialflow.workers.broker import NAMESPACE
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import (
    NOTES_QUEUE,
    TEST_ROUTES,
    NoteAdded,
    NoteDoomed,
    NoteEvent,
    NoteShared,
    wait_until,
)
from tests.integration.worker_fixtures import FAILING_QUEUE, RunningWorker

Factory = async_sessionmaker[AsyncSession]
ROUTES = {**TEST_ROUTES, NoteDoomed.event_type: (Route("always_fails", FAILING_QUEUE),)}


async def _emit(
    factory: Factory, tenant: str | None, event: type[NoteEvent] = NoteAdded
) -> uuid.UUID:
    async with factory() as session, session.begin():
        return await emit(session, event(note_id="n", body=f"for {tenant}"), tenant=tenant)


def _notes(pg: psycopg.Connection[Any], tenant: str) -> list[tuple[Any, ...]]:
    return pg.execute(
        f"SELECT event_id, body, search_path, request_id, trace_id, bound_event_id "
        f"FROM t_{tenant}.notes"
    ).fetchall()


def _log_events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


async def test_each_actor_runs_under_its_events_tenant_search_path(
    test_worker: RunningWorker,
    make_relay: RelayFactory,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
) -> None:
    alpha = [await _emit(session_factory, "alpha") for _ in range(5)]
    beta = [await _emit(session_factory, "beta") for _ in range(5)]
    await make_relay(routes=ROUTES).dispatch_batch()

    await wait_until(
        lambda: len(_notes(pg, "alpha")) == 5 and len(_notes(pg, "beta")) == 5,
        message="both tenants' notes",
    )
    assert {row[0] for row in _notes(pg, "alpha")} == set(alpha)
    assert {row[0] for row in _notes(pg, "beta")} == set(beta)
    assert {row[2] for row in _notes(pg, "alpha")} == {'"t_alpha", extensions'}
    assert {row[1] for row in _notes(pg, "beta")} == {"for beta"}


async def test_an_event_without_a_tenant_runs_with_no_tenant_schema(
    test_worker: RunningWorker,
    make_relay: RelayFactory,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
) -> None:
    event_id = await _emit(session_factory, None)
    await make_relay(routes=ROUTES).dispatch_batch()
    await wait_until(
        lambda: pg.execute("SELECT count(*) FROM public.untenanted_probe").fetchone() == (1,),
        message="untenanted event applied",
    )
    assert pg.execute("SELECT * FROM public.untenanted_probe").fetchone() == (
        event_id,
        "extensions",
    )


async def test_the_request_id_event_id_and_trace_reach_the_actor(
    test_worker: RunningWorker,
    make_relay: RelayFactory,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
) -> None:
    token = current_traceparent.set("00-" + "c" * 32 + "-" + "d" * 16 + "-01")
    structlog.contextvars.bind_contextvars(request_id="req-from-api")
    try:
        event_id = await _emit(session_factory, "alpha")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
        current_traceparent.reset(token)
    await make_relay(routes=ROUTES).dispatch_batch()
    await wait_until(lambda: len(_notes(pg, "alpha")) == 1, message="note")
    (_, _, _, request_id, trace, bound_event_id) = _notes(pg, "alpha")[0]
    assert request_id == "req-from-api"
    assert trace == "c" * 32
    assert bound_event_id == str(event_id)


async def test_a_duplicate_delivery_changes_nothing(
    test_worker: RunningWorker,
    make_relay: RelayFactory,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
    redis_client: redis_lib.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    event_id = await _emit(session_factory, "alpha")
    await make_relay(routes=ROUTES).dispatch_batch()
    await wait_until(lambda: len(_notes(pg, "alpha")) == 1, message="first delivery applied")

    # The same event redelivered twice more (as a relay retry or a worker crash would).
    first = Message(
        queue_name=NOTES_QUEUE,
        actor_name="add_note",
        args=(
            {
                "event_id": str(event_id),
                "event_type": "note.added",
                "tenant": "alpha",
                "aggregate_type": "note",
                "aggregate_id": "n",
                "payload": {"body": "for alpha"},
                "headers": {},
                "occurred_at": "",
            },
        ),
        kwargs={},
        options={"tenant": "alpha"},
        message_id=str(event_id),
    )
    test_worker.broker.enqueue(first)
    test_worker.broker.enqueue(first)
    await wait_until(
        lambda: len(_log_events(caplog, "actor.duplicate_skipped")) == 2,
        message="both redeliveries skipped",
    )
    assert len(_notes(pg, "alpha")) == 1
    assert pg.execute(
        "SELECT count(*) FROM shared.processed_event WHERE event_id = %s", (event_id,)
    ).fetchone() == (1,)


async def test_one_event_reaches_each_of_its_actors_once(
    test_worker: RunningWorker,
    make_relay: RelayFactory,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
    redis_client: redis_lib.Redis,
) -> None:
    event_id = await _emit(session_factory, "alpha", event=NoteShared)
    await make_relay(routes=ROUTES).dispatch_batch()
    await wait_until(
        lambda: (
            len(_notes(pg, "alpha")) == 1 and redis_client.get(f"count_note:{event_id}") == b"1"
        ),
        message="both actors applied the event",
    )
    actors = pg.execute(
        "SELECT actor FROM shared.processed_event WHERE event_id = %s ORDER BY actor", (event_id,)
    ).fetchall()
    assert actors == [("add_note",), ("count_note",)]


async def test_a_failing_actor_retries_then_dead_letters_with_its_event_id(
    test_worker: RunningWorker,
    make_relay: RelayFactory,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
    redis_client: redis_lib.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    event_id = await _emit(session_factory, "alpha", event=NoteDoomed)
    await make_relay(routes=ROUTES).dispatch_batch()

    await wait_until(
        lambda: redis_client.zcard(f"{NAMESPACE}:{FAILING_QUEUE}.XQ") == 1,
        message="message in Dramatiq's dead-letter queue",
    )
    assert redis_client.get(f"attempts:{event_id}") == b"3"  # the first try and two retries
    await wait_until(
        lambda: bool(_log_events(caplog, "actor.dead_lettered")), message="dead-letter log"
    )
    (logged,) = _log_events(caplog, "actor.dead_lettered")
    assert logged["event_id"] == str(event_id)
    assert logged["tenant"] == "alpha"
    # Every attempt rolled back: neither the effect nor the processed record remains.
    assert _notes(pg, "alpha") == []
    assert pg.execute(
        "SELECT count(*) FROM shared.processed_event WHERE event_id = %s", (event_id,)
    ).fetchone() == (0,)
