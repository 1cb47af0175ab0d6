"""External identity provider: JWTs from a configured OIDC issuer, checked against its JWKS.

PyJWT's JWKS client caches the keys and fetches them again when a token names a key id it has
not seen, which is how an issuer's key rotation reaches us. Users are linked by (issuer,
subject). A first-seen identity with a verified email creates a new account when none has that
email; it joins an existing account only when that account is an ordinary, active one and the
email's domain is in OIDC_LINK_EMAIL_DOMAINS. Anything else needs an explicit link by the
signed-in owner of the account (`link_identity`): an email claim alone must never hand over an
operator's or an agency admin's account.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import lru_cache
from typing import Any

import jwt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.principal import Principal, unauthorized
from socialflow.audit.record import record_change
from socialflow.identity.events import UserIdentityLinked
from socialflow.identity.models import User
from socialflow.identity.services import get_or_create_user
from socialflow.lib.problems import Problem
from socialflow.settings import Settings

ALGORITHMS = ["RS256", "ES256", "PS256"]
LINK_ROUTE = "POST /api/v1/me/identities"
_INSERT_LINK = text(
    "INSERT INTO shared.user_identities (issuer, subject, user_id) VALUES (:i, :s, :u) "
    "ON CONFLICT DO NOTHING RETURNING user_id"
)
_LINKED_USER = text("SELECT user_id FROM shared.user_identities WHERE issuer = :i AND subject = :s")
_AGENCY_ADMIN = text("SELECT EXISTS (SELECT 1 FROM shared.agency_admins WHERE user_id = :u)")


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


async def verified_claims(settings: Settings, token: str) -> dict[str, Any]:
    """The claims of a token signed with the issuer's published keys; a 401 problem if not."""
    assert settings.oidc_jwks_url is not None
    client = _jwks_client(
        settings.oidc_jwks_url, settings.oidc_jwks_cache_s, settings.oidc_jwks_refresh_cooldown_s
    )
    try:
        key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=ALGORITHMS,
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
        raise unauthorized("The identity provider's token is invalid.") from exc
    return claims


async def oidc_principal(session: AsyncSession, settings: Settings, token: str) -> Principal:
    claims = await verified_claims(settings, token)
    user = await _linked_user(session, settings, str(claims["iss"]), str(claims["sub"]), claims)
    return Principal(user_id=user.id, email=user.email, is_operator=user.is_operator)


async def _user_of_identity(session: AsyncSession, issuer: str, subject: str) -> User | None:
    found = (await session.execute(_LINKED_USER, {"i": issuer, "s": subject})).scalar_one_or_none()
    if found is None:
        return None
    user = await session.get(User, found)
    if user is None or not user.is_active:
        raise unauthorized("This account is disabled.")
    return user


async def _linked_user(
    session: AsyncSession, settings: Settings, issuer: str, subject: str, claims: dict[str, Any]
) -> User:
    linked = await _user_of_identity(session, issuer, subject)
    if linked is not None:
        return linked
    email = claims.get("email")
    if not (isinstance(email, str) and claims.get("email_verified") is True):
        raise unauthorized("The identity provider's token has no verified email to link.")
    try:
        user, created = await get_or_create_user(session, email)
    except Problem as exc:  # an email we cannot store is no email to link
        raise unauthorized("The identity provider's token has no usable email.") from exc
    if not created and not await _may_link_automatically(session, settings, issuer, user):
        raise Problem(
            401,
            "identity-link-required",
            f"An account with this email exists. Sign in to it and link this identity with "
            f"{LINK_ROUTE}.",
            headers={"WWW-Authenticate": 'Bearer realm="socialflow"'},
        )
    inserted = await session.execute(_INSERT_LINK, {"i": issuer, "s": subject, "u": user.id})
    if inserted.scalar_one_or_none() is None:  # linked concurrently: that link wins
        winner = await _user_of_identity(session, issuer, subject)
        assert winner is not None
        return winner
    owner = Principal(user_id=user.id, email=user.email, is_operator=user.is_operator)
    link = UserIdentityLinked(user_id=user.id, issuer=issuer, subject=subject, automatic=True)
    await record_change(session, owner, link, tenant=None)
    return user


async def _may_link_automatically(
    session: AsyncSession, settings: Settings, issuer: str, user: User
) -> bool:
    """Whether a verified email may join this existing account without its owner's consent."""
    if not user.is_active or user.is_operator or issuer != settings.oidc_issuer:
        return False
    domain = user.email.rpartition("@")[2].lower()
    if domain not in {d.lower() for d in settings.oidc_link_email_domains}:
        return False
    return not (await session.execute(_AGENCY_ADMIN, {"u": user.id})).scalar_one()


async def link_identity(
    session: AsyncSession, settings: Settings, principal: Principal, id_token: str
) -> tuple[dict[str, str], bool]:
    """Link the issuer's identity in `id_token` to the signed-in caller; (link, created)."""
    if principal.kind != "user":
        raise Problem(403, "forbidden", "Only a person can link an external identity.")
    if not is_for_issuer(settings, id_token):
        raise Problem(
            422, "invalid-identity-token", "The token is not from the configured identity provider."
        )
    try:
        claims = await verified_claims(settings, id_token)
    except Problem as exc:
        raise Problem(422, "invalid-identity-token", exc.detail) from exc
    issuer, subject = str(claims["iss"]), str(claims["sub"])
    link = {"issuer": issuer, "subject": subject}
    params = {"i": issuer, "s": subject, "u": principal.user_id}
    if (await session.execute(_INSERT_LINK, params)).scalar_one_or_none() is None:
        owner: uuid.UUID | None = (await session.execute(_LINKED_USER, params)).scalar_one()
        if owner != principal.user_id:
            raise Problem(409, "identity-taken", "This identity is linked to another account.")
        return link, False
    linked = UserIdentityLinked(
        user_id=principal.user_id, issuer=issuer, subject=subject, automatic=False
    )
    await record_change(session, principal, linked, tenant=None)
    return link, True
