"""`emit()`: the only way to write an outbox row, inside the caller's open transaction."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime

import msgspec
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.tracing import current_traceparent
from socialflow.outbox.events import DomainEvent, event_class

NOTIFY_CHANNEL = "socialflow_outbox"
# At most one NOTIFY per process per interval: a NOTIFY per commit serialises commits on
# PostgreSQL's notification queue lock. Relays that saw recent traffic poll quickly anyway.
# 1 ms (was 5): with durable commits the wait for the next NOTIFY was a third of the
# commit → enqueued latency, and a process rarely commits more than ~1,000 times a second.
NOTIFY_INTERVAL_S = 0.001

_last_notify = 0.0
# The tenant's id is looked up from its slug in the same statement (at most one live tenant
# has a slug); workers go by the id, so an event can never reach a later tenant that re-used
# a purged slug.
_INSERT_SQL = """
INSERT INTO shared.outbox
    (event_id, tenant, tenant_id, aggregate_type, aggregate_id, event_type, payload, headers,
     available_at)
SELECT e.event_id, e.tenant,
       (SELECT t.id FROM shared.tenants t WHERE t.slug = e.tenant AND t.status <> 'purged'),
       e.aggregate_type, e.aggregate_id, e.event_type, e.payload,
       CAST(:headers AS jsonb), coalesce(e.available_at, now())
FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS e(
    event_id uuid, tenant text, aggregate_type text, aggregate_id text, event_type text,
    payload jsonb, available_at timestamptz
)
RETURNING tenant_id IS NULL AND tenant IS NOT NULL AS orphaned, tenant
"""
_INSERT = text(_INSERT_SQL)
# The same, with the relays' NOTIFY in the same round trip (delivered at commit, and not at
# all on rollback; a materialized CTE runs once).
_INSERT_AND_NOTIFY = text(f"""
WITH written AS ({_INSERT_SQL}),
notified AS MATERIALIZED (SELECT pg_notify('{NOTIFY_CHANNEL}', ''))
SELECT written.orphaned, written.tenant FROM written, notified
""")  # noqa: S608 - constants only


class OutboxError(RuntimeError):
    """An event that cannot be written: no open transaction, an undeclared event type, or a
    tenant that does not exist."""


async def emit(
    session: AsyncSession,
    event: DomainEvent,
    *,
    tenant: str | None,
    actor: str | None = None,
    available_at: datetime | None = None,
) -> uuid.UUID:
    """Write one event in `session`'s open transaction and return its id.

    The row commits or rolls back with the state change it describes. `tenant` is the slug
    (None for platform events); `available_at` defers dispatch (a scheduled publish); `actor`
    says who caused it (user id, API key id, system). State changes go through
    `audit.record_change`, which calls this with the change's audit entry.
    """
    (event_id,) = await emit_many(
        session, [event], tenant=tenant, actor=actor, available_at=available_at
    )
    return event_id


async def emit_many(
    session: AsyncSession,
    events: Sequence[DomainEvent],
    *,
    tenant: str | None,
    actor: str | None = None,
    available_at: datetime | None = None,
) -> list[uuid.UUID]:
    """Write several events of one tenant in one statement, in the caller's open transaction."""
    if not session.in_transaction():
        raise OutboxError("emit() needs an open transaction: events commit with their change")
    if available_at is not None and available_at.tzinfo is None:
        raise OutboxError("available_at must be timezone-aware")
    for event in events:
        declared = getattr(type(event), "event_type", None)
        if declared is None or event_class(declared) is not type(event):
            raise OutboxError(
                f"{type(event).__qualname__} is not a declared event type: give it an "
                "event_type in its feature's events.py"
            )
    context = structlog.contextvars.get_contextvars()
    headers = {
        "request_id": context.get("request_id"),
        "traceparent": current_traceparent.get(),
        "actor": actor or context.get("actor"),
    }
    headers = {k: v for k, v in headers.items() if v is not None}
    event_ids = [uuid.uuid4() for _ in events]
    due = available_at.isoformat() if available_at else None
    rows = [
        {
            "event_id": event_id,
            "tenant": tenant,
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "event_type": event.event_type,
            "payload": event,
            "available_at": due,
        }
        for event_id, event in zip(event_ids, events, strict=True)
    ]
    # One statement, one parameter and one round trip for any number of events; the SQL is
    # constant, so it is prepared once per connection.
    params = {"events": _json(rows), "headers": _json(headers)}
    written = await session.execute(_INSERT_AND_NOTIFY if _notify_due() else _INSERT, params)
    orphans = sorted({row.tenant for row in written if row.orphaned})
    if orphans:
        raise OutboxError(f"no live tenant {orphans[0]!r}: events name an existing tenant")
    return event_ids


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _notify_due() -> bool:
    """Whether this write should NOTIFY the relays (at most one per process per interval)."""
    global _last_notify  # noqa: PLW0603 - one throttle per process, by design
    now = time.monotonic()
    if now - _last_notify >= NOTIFY_INTERVAL_S:
        _last_notify = now
        return True
    return False
