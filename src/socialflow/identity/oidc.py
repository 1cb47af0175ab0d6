"""External identity provider: JWTs from a configured OIDC issuer, checked against its JWKS.

PyJWT's JWKS client caches the keys and fetches them again when a token names a key id it has
not seen, which is how an issuer's key rotation reaches us. Users are linked by (issuer,
subject); on first sight, to the account with the token's verified email, or a new one.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

import jwt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.identity.models import User
from socialflow.identity.services import find_user_by_email, get_or_create_user
from socialflow.identity.tokens import Principal, unauthorized
from socialflow.settings import Settings

ALGORITHMS = ["RS256", "ES256", "PS256"]


@lru_cache(maxsize=4)
def _jwks_client(url: str, cache_s: int, cooldown_s: float) -> jwt.PyJWKClient:
    # An unknown key id forces a refetch at most once per cooldown (no refetch storm from
    # forged key ids); a rotated key is accepted within that time.
    return jwt.PyJWKClient(
        url, cache_keys=True, lifespan=max(cache_s, 1), timeout=5, cooldown_duration=cooldown_s
    )


def is_for_issuer(settings: Settings, token: str) -> bool:
    """Whether an (unverified) token claims to come from the configured issuer."""
    if not (settings.oidc_issuer and settings.oidc_jwks_url):
        return False
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return bool(claims.get("iss") == settings.oidc_issuer)


async def oidc_principal(session: AsyncSession, settings: Settings, token: str) -> Principal:
    assert settings.oidc_jwks_url is not None
    client = _jwks_client(
        settings.oidc_jwks_url, settings.oidc_jwks_cache_s, settings.oidc_jwks_refresh_cooldown_s
    )
    try:
        key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=ALGORITHMS, issuer=settings.oidc_issuer,
            audience=settings.oidc_audience, options={"require": ["exp", "iat", "sub", "iss"]},
        )  # fmt: skip
    except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
        raise unauthorized("The identity provider's token is invalid.") from exc
    user = await _linked_user(session, str(claims["iss"]), str(claims["sub"]), claims)
    return Principal(user_id=user.id, email=user.email, is_operator=user.is_operator)


async def _linked_user(
    session: AsyncSession, issuer: str, subject: str, claims: dict[str, Any]
) -> User:
    found = (
        await session.execute(
            text("SELECT user_id FROM shared.user_identities WHERE issuer = :i AND subject = :s"),
            {"i": issuer, "s": subject},
        )
    ).scalar_one_or_none()
    if found is not None:
        user = await session.get(User, found)
        if user is None or not user.is_active:
            raise unauthorized("This account is disabled.")
        return user
    email = claims.get("email")
    if not (isinstance(email, str) and claims.get("email_verified") is True):
        raise unauthorized("The identity provider's token has no verified email to link.")
    user = await find_user_by_email(session, email)
    if user is None:
        user, _ = await get_or_create_user(session, email)
    await session.execute(
        text(
            "INSERT INTO shared.user_identities (issuer, subject, user_id) VALUES (:i, :s, :u) "
            "ON CONFLICT DO NOTHING"
        ),
        {"i": issuer, "s": subject, "u": user.id},
    )
    return user
