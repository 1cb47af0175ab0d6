"""Shared pieces of the outbox and worker tests: test events and their routing table,
emitting, reading Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis as redis_lib
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.outbox import emit_many
from socialflow.outbox.events import AuditLog, DomainEvent
from socialflow.outbox.routing import Route, by_event_type
from socialflow.workers.broker import NAMESPACE


class NoteEvent(DomainEvent, frozen=True, kw_only=True):
    """The tests' events, about notes (a shared base: not an event itself)."""

    aggregate_type = "note"
    aggregate_key = "note_id"
    audit_log = AuditLog.NONE

    note_id: str
    body: str | None = None


class NoteAdded(NoteEvent, frozen=True, kw_only=True):
    event_type = "note.added"


class NoteShared(NoteEvent, frozen=True, kw_only=True):
    event_type = "note.shared"


class NoteSilent(NoteEvent, frozen=True, kw_only=True):
    event_type = "note.silent"


class NoteDoomed(NoteEvent, frozen=True, kw_only=True):
    event_type = "note.doomed"


NOTES_QUEUE = "test_notes"
TEST_ROUTES = by_event_type(
    {
        NoteAdded: (Route("add_note", NOTES_QUEUE),),
        NoteShared: (Route("add_note", NOTES_QUEUE), Route("count_note", "test_counts")),
        NoteSilent: (),
    }
)


async def emit_notes(
    factory: async_sessionmaker[AsyncSession],
    count: int,
    *,
    tenant: str | None = None,
    per_transaction: int = 500,
    event: type[NoteEvent] = NoteAdded,
) -> list[uuid.UUID]:
    """Emit `count` events in transactions of `per_transaction`; return their ids."""
    ids: list[uuid.UUID] = []
    while len(ids) < count:
        notes = [
            event(note_id=str(n), body=f"note {n}")
            for n in range(len(ids), min(len(ids) + per_transaction, count))
        ]
        async with factory() as session, session.begin():
            ids.extend(await emit_many(session, notes, tenant=tenant))
    return ids


def queued_messages(client: redis_lib.Redis, queue: str = NOTES_QUEUE) -> list[dict[str, Any]]:
    """Every message on a Dramatiq queue, in queue order, decoded."""
    ids = client.lrange(f"{NAMESPACE}:{queue}", 0, -1)
    if not ids:
        return []
    raw = client.hmget(f"{NAMESPACE}:{queue}.msgs", ids)
    return [json.loads(data) for data in raw if data is not None]


def queued_event_ids(client: redis_lib.Redis, queue: str = NOTES_QUEUE) -> list[str]:
    return [m["message_id"] for m in queued_messages(client, queue)]


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout_s: float = 30.0,
    message: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = condition()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{message} not met within {timeout_s} s")
