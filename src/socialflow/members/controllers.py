"""HTTP for a tenant's members, invitations and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission, Role
from socialflow.access.tenant_access import TenantAccess
from socialflow.identity.throttling import sign_in_attempt
from socialflow.identity.tokens import hash_token
from socialflow.lib.pagination import SortKey, page_request, page_response
from socialflow.members import api_keys, services
from socialflow.members.bodies import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    InvitationAccept,
    InvitationAccepted,
    InvitationOut,
    MemberInvite,
    MemberList,
    MemberRoleOut,
    MemberRoleUpdate,
    ReviewerOut,
)
from socialflow.members.invitations import accept_invitation

# The order of each list, with the type of each part of its cursor.
MEMBERS_ORDER = SortKey.of(joined_at=datetime, user_id=uuid.UUID)
API_KEYS_ORDER = SortKey.of(created_at=datetime, id=uuid.UUID)


class MembersController(Controller):
    """Who belongs to the tenant, with which role; invitations to join it."""

    path = "/api/v1/tenants/{tenant:str}/members"
    tags = ["members"]  # noqa: RUF012 - Litestar reads this class attribute

    @get("", guards=[requires(Permission.MEMBERS_READ)], summary="The tenant's members")
    async def members(
        self,
        request: Request[Any, Any, Any],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        role: FromQuery[str | None] = None,
    ) -> Response[MemberList]:
        page = page_request(limit, cursor, MEMBERS_ORDER)
        members = await services.list_members(session, access, page, role=role)
        return page_response(request, members, page, MEMBERS_ORDER, MemberList)

    @post(
        "",
        guards=[requires(Permission.MEMBERS_MANAGE)],
        summary="Invite someone by email with a role (mailed by the email job)",
    )
    async def invite(
        self,
        data: JSONBody[MemberInvite],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> InvitationOut:
        return await services.invite_member(
            session, state.settings, access, data.email, Role(data.role)
        )

    @patch(
        "/{user_id:uuid}",
        guards=[requires(Permission.MEMBERS_MANAGE)],
        opt={"problems": (409,)},  # the last owner
        summary="Change a member's role (admin+; owner role: owners only)",
    )
    async def change_member_role(
        self,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[MemberRoleUpdate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> MemberRoleOut:
        return await services.change_role(session, access, user_id, Role(data.role))

    @put(
        "/{user_id:uuid}/reviewer",
        guards=[requires(Permission.MEMBERS_MANAGE)],
        summary="Make a member a reviewer: they may approve posts whatever their role",
    )
    async def grant_reviewer(
        self,
        user_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> ReviewerOut:
        return await services.set_reviewer(session, access, user_id, reviewer=True)

    @delete(
        "/{user_id:uuid}/reviewer",
        status_code=200,
        guards=[requires(Permission.MEMBERS_MANAGE)],
        summary="A member is no longer a reviewer",
    )
    async def revoke_reviewer(
        self,
        user_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> ReviewerOut:
        return await services.set_reviewer(session, access, user_id, reviewer=False)

    @delete(
        "/{user_id:uuid}",
        guards=[requires(Permission.MEMBERS_MANAGE)],
        opt={"problems": (409,)},  # the last owner
        summary="Remove a member (admin+; an owner: owners only; the last owner stays)",
    )
    async def remove_member(
        self,
        user_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> None:
        await services.remove_member(session, access, user_id)

    @delete(
        "/me",
        guards=[requires(Permission.TENANT_READ)],  # every role may leave
        opt={"problems": (409,)},  # the last owner
        summary="Leave the tenant (the last owner cannot)",
    )
    async def leave(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> None:
        await services.remove_member(session, access, access.principal.user_id)


class ApiKeysController(Controller):
    """The tenant's API keys: shown once, stored hashed, revocable."""

    path = "/api/v1/tenants/{tenant:str}/api-keys"
    tags = ["api keys"]  # noqa: RUF012 - Litestar reads this class attribute
    guards = [requires(Permission.API_KEYS_MANAGE)]  # noqa: RUF012

    @get("", summary="API keys")
    async def list_api_keys(
        self,
        request: Request[Any, Any, Any],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Response[ApiKeyList]:
        page = page_request(limit, cursor, API_KEYS_ORDER)
        keys = await api_keys.list_keys(session, access, page)
        return page_response(request, keys, page, API_KEYS_ORDER, ApiKeyList)

    @post(
        "",
        # The secret is never stored for an Idempotency-Key replay, which answers it as null.
        opt={"withhold_on_replay": ("key",)},
        summary="Create an API key (the secret is in this response only)",
    )
    async def create_api_key(
        self,
        data: JSONBody[ApiKeyCreate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> ApiKeyCreated:
        return await api_keys.create_key(
            session, access, name=data.name, role=Role(data.role), expires_at=data.expires_at
        )

    @delete("/{key_id:uuid}", summary="Revoke an API key (refused at once)")
    async def revoke_api_key(
        self,
        key_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> None:
        await api_keys.revoke_key(session, access, key_id, state.tenant_directory)


class InvitationController(Controller):
    path = "/api/v1/invitations"
    tags = ["auth"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "/accept",
        status_code=200,
        summary="Accept an invitation (sets a new password)",
        opt={"problems": (401, 404, 410, 422, 429, 503)},
    )
    async def accept(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[InvitationAccept],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> InvitationAccepted:
        account = hash_token(data.token)
        async with sign_in_attempt(request, state, endpoint="invitation", account=account):
            return await accept_invitation(
                session, state.settings, token=data.token, name=data.name, password=data.password
            )
