"""BYOK keys and AI settings of a tenant (the session is in the tenant's schema). Never commits."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import (
    Boolean,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.ai import vectors
from socialflow.ai.bodies import (
    AIKeyOut,
    AIKeyTestResult,
    AISettingsOut,
    AISettingsRow,
    Reembedding,
)
from socialflow.ai.credentials import (
    KEY_PURPOSE,
    ProviderCredentials,
    credentials_for,
    key_record,
)
from socialflow.ai.events import (
    AiEmbeddingModelChanged,
    AiKeyConfigured,
    AiKeyInvalid,
    AiKeyRemoved,
    AiSettingsUpdated,
)
from socialflow.ai.key_check import try_credentials
from socialflow.ai.models import AIProviderKey, AISettings
from socialflow.ai.pricing import model_facts, unusable_model
from socialflow.ai.providers import TEST_MODELS, Provider, litellm_model, provider_of
from socialflow.audit.record import record_change
from socialflow.lib.outbound import check_outbound_url
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.plans.quota import QuotaTenant
from socialflow.settings import Settings
from socialflow.tenancy.settings_rows import SettingsRow
from socialflow.vault.service import Vault, fingerprint, last4

# A key as shown (never the sealed key); the people who set it as text, as AIKeyOut has them.
KEY_OUT = (
    AIProviderKey.provider,
    AIProviderKey.label,
    AIProviderKey.last4,
    AIProviderKey.fingerprint,
    AIProviderKey.base_url,
    AIProviderKey.api_version,
    AIProviderKey.created_at,
    cast(AIProviderKey.created_by, Text).label("created_by"),
    AIProviderKey.updated_at,
    cast(AIProviderKey.updated_by, Text).label("updated_by"),
    AIProviderKey.status,
    AIProviderKey.invalid_reason,
    AIProviderKey.invalid_at,
)
# What storing a key again replaces; created_* stay the first store's.
REPLACED_ON_PUT = (
    "label",
    "base_url",
    "api_version",
    "sealed_key",
    "key_version",
    "last4",
    "fingerprint",
    "updated_by",
    "status",
    "invalid_reason",
    "invalid_at",
)


def parse_provider(value: str) -> Provider:
    try:
        return Provider(value)
    except ValueError as exc:
        known = ", ".join(p.value for p in Provider)
        raise Problem(404, "not-found", f"Unknown AI provider {value!r}; one of {known}.") from exc


async def list_keys(session: AsyncSession, page: PageRequest) -> list[AIKeyOut]:
    """The tenant's provider keys by provider; one more than the page."""
    query = select(*KEY_OUT).order_by(AIProviderKey.provider).limit(page.limit + 1)
    if page.after:
        query = query.where(AIProviderKey.provider > page.after[0])
    return msgspec.convert((await session.execute(query)).mappings().all(), list[AIKeyOut])


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
) -> AIKeyOut:
    api_key = api_key.strip()
    if provider.needs_base_url and not base_url:
        raise Problem(
            422,
            "validation-error",
            f"The {provider.value} provider needs a base_url.",
            errors=[{"field": "base_url", "message": "required for this provider"}],
        )
    if base_url:
        base_url = await check_outbound_url(base_url, settings)
    sealed = await vault.encrypt(
        session, access.tenant.id, KEY_PURPOSE, key_record(provider), api_key
    )
    stored = insert(AIProviderKey).values(
        provider=provider.value,
        label=label,
        base_url=base_url,
        api_version=api_version,
        sealed_key=sealed.to_bytes(),
        key_version=sealed.key_version,
        last4=last4(api_key),
        fingerprint=fingerprint(api_key),
        created_by=access.principal.user_id,
        updated_by=access.principal.user_id,
        status="valid",
        invalid_reason=None,
        invalid_at=None,
    )
    upsert = stored.on_conflict_do_update(
        index_elements=[AIProviderKey.provider],
        set_={
            **{name: stored.excluded[name] for name in REPLACED_ON_PUT},
            "updated_at": func.now(),
        },
    ).returning(
        # xmax is 0 in a row this statement inserted, not in one it updated.
        literal_column("xmax = 0", Boolean)
    )
    created = (await session.execute(upsert)).scalar_one()
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


async def get_key(session: AsyncSession, provider: Provider) -> AIKeyOut:
    query = select(*KEY_OUT).where(AIProviderKey.provider == provider.value)
    row = (await session.execute(query)).mappings().one_or_none()
    if row is None:
        raise Problem(404, "not-found", f"No {provider.value} key is configured.")
    return msgspec.convert(row, AIKeyOut)


async def delete_key(session: AsyncSession, access: TenantAccess, provider: Provider) -> None:
    before = await get_key(session, provider)  # 404 when there is none
    await session.execute(delete(AIProviderKey).where(AIProviderKey.provider == provider.value))
    removed = AiKeyRemoved(
        provider=provider.value,
        label=before.label,
        last4=before.last4,
        fingerprint=before.fingerprint,
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
) -> AIKeyTestResult:
    await get_key(session, provider)  # 404 when the tenant has no key of its own
    credentials = await credentials_for(
        session, vault, settings, access.tenant, provider, allow_invalid=True
    )
    if model is None:
        ai = await read_settings(session)
        model = TEST_MODELS.get(provider) or ai.caption_model.split("/", 1)[-1]
    outcome = await try_credentials(credentials, model, settings)
    return msgspec.convert({"provider": provider.value, **outcome}, AIKeyTestResult)


