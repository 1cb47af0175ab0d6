"""HTTP for agencies, tenants, their lifecycle and their general settings."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import (
    authenticated,
    manages_tenant,
    operator_only,
    requires,
    sees_tenant,
)
from socialflow.access.permissions import Permission
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess
from socialflow.lib.pagination import SortKey, page_request, page_response
from socialflow.tenancy import services, tenant_settings
from socialflow.tenancy.bodies import (
    AgencyAdminCreate,
    AgencyAdminOut,
    AgencyCreate,
    AgencyList,
    AgencyOut,
    TenantCreate,
    TenantList,
    TenantOut,
    TenantSettingsOut,
    TenantSettingsUpdate,
    TenantUpdate,
    TenantUpdateOut,
)

# The order of each list, with the type of each part of its cursor.
BY_SLUG = SortKey.of(slug=str)


class AgencyController(Controller):
    path = "/api/v1/agencies"
    tags = ["agencies"]  # noqa: RUF012 - Litestar reads this class attribute
    guards = [operator_only]  # noqa: RUF012

    @post("", summary="Create an agency (operators)")
    async def create(
        self,
        data: JSONBody[AgencyCreate],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
    ) -> AgencyOut:
        return await services.create_agency(session, principal, slug=data.slug, name=data.name)

    @get("", summary="List agencies (operators), by slug, paginated")
    async def list_agencies(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Response[AgencyList]:
        page = page_request(limit, cursor, BY_SLUG)
        agencies = await services.list_agencies(session, principal, page)
        return page_response(request, agencies, page, BY_SLUG, AgencyList)

    @post(
        "/{agency:str}/admins",
        summary="Make a user an agency admin (created if new)",
    )
    async def add_admin(
        self,
        agency: FromPath[str],
        data: JSONBody[AgencyAdminCreate],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> AgencyAdminOut:
        return await services.add_agency_admin(
            session,
            state.settings,
            principal,
            agency_slug=agency,
            email=data.email,
            password=data.password,
        )


class TenantController(Controller):
    path = "/api/v1/tenants"
    tags = ["tenants"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "",
        summary="Provision a tenant (operators, the agency's admins)",
        guards=[authenticated],  # the agency's admins: a rule of the agency named in the body
        opt={"problems": (403, 404)},  # 404: no such agency
    )
    async def provision(
        self,
        data: JSONBody[TenantCreate],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> Response[TenantOut]:
        tenant = await services.provision_tenant(
            session,
            state.settings,
            principal,
            slug=data.slug,
            name=data.name,
            agency_slug=data.agency,
            plan=data.plan,
            owner_email=data.owner_email,
            directory=state.tenant_directory,
        )
        location = f"{self.path}/{tenant.slug}"
        return Response(tenant, status_code=201, headers={"Location": location})

    @get("", guards=[authenticated], summary="The tenants the caller can see, by slug, paginated")
    async def list_tenants(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        agency: FromQuery[str | None] = None,
    ) -> Response[TenantList]:
        page = page_request(limit, cursor, BY_SLUG)
        tenants = await services.visible_tenants(
            session, principal, page, status=status, agency=agency
        )
        return page_response(request, tenants, page, BY_SLUG, TenantList)

    @get(
        "/{tenant:str}",
        summary="Tenant metadata",
        guards=[sees_tenant],
    )
    async def read(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> TenantOut:
        return await services.tenant_metadata(session, access)

    @patch(
        "/{tenant:str}",
        summary="Rename or re-plan (agency admins, operators)",
        guards=[manages_tenant],
        opt={"problems": (409,)},  # a deleted tenant is restored first
    )
    async def update(
        self,
        data: JSONBody[TenantUpdate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TenantUpdateOut:
        return await services.update_tenant(
            session, state.settings, state.tenant_directory, access, name=data.name, plan=data.plan
        )

    @delete(
        "/{tenant:str}",
        status_code=200,
        summary="Soft-delete: kept for the retention window, restorable",
        guards=[manages_tenant],
        opt={"problems": (409,)},  # already deleted
    )
    async def soft_delete(
        self,
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TenantOut:
        return await self._transition(access, session, state, "delete")

    @post(
        "/{tenant:str}/suspend",
        status_code=200,
        guards=[manages_tenant],
    )
    async def suspend(
        self,
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TenantOut:
        return await self._transition(access, session, state, "suspend")

    @post(
        "/{tenant:str}/resume",
        status_code=200,
        guards=[manages_tenant],
    )
    async def resume(
        self,
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TenantOut:
        return await self._transition(access, session, state, "resume")

    @post(
        "/{tenant:str}/restore",
        status_code=200,
        guards=[manages_tenant],
    )
    async def restore(
        self,
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TenantOut:
        return await self._transition(access, session, state, "restore")

    @staticmethod
    async def _transition(
        access: TenantAccess, session: AsyncSession, state: State, transition: str
    ) -> TenantOut:
        return await services.change_status(
            session, state.settings, state.tenant_directory, access, transition
        )


class TenantSettingsController(Controller):
    """The tenant's general settings, in its own schema."""

    path = "/api/v1/tenants/{tenant:str}/settings"
    tags = ["tenant settings"]  # noqa: RUF012 - Litestar reads this class attribute

    @get("", guards=[requires(Permission.SETTINGS_READ)], summary="Tenant settings")
    async def read_settings(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> TenantSettingsOut:
        return await tenant_settings.read_settings(session)

    @put("", guards=[requires(Permission.SETTINGS_WRITE)], summary="Change settings")
    async def write_settings(
        self,
        data: JSONBody[TenantSettingsUpdate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> TenantSettingsOut:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        return await tenant_settings.update_settings(session, access, changes)
