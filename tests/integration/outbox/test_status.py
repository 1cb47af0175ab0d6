"""Operators see the backlog, its age and the dead letters, and can requeue dead letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis as redis_lib
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.session import unit_of_work
from socialflow.outbox.status import outbox_status, requeue_dead_letters
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import TEST_ROUTES, emit_notes, queued_event_ids

Factory = async_sessionmaker[AsyncSession]


def _insert_raw(pg: psycopg.Connection[Any], event_type: str, *, due_in_s: float = 0) -> uuid.UUID:
    event_id = uuid.uuid4()
    pg.execute(
        "INSERT INTO shared.outbox (event_id, aggregate_type, aggregate_id, event_type, payload, "
        "available_at) VALUES (%s, 'note', 'x', %s, %s, %s)",
        (event_id, event_type, Jsonb({}), datetime.now(UTC) + timedelta(seconds=due_in_s)),
    )
    return event_id


async def test_status_counts_due_deferred_dead_and_the_age_of_the_oldest_due(
    make_relay: RelayFactory, session_factory: Factory, pg: psycopg.Connection[Any]
) -> None:
    _insert_raw(pg, "note.unknown")
    await make_relay().dispatch_batch()  # → one dead letter
    _insert_raw(pg, "note.added", due_in_s=-30)
    _insert_raw(pg, "note.added")
    _insert_raw(pg, "note.added", due_in_s=3600)

    async with unit_of_work(session_factory) as session:
        status = await outbox_status(session)
    assert (status.due, status.deferred, status.dead_letters) == (2, 1, 1)
    assert status.oldest_due_age_s is not None
    assert 29 <= status.oldest_due_age_s < 60


async def test_a_requeued_dead_letter_is_dispatched_once_its_route_exists(
    make_relay: RelayFactory,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
    redis_client: redis_lib.Redis,
) -> None:
    event_id = _insert_raw(pg, "note.renamed")
    await make_relay().dispatch_batch()
    assert pg.execute("SELECT count(*) FROM shared.outbox_dead_letter").fetchone() == (1,)

    async with unit_of_work(session_factory) as session:
        assert await requeue_dead_letters(session, [event_id]) == 1
    fixed_routes = {**TEST_ROUTES, "note.renamed": TEST_ROUTES["note.added"]}
    assert await make_relay(routes=fixed_routes).dispatch_batch() == 1
    assert queued_event_ids(redis_client) == [str(event_id)]
    assert pg.execute("SELECT count(*) FROM shared.outbox_dead_letter").fetchone() == (0,)


async def test_the_status_command_prints_json(
    session_factory: Factory, database_url: str, clean_outbox: None, project_root: Path
) -> None:
    await emit_notes(session_factory, 3)
    result = subprocess.run(  # noqa: ASYNC221 - a short command, run once
        [sys.executable, "-m", "socialflow", "outbox", "status", "--json"],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=project_root,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["due"] == 3
    assert status["dead_letters"] == 0
