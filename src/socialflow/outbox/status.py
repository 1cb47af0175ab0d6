"""What operators ask of the outbox: backlog, age of the oldest due event, dead letters."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

STATUS_SQL = text("""
SELECT
    count(*) FILTER (WHERE available_at <= now()) AS due,
    count(*) FILTER (WHERE available_at > now()) AS deferred,
    extract(epoch FROM now() - min(available_at) FILTER (WHERE available_at <= now())) AS age,
    (SELECT count(*) FROM shared.outbox_dead_letter) AS dead_letters
FROM shared.outbox
""")

# A requeued event keeps its tenant's id (workers resolve tenants by id) and its times: it is
# due at once (its due time has passed), and the event history finds it recorded already.
REQUEUE_SQL = text("""
WITH moved AS (
    DELETE FROM shared.outbox_dead_letter
    WHERE (CAST(:all AS boolean) OR event_id = ANY(:event_ids))
    RETURNING event_id, tenant, tenant_id, aggregate_type, aggregate_id, event_type, payload,
              headers, available_at, created_at
)
INSERT INTO shared.outbox
    (event_id, tenant, tenant_id, aggregate_type, aggregate_id, event_type, payload, headers,
     available_at, created_at)
SELECT event_id, tenant, tenant_id, aggregate_type, aggregate_id, event_type, payload, headers,
       least(available_at, now()), created_at
FROM moved
""")


@dataclass(frozen=True)
class OutboxStatus:
    due: int
    deferred: int
    oldest_due_age_s: float | None
    dead_letters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def outbox_status(session: AsyncSession) -> OutboxStatus:
    row = (await session.execute(STATUS_SQL)).one()
    return OutboxStatus(
        due=row.due,
        deferred=row.deferred,
        oldest_due_age_s=float(row.age) if row.age is not None else None,
        dead_letters=row.dead_letters,
    )


async def requeue_dead_letters(
    session: AsyncSession, event_ids: list[uuid.UUID] | None = None
) -> int:
    """Move dead letters (all, or those named) back to the outbox, to be dispatched again."""
    result = await session.execute(
        REQUEUE_SQL, {"all": event_ids is None, "event_ids": event_ids or []}
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
