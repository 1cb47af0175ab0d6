"""`credentials_for(tenant, provider)`: the tenant's own key, else the platform's when its
entitlements allow it (`platform_ai_keys`: its plan's, or its override), else a clear
`ai-provider-not-configured` problem."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.ai.models import AIProviderKey
from socialflow.ai.providers import Provider
from socialflow.lib.problems import Problem
from socialflow.plans.quota import QuotaTenant, limits_for
from socialflow.settings import Settings
from socialflow.vault.service import SealedSecret, Vault

KEY_PURPOSE = "ai_provider_key"


def key_record(provider: Provider) -> str:
    """The record a tenant's key is bound to (associated data of its ciphertext)."""
    return f"ai_provider_keys:{provider.value}"


@dataclass(frozen=True)
class ProviderCredentials:
    provider: Provider
    api_key: str = field(repr=False)
    source: str  # "tenant" or "platform"
    base_url: str | None = None
    api_version: str | None = None


async def credentials_for(
    session: AsyncSession,
    vault: Vault,
    settings: Settings,
    tenant: QuotaTenant,
    provider: Provider,
    *,
    allow_invalid: bool = False,
) -> ProviderCredentials:
    """Credentials for one AI call of `tenant`; the session must be in the tenant's schema.
    A key of the tenant's that the provider refused (`invalid`) is not used until replaced
    (the `ai-key-invalid` problem), unless `allow_invalid` (the key test)."""
    own_key = select(
        AIProviderKey.sealed_key,
        AIProviderKey.base_url,
        AIProviderKey.api_version,
        AIProviderKey.status,
    ).where(AIProviderKey.provider == provider.value)
    row = (await session.execute(own_key)).one_or_none()
    if row is not None:
        if row.status == "invalid" and not allow_invalid:
            raise Problem(
                409,
                "ai-key-invalid",
                f"The tenant's {provider.value} key was refused by the provider; "
                "store a new key to use it again.",
            )
        api_key = await vault.decrypt(
            session,
            tenant.id,
            KEY_PURPOSE,
            key_record(provider),
            SealedSecret.from_bytes(row.sealed_key),
        )
        return ProviderCredentials(provider, api_key, "tenant", row.base_url, row.api_version)
    platform_key = settings.ai_platform_keys.get(provider.value)
    if platform_key is not None and (await limits_for(session, tenant)).platform_ai_keys:
        return ProviderCredentials(
            provider,
            platform_key.get_secret_value(),
            "platform",
            settings.ai_platform_base_urls.get(provider.value),
        )
    raise Problem(
        409,
        "ai-provider-not-configured",
        f"No {provider.value} key is configured for this tenant"
        + (" and its plan does not include the platform's key." if platform_key else "."),
    )
