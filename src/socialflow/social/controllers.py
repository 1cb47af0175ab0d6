"""HTTP for connected social accounts and the OAuth callback."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import authenticated, requires
from socialflow.access.permissions import Permission
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess
from socialflow.db.session import request_work
from socialflow.social import services
from socialflow.social.bodies import (
    AuthorizationOut,
    BlueskyConnect,
    MastodonConnect,
    SocialAccountList,
    SocialAccountOut,
    WebhookConnect,
)
from socialflow.social.clients import platform_client

# Connecting where the tenant publishes is the publishers' (admins') call.
MANAGE = requires(Permission.PUBLISH)


class SocialAccountController(Controller):
    path = "/api/v1/tenants/{tenant:str}/social-accounts"
    tags = ["social accounts"]  # noqa: RUF012 - Litestar reads this class attribute

    @get("", guards=[requires(Permission.CONTENT_READ)], summary="Connected accounts")
    async def list_accounts(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> SocialAccountList:
        return SocialAccountList(items=await services.list_accounts(session))

    @get("/{account_id:uuid}", guards=[requires(Permission.CONTENT_READ)], summary="An account")
    async def get_account(
        self,
        account_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> SocialAccountOut:
        return await services.get_account(session, account_id)

    @post(
        "/connect/mastodon",
        status_code=200,
        guards=[MANAGE],
        summary="Start connecting a Mastodon account: the URL to authorize at",
        # The URL carries the flow's state: never stored for an Idempotency-Key replay.
        opt={"problems": (409, 422), "withhold_on_replay": ("authorization_url",)},
    )
    async def connect_mastodon(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[MastodonConnect],
        access: NamedDependency[TenantAccess],
        state: State,
    ) -> AuthorizationOut:
        async with platform_client(state.settings) as http:
            return await services.start_mastodon(
                access,
                resources=state.resources,
                http=http,
                data=data,
                release=request_work(request.scope).release,
            )

    @post(
        "/connect/bluesky",
        guards=[MANAGE],
        summary="Connect a Bluesky account with an app password (never stored)",
        opt={"problems": (409, 422)},
    )
    async def connect_bluesky(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[BlueskyConnect],
        access: NamedDependency[TenantAccess],
        state: State,
    ) -> SocialAccountOut:
        async with platform_client(state.settings) as http:
            return await services.connect_bluesky(
                access,
                resources=state.resources,
                http=http,
                data=data,
                release=request_work(request.scope).release,
            )

    @post(
        "/connect/webhook",
        guards=[MANAGE],
        summary="Add a signed webhook destination (its signing secret is shown once)",
        # The secret is never stored for an Idempotency-Key replay, which answers it as null.
        opt={"problems": (409, 422), "withhold_on_replay": ("signing_secret",)},
    )
    async def connect_webhook(
        self,
        data: JSONBody[WebhookConnect],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> SocialAccountOut:
        return await services.connect_webhook(
            session, access, settings=state.settings, vault=state.vault, data=data
        )

    @delete("/{account_id:uuid}", guards=[MANAGE], summary="Disconnect an account")
    async def disconnect(
        self,
        account_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> None:
        await services.disconnect(session, access, account_id)


class OAuthCallbackController(Controller):
    path = "/api/v1/oauth"
    tags = ["social accounts"]  # noqa: RUF012 - Litestar reads this class attribute

    @get(
        "/callback",
        guards=[authenticated],
        summary="Complete a connect flow (by the person who started it)",
        opt={"problems": (400, 422)},
    )
    async def callback(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
        *,
        code: Annotated[str, QueryParameter(name="code", min_length=1, max_length=512)],
        oauth_state: Annotated[str, QueryParameter(name="state", min_length=16, max_length=256)],
    ) -> Response[SocialAccountOut]:
        async with platform_client(state.settings) as http:
            account = await services.complete_oauth(
                session,
                principal,
                resources=state.resources,
                http=http,
                state=oauth_state,
                code=code,
                release=request_work(request.scope).release,
            )
        return Response(account, status_code=201)
