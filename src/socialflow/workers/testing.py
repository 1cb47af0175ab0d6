"""For tests: the product's real event actors, bound to a test's own broker.

A test that needs an actor to run (the invitation email, later captioning …) binds the very
actors the worker runs, as `event_actor` declared them, instead of declaring a copy by hand
that could drift from the real one (queue, name, handler, options).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import dramatiq
import dramatiq.errors
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.outbox.events import Event
from socialflow.outbox.routing import RoutingTable
from socialflow.settings import Settings
from socialflow.workers.actors import WorkerResources, apply_named_event
from socialflow.workers.registry import event_actors


def bind_event_actors(
    broker: dramatiq.Broker, **options: Any
) -> dict[str, dramatiq.Actor[[dict[str, Any]], None]]:
    """Declare every real event actor on `broker` (name, queue and handler unchanged);
    `options` override Dramatiq options such as `max_retries` for the test."""
    bound: dict[str, dramatiq.Actor[[dict[str, Any]], None]] = {}
    for name, actor in event_actors().items():
        bound[name] = dramatiq.actor(  # type: ignore[call-overload]
            actor.fn,
            actor_name=name,
            queue_name=actor.queue_name,
            broker=broker,
            **{**actor.options, **options},
        )
    return bound


# The committed events not dispatched yet, oldest first, as the relay reads them.
_PENDING = text("""
SELECT event_id, event_type, tenant, tenant_id, aggregate_type, aggregate_id, payload, headers
FROM shared.outbox WHERE tenant_id = :tenant_id AND event_type = ANY(:types)
  AND (CAST(:due_by AS timestamptz) IS NULL OR available_at <= :due_by)
ORDER BY id
""")


async def pending_rows(
    factory: async_sessionmaker[AsyncSession],
    tenant_id: uuid.UUID,
    *event_types: str,
    due_by: datetime | None = None,
) -> list[Any]:
    """The tenant's committed outbox rows of `event_types`, oldest first (with `due_by`, only
    those available by then: a deferred event waits as the relay makes it wait)."""
    async with factory() as session:
        found = await session.execute(
            _PENDING, {"tenant_id": tenant_id, "types": list(event_types), "due_by": due_by}
        )
        return list(found.all())


async def pending_envelopes(
    factory: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, *event_types: str
) -> list[dict[str, Any]]:
    """Those rows as the messages the relay would send the actors."""
    return [envelope_of(row) for row in await pending_rows(factory, tenant_id, *event_types)]


def envelope_of(row: Any) -> dict[str, Any]:
    return Event(
        event_id=row.event_id,
        event_type=row.event_type,
        tenant=row.tenant,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        payload=row.payload,
        headers=row.headers or {},
        tenant_id=row.tenant_id,
    ).to_message_arg()


async def apply_routed_events(
    factory: async_sessionmaker[AsyncSession],
    routes: RoutingTable,
    tenant_id: uuid.UUID,
    *event_types: str,
    retries: list[int] | None = None,
    max_rounds: int = 20,
    due_by: datetime | None = None,
) -> int:
    """Apply the tenant's pending outbox events of `event_types` with the real actors their
    routes name, in this process and loop, exactly as a worker applies them (once per event
    and actor: a second call applies nothing again). The rows stay for the relay; returns how
    many (event, actor) pairs were applied. `routes`: event_routing.ROUTES.

    An actor asking to run again later (Dramatiq's `Retry`) runs again in the next round, at
    once; the delays it asked for are appended to `retries`. More than `max_rounds` rounds is
    an error (an actor that never finishes)."""
    applied = 0
    for _ in range(max_rounds):  # what the actors emit is applied too, until nothing is new
        this_round, again_later = 0, False
        for row in await pending_rows(factory, tenant_id, *event_types, due_by=due_by):
            envelope = envelope_of(row)
            for route in routes.get(row.event_type, ()):
                try:
                    done = await apply_named_event(route.actor, envelope, factory)
                except dramatiq.errors.Retry as again:
                    if retries is not None:
                        retries.append(again.delay or 0)
                    again_later = True
                    continue
                this_round += done
        if not this_round and not again_later:
            return applied
        applied += this_round
    raise RuntimeError(f"the events were still being retried after {max_rounds} rounds")


@contextmanager
def worker_settings_for(settings: Settings) -> Iterator[Settings]:
    """Actors in this process (worker_resources()) use `settings` for the block: a test's
    stand-in for a worker started with them."""
    WorkerResources.configure(settings)
    WorkerResources._resources = None
    try:
        yield settings
    finally:
        WorkerResources._resources = None
        WorkerResources._settings = None
