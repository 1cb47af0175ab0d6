"""HTTP for BYOK keys and AI settings: /api/v1/tenants/{tenant}/ai/…"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission
from socialflow.access.tenant_access import TenantAccess
from socialflow.ai import services, usage
from socialflow.ai.bodies import (
    AIKeyList,
    AIKeyOut,
    AIKeyPut,
    AIKeyTest,
    AIKeyTestResult,
    AISettingsOut,
    AISettingsPut,
    AIUsageOut,
)
from socialflow.lib.pagination import page_request, page_response


class AIController(Controller):
    path = "/api/v1/tenants/{tenant:str}/ai"
    tags = ["ai"]  # noqa: RUF012 - Litestar reads this class attribute
    guards = [requires(Permission.AI_KEYS_MANAGE)]  # noqa: RUF012

    @get("/keys", summary="BYOK keys (never the key: last 4 and a fingerprint)")
    async def list_keys(
        self,
        request: Request[Any, Any, Any],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Response[AIKeyList]:
        page = page_request(limit, cursor)
        keys = await services.list_keys(session, page)
        return page_response(request, keys, page, ("provider",), AIKeyList)

    @put("/keys/{provider:str}", summary="Store or replace a provider key")
    async def put_key(
        self,
        provider: FromPath[str],
        data: JSONBody[AIKeyPut],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> AIKeyOut:
        return await services.put_key(
            session,
            state.vault,
            state.settings,
            access,
            services.parse_provider(provider),
            api_key=data.api_key,
            label=data.label,
            base_url=data.base_url,
            api_version=data.api_version,
        )

    @delete("/keys/{provider:str}", summary="Remove a provider key")
    async def delete_key(
        self,
        provider: FromPath[str],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> None:
        await services.delete_key(session, access, services.parse_provider(provider))

    @post("/keys/{provider:str}/test", status_code=200, summary="Try the key")
    async def test_key(
        self,
        provider: FromPath[str],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
        data: JSONBody[AIKeyTest | None] = None,
    ) -> AIKeyTestResult:
        return await services.test_key(
            session,
            state.vault,
            state.settings,
            access,
            services.parse_provider(provider),
            model=data.model if data else None,
        )

    @get("/settings", summary="Caption and embedding models")
    async def read_settings(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> AISettingsOut:
        return await services.read_settings(session)

    @get("/usage", summary="AI calls and spend of a billing period, and the budget's state")
    async def read_usage(
        self,
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        month: FromQuery[str | None] = None,
    ) -> AIUsageOut:
        return await usage.usage(session, access.tenant, month)

    @put("/settings", summary="Change the caption and embedding models")
    async def write_settings(
        self,
        data: JSONBody[AISettingsPut],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> AISettingsOut:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        return await services.update_settings(session, access, changes)
