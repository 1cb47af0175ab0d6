"""HTTP for a tenant's event history (and its webhooks)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission
from socialflow.access.tenant_access import TenantAccess
from socialflow.db.session import request_work
from socialflow.lib.pagination import link_header, page_request
from socialflow.lib.rate_limits import hit, remember
from socialflow.webhooks import history, services
from socialflow.webhooks.bodies import (
    AttemptList,
    EventList,
    EventTypeList,
    ReplayOut,
    ReplayRequest,
    SecretRotation,
    TestDeliveryOut,
    WebhookCreate,
    WebhookList,
    WebhookOut,
    WebhookUpdate,
)
from socialflow.webhooks.sending import webhook_client


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


MANAGE = requires(Permission.WEBHOOKS_MANAGE)


class WebhookController(Controller):
    """The tenant's webhook endpoints (admin+)."""

    path = "/api/v1/tenants/{tenant:str}/webhooks"
    tags = ["webhooks"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "",
        guards=[MANAGE],
        summary="Add an endpoint (its signing secret is shown once)",
        description=(
            "`event_types`: event types or patterns (`post.*`, `*`); see "
            "`GET /api/v1/event-types`. The URL must be HTTPS and reach a public address."
        ),
        opt={"problems": (409, 422), "withhold_on_replay": ("signing_secret",)},
    )
    async def create(
        self,
        data: JSONBody[WebhookCreate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> WebhookOut:
        return await services.create_endpoint(
            session, access, settings=state.settings, vault=state.vault, data=data
        )

    @get("", guards=[MANAGE], summary="Endpoints")
    async def list_endpoints(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> WebhookList:
        return WebhookList(items=await services.list_endpoints(session))

    @get("/{endpoint_id:uuid}", guards=[MANAGE], summary="One endpoint")
    async def get_endpoint(
        self,
        endpoint_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> WebhookOut:
        return await services.get_endpoint(session, endpoint_id)

    @patch(
        "/{endpoint_id:uuid}",
        guards=[MANAGE],
        summary="Change an endpoint; enabling it again sends what it kept",
        opt={"problems": (422,)},
    )
    async def update(
        self,
        endpoint_id: FromPath[uuid.UUID],
        data: JSONBody[WebhookUpdate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> WebhookOut:
        return await services.update_endpoint(
            session, access, endpoint_id, settings=state.settings, data=data
        )

    @delete("/{endpoint_id:uuid}", guards=[MANAGE], summary="Remove an endpoint")
    async def remove(
        self,
        endpoint_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> None:
        await services.delete_endpoint(session, access, endpoint_id)

    @post(
        "/{endpoint_id:uuid}/rotate-secret",
        guards=[MANAGE],
        status_code=200,
        summary="A new signing secret; the previous one also signs during the overlap",
        opt={"problems": (422,), "withhold_on_replay": ("signing_secret",)},
    )
    async def rotate_secret(
        self,
        endpoint_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
        data: JSONBody[SecretRotation | None] = None,
    ) -> WebhookOut:
        return await services.rotate_secret(
            session,
            access,
            endpoint_id,
            settings=state.settings,
            vault=state.vault,
            data=data or SecretRotation(),
        )

    @post(
        "/{endpoint_id:uuid}/test",
        guards=[MANAGE],
        status_code=200,
        summary="Send a webhook.test event now and show the answer",
        description=(
            "At most `WEBHOOK_TESTS_PER_MINUTE` (10) a minute per tenant, whatever the "
            "endpoint: a test is a request the platform sends to the endpoint's URL."
        ),
        opt={"problems": (404, 429)},
    )
    async def test(
        self,
        request: Request[Any, Any, Any],
        endpoint_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TestDeliveryOut:
        # Each test is a request to a URL the tenant chose: bounded per tenant (endpoints can be
        # made, pointed at one URL and deleted at will), so the platform cannot be used to
        # hammer an address.
        window = await hit(
            state.redis,
            f"tenant's webhook tests:{access.tenant.id}",
            state.settings.webhook_tests_per_minute,
        )
        remember(request.scope, window)  # type: ignore[arg-type]
        async with webhook_client(state.settings) as http:
            return await services.test_delivery(
                session,
                access,
                endpoint_id,
                settings=state.settings,
                vault=state.vault,
                http=http,
                # A test writes nothing: the request's transaction ends before the call.
                release=request_work(request.scope).release,
            )

    @post(
        "/{endpoint_id:uuid}/replay",
        guards=[MANAGE],
        status_code=202,
        summary="Send the kept events from an event or a time on again",
        description=(
            "`{from_event_id}` or `{since}`. Each event keeps its id as `webhook-id`, so a "
            "receiver drops what it has. One replay per endpoint a minute."
        ),
        opt={"problems": (404, 422, 429)},
    )
    async def replay(
        self,
        endpoint_id: FromPath[uuid.UUID],
        data: JSONBody[ReplayRequest],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> ReplayOut:
        return await services.replay(
            session, access, endpoint_id, settings=state.settings, data=data
        )

    @get("/{endpoint_id:uuid}/deliveries", guards=[MANAGE], summary="The delivery log")
    async def deliveries(
        self,
        request: Request[Any, Any, Any],
        endpoint_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Response[AttemptList]:
        page = page_request(limit, cursor, services.ATTEMPT_ORDER)
        found = await services.list_attempts(session, endpoint_id, page)
        link = link_header(request, found, page.limit)
        return Response(AttemptList(items=found.items, next_cursor=found.next_cursor), headers=link)


class EventTypesController(Controller):
    path = "/api/v1/event-types"
    tags = ["webhooks"]  # noqa: RUF012 - Litestar reads this class attribute

    @get(
        "",
        summary="Event types and the JSON schema of each one's payload",
        description="What webhooks receive as `data`, and the event history as `payload`.",
    )
    async def list_event_types(self, state: State) -> EventTypeList:
        # The app's catalogue, built once from the routing table (app.py).
        return EventTypeList(items=state.event_types)
