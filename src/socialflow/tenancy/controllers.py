"""HTTP for agencies, tenants, their lifecycle and the first tenant-scoped resources."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.identity.permissions import Permission, Role
from socialflow.identity.tokens import Principal
from socialflow.lib.pagination import SortKey, page_request, page_response
from socialflow.tenancy import api_keys, members, services, tenant_content
from socialflow.tenancy.access import TenantAccess, provide_tenant_access, provide_tenant_scope
from socialflow.tenancy.schemas import (
    AgencyAdminCreate,
    AgencyAdminOut,
    AgencyCreate,
    AgencyList,
    AgencyOut,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    AuditList,
    InvitationOut,
    MemberInvite,
    MemberList,
    MemberRoleOut,
    MemberRoleUpdate,
    TenantCreate,
    TenantList,
    TenantOut,
    TenantSettingsOut,
    TenantSettingsUpdate,
    TenantUpdate,
)

# The order of each list, with the type of each part of its cursor.
BY_SLUG = SortKey.of(slug=str)
MEMBERS_ORDER = SortKey.of(joined_at=datetime, user_id=uuid.UUID)
API_KEYS_ORDER = SortKey.of(created_at=datetime, id=uuid.UUID)
AUDIT_ORDER = SortKey.of(id=int)


def _tenant_out(row: dict[str, Any]) -> TenantOut:
    return msgspec.convert({**row, "id": str(row["id"])}, TenantOut)


class AgencyController(Controller):
    path = "/api/v1/agencies"
    tags = ["agencies"]  # noqa: RUF012 - Litestar reads this class attribute

    @post("", summary="Create an agency (operators)", opt={"problems": (403,)})
    async def create(
        self,
        data: JSONBody[AgencyCreate],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
    ) -> AgencyOut:
        agency = await services.create_agency(session, principal, slug=data.slug, name=data.name)
        return AgencyOut(str(agency.id), agency.slug, agency.name, agency.created_at)

    @get("", summary="List agencies (operators), by slug, paginated", opt={"problems": (403,)})
    async def list_agencies(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Response[AgencyList]:
        page = page_request(limit, cursor, BY_SLUG)
        rows = await services.list_agencies(session, principal, page)
        return page_response(request, rows, page, BY_SLUG, AgencyList)

    @post(
        "/{agency:str}/admins",
        summary="Make a user an agency admin (created if new)",
        opt={"problems": (403,)},
    )
    async def add_admin(
        self,
        agency: FromPath[str],
        data: JSONBody[AgencyAdminCreate],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> AgencyAdminOut:
        user_id, created = await services.add_agency_admin(
            session, state.settings, principal,
            agency_slug=agency, email=data.email, password=data.password,
        )  # fmt: skip
        return AgencyAdminOut(str(user_id), data.email, agency, created)


class TenantController(Controller):
    path = "/api/v1/tenants"
    tags = ["tenants"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "",
        summary="Provision a tenant (operators, the agency's admins)",
        opt={"problems": (403, 404)},  # 404: no such agency
    )
    async def provision(
        self,
        data: JSONBody[TenantCreate],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> Response[TenantOut]:
        result = await services.provision_tenant(
            session, state.settings, principal, slug=data.slug, name=data.name,
            agency_slug=data.agency, plan=data.plan, owner_email=data.owner_email,
            directory=state.tenant_directory,
        )  # fmt: skip
        t = result.tenant
        body = TenantOut(
            str(t.id), t.slug, t.name, result.agency_slug, t.plan, t.status, t.created_at,
            t.updated_at,
        )  # fmt: skip
        return Response(body, status_code=201, headers={"Location": f"{self.path}/{t.slug}"})

    @get("", summary="The tenants the caller can see, by slug, paginated")
    async def list_tenants(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        agency: FromQuery[str | None] = None,
    ) -> Response[TenantList]:
        page = page_request(limit, cursor, BY_SLUG)
        rows = await services.visible_tenants(
            session, principal, page, status=status, agency=agency
        )
        return page_response(request, rows, page, BY_SLUG, TenantList)

    @get(
        "/{tenant:str}",
        summary="Tenant metadata",
        dependencies={"access": Provide(provide_tenant_access)},
    )
    async def read(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> TenantOut:
        return _tenant_out(await services.tenant_metadata(session, access))

    @patch(
        "/{tenant:str}",
        summary="Rename or re-plan (agency admins, operators)",
        dependencies={"access": Provide(provide_tenant_access)},
        opt={"problems": (409,)},  # a deleted tenant is restored first
    )
    async def update(
        self,
        data: JSONBody[TenantUpdate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TenantOut:
        await services.update_tenant(
            session, state.settings, state.tenant_directory, access, name=data.name, plan=data.plan
        )
        return _tenant_out(await services.tenant_metadata(session, access))

    @delete(
        "/{tenant:str}",
        status_code=200,
        summary="Soft-delete: kept for the retention window, restorable",
        dependencies={"access": Provide(provide_tenant_access)},
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
        dependencies={"access": Provide(provide_tenant_access)},
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
        dependencies={"access": Provide(provide_tenant_access)},
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
        dependencies={"access": Provide(provide_tenant_access)},
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
        await services.change_status(
            session, state.settings, state.tenant_directory, access, transition
        )
        return _tenant_out(await services.tenant_metadata(session, access))


class TenantContentController(Controller):
    """Routes that read and write the tenant's own schema."""

    path = "/api/v1/tenants/{tenant:str}"
    tags = ["tenant content"]  # noqa: RUF012 - Litestar reads this class attribute
    dependencies = {"member": Provide(provide_tenant_scope)}  # noqa: RUF012

    @get("/members", opt={"permission": Permission.MEMBERS_READ}, summary="The tenant's members")
    async def members(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        role: FromQuery[str | None] = None,
    ) -> Response[MemberList]:
        page = page_request(limit, cursor, MEMBERS_ORDER)
        rows = await tenant_content.list_members(session, member, page, role=role)
        return page_response(request, rows, page, MEMBERS_ORDER, MemberList)

    @post(
        "/members",
        opt={"permission": Permission.MEMBERS_MANAGE},
        summary="Invite someone by email with a role (mailed by the email job)",
    )
    async def invite(
        self,
        data: JSONBody[MemberInvite],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> InvitationOut:
        invited = await members.invite_member(
            session, state.settings, member, data.email, Role(data.role)
        )
        return msgspec.convert(invited, InvitationOut)

    @patch(
        "/members/{user_id:uuid}",
        opt={"permission": Permission.MEMBERS_READ, "problems": (409,)},  # the last owner
        summary="Change a member's role (admin+; owner role: owners only)",
    )
    async def change_member_role(
        self,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[MemberRoleUpdate],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> MemberRoleOut:
        changed = await members.change_role(session, member, user_id, Role(data.role))
        return msgspec.convert(changed, MemberRoleOut)

    @delete(
        "/members/{user_id:uuid}",
        opt={"permission": Permission.MEMBERS_READ, "problems": (409,)},  # the last owner
        summary="Remove a member, or leave (the last owner cannot)",
    )
    async def remove_member(
        self,
        user_id: FromPath[uuid.UUID],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> None:
        await members.remove_member(session, member, user_id)

    @get("/api-keys", opt={"permission": Permission.API_KEYS_MANAGE}, summary="API keys")
    async def list_api_keys(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Response[ApiKeyList]:
        page = page_request(limit, cursor, API_KEYS_ORDER)
        rows = await api_keys.list_keys(session, member, page)
        return page_response(request, rows, page, API_KEYS_ORDER, ApiKeyList)

    @post(
        "/api-keys",
        # The secret is never stored for an Idempotency-Key replay, which answers it as null.
        opt={"permission": Permission.API_KEYS_MANAGE, "withhold_on_replay": ("key",)},
        summary="Create an API key (the secret is in this response only)",
    )
    async def create_api_key(
        self,
        data: JSONBody[ApiKeyCreate],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> ApiKeyCreated:
        created = await api_keys.create_key(
            session, member, name=data.name, role=Role(data.role), expires_at=data.expires_at
        )
        return msgspec.convert({**created, "id": str(created["id"])}, ApiKeyCreated)

    @delete(
        "/api-keys/{key_id:uuid}",
        opt={"permission": Permission.API_KEYS_MANAGE},
        summary="Revoke an API key (refused at once)",
    )
    async def revoke_api_key(
        self,
        key_id: FromPath[uuid.UUID],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> None:
        await api_keys.revoke_key(session, member, key_id)

    @get("/audit-log", opt={"permission": Permission.AUDIT_READ}, summary="Audit entries")
    async def audit_log(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
    ) -> Response[AuditList]:
        page = page_request(limit, cursor, AUDIT_ORDER)
        rows = await tenant_content.list_audit(session, page, action=action)
        return page_response(request, rows, page, AUDIT_ORDER, AuditList)

    @get("/settings", opt={"permission": Permission.SETTINGS_READ}, summary="Tenant settings")
    async def read_settings(
        self, member: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> TenantSettingsOut:
        return msgspec.convert(await tenant_content.read_settings(session), TenantSettingsOut)

    @put("/settings", opt={"permission": Permission.SETTINGS_WRITE}, summary="Change settings")
    async def write_settings(
        self,
        data: JSONBody[TenantSettingsUpdate],
        member: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> TenantSettingsOut:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        return msgspec.convert(
            await tenant_content.update_settings(session, member, changes), TenantSettingsOut
        )
