"""The exactly-once core of actors: concurrent duplicates apply once; handlers cannot commit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.outbox.events import Event
from socialflow.workers.actors import apply_event


def _envelope(tenant: str | None = "alpha") -> dict[str, Any]:
    return Event(
        event_id=uuid.uuid4(),
        event_type="note.added",
        tenant=tenant,
        aggregate_type="note",
        aggregate_id="n",
        payload={"body": "once"},
    ).to_message_arg()


async def test_concurrent_deliveries_of_one_event_apply_it_once(
    session_factory: async_sessionmaker[AsyncSession],
    tenant_schemas: None,
    clean_outbox: None,
    pg: psycopg.Connection[Any],
) -> None:
    runs = 0

    async def slow_handler(session: AsyncSession, event: Event) -> None:
        nonlocal runs
        runs += 1
        await session.execute(
            text("INSERT INTO notes (event_id, body) VALUES (:e, 'x')"), {"e": event.event_id}
        )
        await asyncio.sleep(0.05)  # keep the first delivery's transaction open

    envelope = _envelope()
    outcomes = await asyncio.gather(
        *(apply_event(slow_handler, "add_note", envelope, session_factory) for _ in range(8))
    )
    assert sorted(outcomes) == [False] * 7 + [True]
    assert runs == 1
    assert pg.execute("SELECT count(*) FROM t_alpha.notes").fetchone() == (1,)


async def test_a_handler_that_commits_is_refused_and_nothing_of_it_remains(
    session_factory: async_sessionmaker[AsyncSession],
    tenant_schemas: None,
    clean_outbox: None,
    pg: psycopg.Connection[Any],
) -> None:
    async def committing_handler(session: AsyncSession, event: Event) -> None:
        await session.execute(
            text("INSERT INTO notes (event_id, body) VALUES (:e, 'x')"), {"e": event.event_id}
        )
        await session.commit()

    envelope = _envelope()
    with pytest.raises(RuntimeError, match="must not commit"):
        await apply_event(committing_handler, "add_note", envelope, session_factory)
    assert pg.execute("SELECT count(*) FROM t_alpha.notes").fetchone() == (0,)
    assert pg.execute("SELECT count(*) FROM shared.processed_event").fetchone() == (0,)
