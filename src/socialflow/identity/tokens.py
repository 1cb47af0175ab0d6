"""Access tokens (short-lived HS256 JWTs) and refresh tokens (opaque, stored hashed, rotated)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from typing import Any

import jwt

from socialflow.access.principal import Principal, unauthorized
from socialflow.settings import Settings

ALGORITHM = "HS256"
REFRESH_PREFIX = "sfr_"


def issue_access_token(settings: Settings, principal: Principal) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "sub": str(principal.user_id),
        "email": principal.email,
        "op": principal.is_operator,  # informational for clients; never trusted on the way in
        "iat": now,
        "exp": now + settings.access_token_ttl_s,
        "jti": secrets.token_hex(8),
        "typ": "access",
    }
    return jwt.encode(claims, settings.signing_key(), algorithm=ALGORITHM)


# Tokens whose signature was checked, by token: (subject, expiry). A busy client sends the same
# token for its whole life; checking its HMAC again on every request would cost more than the
# rest of authentication. Bounded; an entry is good until the token's own expiry.
_VERIFIED: OrderedDict[tuple[str, str, str], tuple[uuid.UUID, float]] = OrderedDict()
_VERIFIED_MAX = 10_000


def read_access_token(settings: Settings, token: str) -> uuid.UUID:
    """The user id of a valid token; a 401 problem for anything else.

    Only the subject is taken from the token: whether that user is still active, and still an
    operator, is the database's answer (`auth.py`), not the `op` claim's.
    """
    # Keyed by the key and issuer too: a token checked under one key proves nothing under another.
    cache_key = (settings.signing_key(), settings.jwt_issuer, token)
    known = _VERIFIED.get(cache_key)
    if known is not None:
        if known[1] > time.time():
            return known[0]
        del _VERIFIED[cache_key]
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.signing_key(),
            algorithms=[ALGORITHM],
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("The access token has expired; refresh it.") from exc
    except jwt.PyJWTError as exc:
        raise unauthorized("The access token is invalid.") from exc
    if claims.get("typ") != "access":
        raise unauthorized("The access token is invalid.")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise unauthorized("The access token is invalid.") from exc
    _VERIFIED[cache_key] = (user_id, float(claims["exp"]))
    while len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.popitem(last=False)
    return user_id


def new_refresh_token() -> tuple[str, str]:
    """A refresh token to hand out once, and the hash to store."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
