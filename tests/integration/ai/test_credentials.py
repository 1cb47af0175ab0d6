"""credentials_for: the tenant's own key, else the platform's by plan, else a clear problem."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.access.directory import TenantDirectory
from socialflow.ai.credentials import credentials_for
from socialflow.ai.providers import Provider
from socialflow.db.session import unit_of_work
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.lib.problems import Problem
from socialflow.settings import Settings
from socialflow.vault.service import Vault
from tests.integration.tenancy_fixtures import Platform, World

TENANT_KEY = "sk-tenant-0123456789abcdefghijklmnop"
PLATFORM_KEY = "sk-platform-0123456789abcdefghijklmnop"


async def _credentials(
    factory: async_sessionmaker[AsyncSession], settings: Settings, slug: str, provider: Provider
) -> object:
    async with unit_of_work(factory) as session:
        tenant = await TenantDirectory(0).find(session, slug)
        assert tenant is not None
        await enter_tenant_schema(session, tenant.schema_name)
        return await credentials_for(
            session, Vault.from_settings(settings), settings, tenant, provider
        )


async def test_the_tenants_own_key_comes_first(
    platform: Platform, world: World, settings: Settings
) -> None:
    await platform.client.put(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai",
        json={"api_key": TENANT_KEY},
        headers=world.owner_a.headers,
    )
    with_platform = settings.model_copy(
        update={"ai_platform_keys": {"openai": SecretStr(PLATFORM_KEY)}}
    )
    found = await _credentials(platform.factory, with_platform, world.tenant_a, Provider.OPENAI)
    assert (found.api_key, found.source) == (TENANT_KEY, "tenant")  # type: ignore[attr-defined]
    assert TENANT_KEY not in repr(found)


async def test_the_platform_key_is_the_fallback_when_the_plan_allows_it(
    platform: Platform, world: World, settings: Settings
) -> None:
    with_platform = settings.model_copy(
        update={"ai_platform_keys": {"openai": SecretStr(PLATFORM_KEY)}}
    )
    found = await _credentials(platform.factory, with_platform, world.tenant_a, Provider.OPENAI)
    assert (found.api_key, found.source) == (PLATFORM_KEY, "platform")  # type: ignore[attr-defined]

    # Tenant A is on "pro", which includes the platform's keys; its override takes them away.
    await platform.entitle(world.operator, world.tenant_a, platform_ai_keys=False)
    with pytest.raises(Problem) as refused:
        await _credentials(platform.factory, with_platform, world.tenant_a, Provider.OPENAI)
    assert refused.value.kind == "ai-provider-not-configured"


async def test_no_key_anywhere_is_ai_provider_not_configured(
    platform: Platform, world: World, settings: Settings
) -> None:
    with pytest.raises(Problem) as refused:
        await _credentials(platform.factory, settings, world.tenant_b, Provider.ANTHROPIC)
    assert refused.value.kind == "ai-provider-not-configured"
    assert refused.value.status == 409
