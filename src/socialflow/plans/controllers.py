"""HTTP for the plan catalogue, a tenant's entitlements and usage, and an agency's usage."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import authenticated, manages_tenant, operator_only, sees_tenant
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess
from socialflow.lib.pagination import SortKey, page_request, page_response
from socialflow.plans import services
from socialflow.plans.bodies import (
    AgencyUsageList,
    EntitlementsOut,
    EntitlementsUpdate,
    PlanCreate,
    PlanList,
    PlanOut,
    PlanUpdate,
    TenantUsageOut,
)

BY_TENANT = SortKey.of(tenant=str)


class PlanController(Controller):
    """The catalogue: everyone signed in reads it, operators change it."""

    path = "/api/v1/plans"
    tags = ["plans"]  # noqa: RUF012 - Litestar reads this class attribute

    @get("", guards=[authenticated], summary="The plan catalogue, by name")
    async def list_plans(
        self, principal: NamedDependency[Principal], session: NamedDependency[AsyncSession]
    ) -> PlanList:
        return PlanList(await services.list_plans(session))

    @get("/{plan:str}", guards=[authenticated], summary="One plan", opt={"problems": (404,)})
    async def read_plan(
        self,
        plan: FromPath[str],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
    ) -> PlanOut:
        return await services.get_plan(session, plan)

    @post(
        "",
        guards=[operator_only],
        summary="Add a plan (operators)",
        opt={"problems": (409,)},  # the name is taken
    )
    async def create_plan(
        self,
        data: JSONBody[PlanCreate],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> Response[PlanOut]:
        plan = await services.create_plan(session, state.tenant_directory, principal, data)
        return Response(plan, status_code=201, headers={"Location": f"{self.path}/{plan.name}"})

    @patch(
        "/{plan:str}",
        guards=[operator_only],
        summary="Change a plan's limits (operators); every tenant on it gets them",
        opt={"problems": (404,)},
    )
    async def update_plan(
        self,
        plan: FromPath[str],
        data: JSONBody[PlanUpdate],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> PlanOut:
        return await services.update_plan(session, state.tenant_directory, principal, plan, data)


class EntitlementsController(Controller):
    """A tenant's limits: its plan's, with the overrides its agency's admins or an operator
    set; and what it uses of them."""

    path = "/api/v1/tenants/{tenant:str}"
    tags = ["plans"]  # noqa: RUF012 - Litestar reads this class attribute

    @get("/entitlements", guards=[sees_tenant], summary="The tenant's limits and overrides")
    async def read_entitlements(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> EntitlementsOut:
        return await services.read_entitlements(session, access)

    @patch(
        "/entitlements",
        guards=[manages_tenant],
        summary="Override the plan's limits for this tenant (agency admins, operators)",
    )
    async def update_entitlements(
        self,
        data: JSONBody[EntitlementsUpdate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> EntitlementsOut:
        return await services.update_entitlements(session, state.tenant_directory, access, data)

    @get("/usage", guards=[sees_tenant], summary="What the tenant uses of each limit")
    async def usage(
        self,
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TenantUsageOut:
        return await services.usage_of(session, state.redis, access.tenant)


class AgencyUsageController(Controller):
    path = "/api/v1/agencies/{agency:str}/usage"
    tags = ["plans"]  # noqa: RUF012 - Litestar reads this class attribute

    @get(
        "",
        guards=[authenticated],  # the agency's admins: a rule of the agency in the path
        summary="Usage against limits of each of the agency's tenants, by slug, paginated",
        opt={"problems": (404,)},
    )
    async def agency_usage(
        self,
        request: Request[Any, Any, Any],
        agency: FromPath[str],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Response[AgencyUsageList]:
        page = page_request(limit, cursor, BY_TENANT)
        usage = await services.agency_usage(session, state.redis, principal, agency, page)
        return page_response(request, usage, page, BY_TENANT, AgencyUsageList)
