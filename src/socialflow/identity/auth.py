"""Litestar dependency: the authenticated caller from `Authorization: Bearer <token>` — a
person's access token, or a tenant API key (`sfk_…`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.identity.oidc import is_for_issuer, oidc_principal
from socialflow.identity.tokens import Principal, hash_token, read_access_token, unauthorized
from socialflow.lib.logging import bind_context
from socialflow.lib.rate_limits import hit, remember

API_KEY_PREFIX = "sfk_"
KEY_LOOKUP = text(
    "SELECT id, tenant_id, role, expires_at, revoked_at, last_used_at FROM shared.api_keys "
    "WHERE key_hash = :h"
)
# last_used_at is refreshed at most this often per key: a busy integration writes little.
LAST_USED_RESOLUTION_S = 60


async def provide_principal(
    request: Request[Any, Any, Any], state: State, session: NamedDependency[AsyncSession]
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("Send an access token: Authorization: Bearer <token>.")
    if token.startswith(API_KEY_PREFIX):
        principal = await _api_key_principal(session, token)
    elif is_for_issuer(state.settings, token):
        principal = await oidc_principal(session, state.settings, token)
    else:
        principal = read_access_token(state.settings, token)
    bind_context(actor=principal.actor)
    settings = state.settings
    limit = (
        settings.rate_limit_api_key_per_minute
        if principal.kind == "api_key"
        else settings.rate_limit_user_per_minute
    )
    remember(request.scope, await hit(state.redis, principal.actor, limit))  # type: ignore[arg-type]
    return principal


async def _api_key_principal(session: AsyncSession, token: str) -> Principal:
    key = (await session.execute(KEY_LOOKUP, {"h": hash_token(token)})).one_or_none()
    now = datetime.now(UTC)
    if key is None or key.revoked_at is not None or (key.expires_at and key.expires_at <= now):
        raise unauthorized("The API key is invalid, revoked or expired.")
    if (
        key.last_used_at is None
        or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_S
    ):
        await session.execute(
            text("UPDATE shared.api_keys SET last_used_at = now() WHERE id = :id"), {"id": key.id}
        )
    return Principal(
        user_id=key.id, email="", is_operator=False, kind="api_key",
        tenant_id=key.tenant_id, key_role=key.role,
    )  # fmt: skip
