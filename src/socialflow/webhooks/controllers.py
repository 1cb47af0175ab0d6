"""HTTP for a tenant's event history (and its webhooks)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission
from socialflow.access.tenant_access import TenantAccess
from socialflow.lib.pagination import link_header
from socialflow.webhooks import history
from socialflow.webhooks.bodies import EventList


class EventHistoryController(Controller):
    """The tenant's events, kept for its plan's retention."""

    path = "/api/v1/tenants/{tenant:str}/events"
    tags = ["events"]  # noqa: RUF012 - Litestar reads this class attribute

    @get(
        "",
        guards=[requires(Permission.EVENTS_READ)],
        summary="Event history",
        description=(
            "Newest first (page back with `cursor`), or forward from an event's `position` "
            "(`after`; `after=beginning` for the oldest kept), as a consumer catching up reads: "
            "an event committed later never appears behind a position already read. `type` "
            'is an event type or a pattern like "post.*".'
        ),
    )
    async def list_events(
        self,
        request: Request[Any, Any, Any],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
        type: FromQuery[str | None] = None,
        aggregate_type: FromQuery[str | None] = None,
        aggregate_id: FromQuery[str | None] = None,
    ) -> Response[EventList]:
        page, forward = history.feed_page(limit, cursor, after)
        where = history.EventFilter(type, aggregate_type, aggregate_id)
        found = await history.list_events(session, access, page, forward=forward, where=where)
        link = link_header(request, found, page.limit, param="after" if forward else "cursor")
        return Response(EventList(items=found.items, next_cursor=found.next_cursor), headers=link)
