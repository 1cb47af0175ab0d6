"""HTTP for search: a query over the tenant's media, and "more like this"."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission
from socialflow.access.tenant_access import TenantAccess
from socialflow.db.session import request_work
from socialflow.media.storage import media_storage
from socialflow.search import services
from socialflow.search.bodies import SearchResults


async def provide_filters(
    *,
    kind: FromQuery[str | None] = None,
    tags: FromQuery[str | None] = None,
    created_from: FromQuery[datetime | None] = None,
    created_to: FromQuery[datetime | None] = None,
    status: FromQuery[str | None] = None,
) -> dict[str, Any]:
    """The filters both endpoints take (`tags`: comma-separated, items with all of them)."""
    return services.filters_of(
        kind=kind, tags=tags, status=status, created_from=created_from, created_to=created_to
    )


class SearchController(Controller):
    path = "/api/v1/tenants/{tenant:str}"
    tags = ["search"]  # noqa: RUF012 - Litestar reads this class attribute
    dependencies = {"filters": Provide(provide_filters)}  # noqa: RUF012 - read by Litestar

    @get(
        "/search",
        guards=[requires(Permission.CONTENT_READ)],
        summary="Search the tenant's media: hybrid (default), semantic or full text",
        description=(
            "`q` in web search syntax (quotes, `-`, `or`). Hybrid fuses the text and vector "
            "lists by reciprocal rank. Without an embedding model, or with the provider "
            "unavailable, the answer is by text and `semantic` says why. `tags` is a "
            "comma-separated list (items with all of them)."
        ),
    )
    async def search(  # noqa: PLR0917 - the request's parts, each a dependency
        self,
        request: Request[Any, Any, Any],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        filters: NamedDependency[dict[str, Any]],
        state: State,
        q: FromQuery[str | None] = None,
        mode: FromQuery[str | None] = None,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> SearchResults:
        services.unknown_parameters(set(request.query_params), services.QUERY_PARAMETERS)
        query = services.search_query(q, mode, limit, cursor, filters)
        resources = state.resources

        return await services.search(
            session,
            resources,
            access,
            query,
            media_storage(resources.settings),
            release=request_work(request.scope).release,
        )

    @get(
        "/media/{media_id:uuid}/similar",
        guards=[requires(Permission.CONTENT_READ)],
        summary="More like this: the items nearest to this one's vector",
        opt={"problems": (404, 409)},  # no such item; it has no vector yet
    )
    async def similar(  # noqa: PLR0917 - the request's parts, each a dependency
        self,
        request: Request[Any, Any, Any],
        media_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        filters: NamedDependency[dict[str, Any]],
        state: State,
        limit: FromQuery[int | None] = None,
    ) -> SearchResults:
        services.unknown_parameters(set(request.query_params), services.SIMILAR_PARAMETERS)
        resources = state.resources
        return await services.similar(
            session,
            resources,
            media_id,
            filters,
            services.DEFAULT_LIMIT if limit is None else limit,
            storage=media_storage(resources.settings),
        )
