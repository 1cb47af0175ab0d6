"""An account's credentials sealed in the vault (purpose `social_token`, bound to the account's
row), opened only by the process that acts with them."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.social.platforms.base import Credentials
from socialflow.vault.service import Vault

TOKEN_PURPOSE = "social_token"  # noqa: S105 - a vault purpose name, not a secret
APP_PURPOSE = "social_app"
PKCE_PURPOSE = "oauth_pkce"


def _encode(credentials: Credentials) -> str:
    fields = asdict(credentials)
    if credentials.expires_at is not None:
        fields["expires_at"] = credentials.expires_at.isoformat()
    return msgspec.json.encode({k: v for k, v in fields.items() if v is not None}).decode()


def _decode(text: str) -> Credentials:
    fields = msgspec.json.decode(text)
    if "expires_at" in fields:
        fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
    return Credentials(**fields)


async def seal(
    session: AsyncSession,
    vault: Vault,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    credentials: Credentials,
) -> bytes:
    sealed = await vault.encrypt(
        session, tenant_id, TOKEN_PURPOSE, account_id, _encode(credentials)
    )
    return sealed.to_bytes()


async def open_sealed(
    session: AsyncSession, vault: Vault, tenant_id: uuid.UUID, account_id: uuid.UUID, sealed: bytes
) -> Credentials:
    return _decode(await vault.decrypt(session, tenant_id, TOKEN_PURPOSE, account_id, sealed))