SYSTEM_AI = "system:ai"  # the actor of what AI calls find out (a refused key)

AI_SETTINGS = SettingsRow(
    AISettings,
    (
        "caption_model",
        "embedding_model",
        "embedding_dimension",
        "brand_voice",
        "caption_language",
        "hashtag_count",
    ),
    out=AISettingsRow,
    event=AiSettingsUpdated,
)
_EMBEDDING = ("embedding_model", "embedding_dimension")


def _settings_out(row: AISettingsRow) -> AISettingsOut:
    progress = Reembedding(
        done=row.reembed_done,
        total=row.reembed_total,
        running=row.reembed_done < row.reembed_total,
    )
    return AISettingsOut(
        caption_model=row.caption_model,
        embedding_model=row.embedding_model,
        embedding_dimension=row.embedding_dimension,
        brand_voice=row.brand_voice,
        caption_language=row.caption_language,
        hashtag_count=row.hashtag_count,
        reembedding=progress,
        updated_at=row.updated_at,
    )


async def read_settings_row(session: AsyncSession) -> AISettingsRow:
    return await AI_SETTINGS.read(session)


async def read_settings(session: AsyncSession) -> AISettingsOut:
    return _settings_out(await AI_SETTINGS.read(session))


async def update_settings(
    session: AsyncSession, access: TenantAccess, changes: dict[str, Any]
) -> AISettingsOut:
    """Change the AI settings. A new embedding model (or dimension) re-types the tenant's
    vector column, empties it and starts a backfill that embeds every item again."""
    before = await AI_SETTINGS.read(session)
    for name in ("brand_voice", "caption_language"):
        if changes.get(name) == "":
            changes[name] = None  # "" clears
    changes = {k: v for k, v in changes.items() if getattr(before, k) != v}
    _refuse_unusable_models(changes)
    if "embedding_model" in changes and "embedding_dimension" not in changes:
        changes["embedding_dimension"] = _native_dimension(changes["embedding_model"])
        if changes["embedding_dimension"] == before.embedding_dimension:
            del changes["embedding_dimension"]
    after = await AI_SETTINGS.update(session, access, changes)
    if any(name in changes for name in _EMBEDDING):
        generation, total = await vectors.retype(session, after.embedding_dimension)
        started = AiEmbeddingModelChanged(
            generation=generation,
            model=after.embedding_model,
            dimension=after.embedding_dimension,
            total=total,
        )
        await record_change(session, access.principal, started, tenant=access.tenant.slug)
        after = await AI_SETTINGS.read(session)
    return _settings_out(after)


def _refuse_unusable_models(changes: dict[str, Any]) -> None:
    """A caption model must see images and an embedding model embed (pricing.unusable_model),
    as the calls will ask: refused now rather than failing every item later."""
    wanted = (("caption_model", "chat", True), ("embedding_model", "embedding", False))
    problems = [
        {"field": field, "message": why}
        for field, mode, vision in wanted
        if changes.get(field) and (why := unusable_model(changes[field], mode, vision=vision))
    ]
    if problems:
        raise Problem(422, "validation-error", problems[0]["message"], errors=problems)


def _native_dimension(model: str) -> int:
    facts = model_facts(litellm_model(provider_of(model), model))
    if facts.vector_size is None:
        raise Problem(
            422,
            "validation-error",
            f"The dimension of {model!r} is not known: give embedding_dimension with it.",
            errors=[{"field": "embedding_dimension", "message": "required for this model"}],
        )
    return int(facts.vector_size)


async def reseal_ai_keys(
    session: AsyncSession, vault: Vault, tenant_id: Any, old_version: int
) -> int:
    """Re-encrypt the tenant's AI keys sealed under `old_version` with its active data key
    (a `rotate_tenant_key` callback; the session is in the tenant's schema)."""
    rows = (
        await session.execute(
            select(AIProviderKey.provider, AIProviderKey.sealed_key).where(
                AIProviderKey.key_version == old_version
            )
        )
    ).all()
    for provider, sealed in rows:
        resealed = await vault.reseal(
            session, tenant_id, KEY_PURPOSE, key_record(Provider(provider)), bytes(sealed)
        )
        await session.execute(
            update(AIProviderKey)
            .where(AIProviderKey.provider == provider)
            .values(sealed_key=resealed.to_bytes(), key_version=resealed.key_version)
        )
    return len(rows)


_MARK_INVALID = (
    update(AIProviderKey)
    .where(AIProviderKey.provider == bindparam("p"), AIProviderKey.fingerprint == bindparam("fp"))
    .where(AIProviderKey.status == "valid")
    .values(status="invalid", invalid_reason=bindparam("reason"), invalid_at=func.now())
    .returning(AIProviderKey.last4)
)


async def mark_key_invalid(
    session: AsyncSession, tenant: QuotaTenant, credentials: ProviderCredentials, reason: str
) -> bool:
    """Mark the tenant's key that was refused as `invalid` (not a key stored since), with its
    event; False when it was already marked or replaced."""
    used = fingerprint(credentials.api_key)
    params = {"p": credentials.provider.value, "fp": used, "reason": reason}
    last = (await session.execute(_MARK_INVALID, params)).scalar_one_or_none()
    if last is None:
        return False
    invalid = AiKeyInvalid(
        provider=credentials.provider.value, last4=last, fingerprint=used, reason=reason
    )
    await record_change(session, SYSTEM_AI, invalid, tenant=tenant.slug)
    return True
