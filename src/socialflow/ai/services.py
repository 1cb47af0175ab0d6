"""BYOK keys and AI settings of a tenant (the session is in the tenant's schema). Never commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.ai.credentials import KEY_PURPOSE, credentials_for, key_record
from socialflow.ai.events import AiKeyConfigured, AiKeyRemoved, AiSettingsUpdated
from socialflow.ai.key_check import try_credentials
from socialflow.ai.providers import TEST_MODELS, Provider
from socialflow.audit.record import record_change
from socialflow.lib.outbound import check_outbound_url
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.settings import Settings
from socialflow.tenancy.settings_rows import SettingsRow
from socialflow.vault.service import Vault, fingerprint, last4

KEY_COLUMNS = (
    "provider, label, last4, fingerprint, base_url, api_version, created_at, "
    "created_by::text AS created_by, updated_at, updated_by::text AS updated_by"
)
UPSERT_KEY = text("""
INSERT INTO ai_provider_keys (provider, label, base_url, api_version, sealed_key, key_version,
                              last4, fingerprint, created_by, updated_by)
VALUES (:provider, :label, :base_url, :api_version, :sealed_key, :key_version, :last4,
        :fingerprint, :by, :by)
ON CONFLICT (provider) DO UPDATE SET
    label = EXCLUDED.label, base_url = EXCLUDED.base_url, api_version = EXCLUDED.api_version,
    sealed_key = EXCLUDED.sealed_key, key_version = EXCLUDED.key_version,
    last4 = EXCLUDED.last4, fingerprint = EXCLUDED.fingerprint,
    updated_at = now(), updated_by = EXCLUDED.updated_by
RETURNING (xmax = 0) AS created
""")


def parse_provider(value: str) -> Provider:
    try:
        return Provider(value)
    except ValueError as exc:
        known = ", ".join(p.value for p in Provider)
        raise Problem(404, "not-found", f"Unknown AI provider {value!r}; one of {known}.") from exc


async def list_keys(session: AsyncSession, page: PageRequest) -> list[dict[str, Any]]:
    """The tenant's provider keys by provider; one row more than the page."""
    rows = await session.execute(
        text(
            f"SELECT {KEY_COLUMNS} FROM ai_provider_keys "  # noqa: S608
            "WHERE CAST(:after AS text) IS NULL OR provider > :after ORDER BY provider LIMIT :limit"
        ),
        {"after": page.after[0] if page.after else None, "limit": page.limit + 1},
    )
    return [dict(r._mapping) for r in rows]


async def put_key(
    session: AsyncSession,
    vault: Vault,
    settings: Settings,
    access: TenantAccess,
    provider: Provider,
    *,
    api_key: str,
    label: str | None,
    base_url: str | None,
    api_version: str | None,
) -> dict[str, Any]:
    api_key = api_key.strip()
    if provider.needs_base_url and not base_url:
        raise Problem(
            422, "validation-error", f"The {provider.value} provider needs a base_url.",
            errors=[{"field": "base_url", "message": "required for this provider"}],
        )  # fmt: skip
    if base_url:
        base_url = await check_outbound_url(base_url, settings)
    sealed = await vault.encrypt(
        session, access.tenant.id, KEY_PURPOSE, key_record(provider), api_key
    )
    created = (
        await session.execute(
            UPSERT_KEY,
            {
                "provider": provider.value, "label": label, "base_url": base_url,
                "api_version": api_version, "sealed_key": sealed.to_bytes(),
                "key_version": sealed.key_version, "last4": last4(api_key),
                "fingerprint": fingerprint(api_key), "by": access.principal.user_id,
            },
        )
    ).scalar_one()  # fmt: skip
    configured = AiKeyConfigured(
        provider=provider.value,
        label=label,
        base_url=base_url,
        last4=last4(api_key),
        fingerprint=fingerprint(api_key),
        replaced=not created,
    )
    await record_change(session, access.principal, configured, tenant=access.tenant.slug)
    return await get_key(session, provider)


async def get_key(session: AsyncSession, provider: Provider) -> dict[str, Any]:
    row = (
        await session.execute(
            text(f"SELECT {KEY_COLUMNS} FROM ai_provider_keys WHERE provider = :p"),  # noqa: S608
            {"p": provider.value},
        )
    ).one_or_none()
    if row is None:
        raise Problem(404, "not-found", f"No {provider.value} key is configured.")
    return dict(row._mapping)


async def delete_key(session: AsyncSession, access: TenantAccess, provider: Provider) -> None:
    before = await get_key(session, provider)
    await session.execute(
        text("DELETE FROM ai_provider_keys WHERE provider = :p"), {"p": provider.value}
    )
    removed = AiKeyRemoved(
        provider=provider.value,
        label=before["label"],
        last4=before["last4"],
        fingerprint=before["fingerprint"],
    )
    await record_change(session, access.principal, removed, tenant=access.tenant.slug)


async def test_key(
    session: AsyncSession,
    vault: Vault,
    settings: Settings,
    access: TenantAccess,
    provider: Provider,
    *,
    model: str | None,
) -> dict[str, Any]:
    await get_key(session, provider)  # 404 when the tenant has no key of its own
    credentials = await credentials_for(session, vault, settings, access.tenant, provider)
    if model is None:
        ai = await read_settings(session)
        model = TEST_MODELS.get(provider) or str(ai["caption_model"]).split("/", 1)[-1]
    outcome = await try_credentials(credentials, model, settings)
    return {"provider": provider.value, **outcome}


AI_SETTINGS = SettingsRow(
    "ai_settings",
    ("caption_model", "embedding_model", "embedding_dimension"),
    event=AiSettingsUpdated,
)


async def read_settings(session: AsyncSession) -> dict[str, Any]:
    return await AI_SETTINGS.read(session)


async def update_settings(
    session: AsyncSession, access: TenantAccess, changes: dict[str, Any]
) -> dict[str, Any]:
    return await AI_SETTINGS.update(session, access, changes)


async def reseal_ai_keys(
    session: AsyncSession, vault: Vault, tenant_id: Any, old_version: int
) -> int:
    """Re-encrypt the tenant's AI keys sealed under `old_version` with its active data key
    (a `rotate_tenant_key` callback; the session is in the tenant's schema)."""
    rows = (
        await session.execute(
            text("SELECT provider, sealed_key FROM ai_provider_keys WHERE key_version = :v"),
            {"v": old_version},
        )
    ).all()
    for provider, sealed in rows:
        resealed = await vault.reseal(
            session, tenant_id, KEY_PURPOSE, key_record(Provider(provider)), bytes(sealed)
        )
        await session.execute(
            text(
                "UPDATE ai_provider_keys SET sealed_key = :s, key_version = :v WHERE provider = :p"
            ),
            {"s": resealed.to_bytes(), "v": resealed.key_version, "p": provider},
        )
    return len(rows)
