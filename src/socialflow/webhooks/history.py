"""Reading a tenant's event history (shared.event_history, written by the relay as it
dispatches; see outbox.models.EventHistory for its order and why a feed never skips a row).

Two ways to read: newest first, paged back with `cursor`; or forward from a `position`
(`after`), as a consumer catching up does, only through transactions older than every running
one, so an event committed later never lands behind the position already read.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.lib.pagination import Page, PageRequest, SortKey, encode_cursor, page_request
from socialflow.lib.problems import invalid
from socialflow.plans.quota import limits_for
from socialflow.webhooks.bodies import EventDelivery, EventOut

# A position in the feed: the relay transaction that recorded the event, then its order there.
FEED_ORDER = SortKey.of(txid=int, seq=int)
# `after=beginning`: the oldest event still kept.
BEGINNING = "beginning"
# An event type ("post.published") or a pattern of types ("post.*", "*").
TYPE_PATTERN = re.compile(r"\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?")

_SELECT = """
SELECT event_id, event_type, aggregate_type, aggregate_id, occurred_at, payload, request_id,
       txid, seq
FROM shared.event_history
WHERE tenant_id = :tenant AND occurred_at >= now() - make_interval(days => :days)
"""
_BY_TYPE = " AND event_type = :event_type"
_BY_TYPE_PREFIX = " AND starts_with(event_type, :event_type)"
_BY_AGGREGATE_TYPE = " AND aggregate_type = :aggregate_type"
_BY_AGGREGATE_ID = " AND aggregate_id = :aggregate_id"
_OLDER = " AND (txid, seq) < (:txid, :seq)"
_NEWER = " AND (txid, seq) > (:txid, :seq)"
# Only transactions that can no longer commit: below the oldest one still running.
_SETTLED = " AND txid < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint"
_NEWEST_FIRST = " ORDER BY txid DESC, seq DESC LIMIT :limit"
_OLDEST_FIRST = " ORDER BY txid, seq LIMIT :limit"


@dataclass(frozen=True)
class EventFilter:
    event_type: str | None = None
    aggregate_type: str | None = None
    aggregate_id: str | None = None

    def check(self) -> None:
        if self.event_type is not None and not TYPE_PATTERN.fullmatch(self.event_type):
            raise invalid("type", 'an event type, or a pattern like "post.*"')
        for name, value in (
            ("aggregate_type", self.aggregate_type),
            ("aggregate_id", self.aggregate_id),
        ):
            if value is not None and not 0 < len(value) <= 128:
                raise invalid(name, "1 to 128 characters")


def feed_page(limit: int | None, cursor: str | None, after: str | None) -> tuple[PageRequest, bool]:
    """The page asked for, and whether it reads forward (`after`) rather than newest first."""
    if cursor and after:
        raise invalid("after", "either after or cursor, not both")
    if after == BEGINNING:
        return PageRequest(limit=page_request(limit, None).limit, after=(0, 0)), True
    if after:
        return page_request(limit, after, FEED_ORDER), True
    return page_request(limit, cursor, FEED_ORDER), False


async def list_events(
    session: AsyncSession,
    access: TenantAccess,
    page: PageRequest,
    *,
    forward: bool,
    where: EventFilter,
) -> Page[EventOut]:
    """A page of the tenant's events within its plan's retention."""
    where.check()
    limits = await limits_for(session, access.tenant)
    sql = _SELECT
    params: dict[str, Any] = {
        "tenant": access.tenant.id,
        "days": limits.event_retention_days,
        "limit": page.limit + 1,
    }
    if where.event_type is not None and where.event_type != "*":
        prefix = where.event_type.endswith(".*")
        sql += _BY_TYPE_PREFIX if prefix else _BY_TYPE
        params["event_type"] = where.event_type[:-1] if prefix else where.event_type
    if where.aggregate_type is not None:
        sql += _BY_AGGREGATE_TYPE
        params["aggregate_type"] = where.aggregate_type
    if where.aggregate_id is not None:
        sql += _BY_AGGREGATE_ID
        params["aggregate_id"] = where.aggregate_id
    if page.after is not None:
        sql += _NEWER if forward else _OLDER
        params["txid"], params["seq"] = page.after
    sql += (_SETTLED + _OLDEST_FIRST) if forward else _NEWEST_FIRST
    rows = (await session.execute(text(sql), params)).all()
    more = len(rows) > page.limit
    items = [_event(row) for row in rows[: page.limit]]
    await _attach_deliveries(session, items)
    last = rows[page.limit - 1] if more else None
    return Page(items, None if last is None else encode_cursor((last.txid, last.seq)))


_DELIVERIES = text("""
SELECT event_id, endpoint_id, state, attempts, last_status, delivered_at
FROM webhook_deliveries WHERE event_id = ANY(:ids) ORDER BY event_id, endpoint_id
""")


async def _attach_deliveries(session: AsyncSession, items: list[EventOut]) -> None:
    """Each event's delivery to each endpoint (the tenant's schema is on the search_path)."""
    if not items:
        return
    by_event = {item.event_id: item for item in items}
    for row in await session.execute(_DELIVERIES, {"ids": list(by_event)}):
        by_event[row.event_id].deliveries.append(
            EventDelivery(
                endpoint_id=row.endpoint_id,
                state=row.state,
                attempts=row.attempts,
                last_status=row.last_status,
                delivered_at=row.delivered_at,
            )
        )


def _event(row: Any) -> EventOut:
    return EventOut(
        event_id=uuid.UUID(str(row.event_id)),
        event_type=row.event_type,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        occurred_at=row.occurred_at,
        payload=row.payload,
        request_id=row.request_id,
        position=encode_cursor((row.txid, row.seq)),
    )
