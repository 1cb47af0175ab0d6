"""Who is calling, from `Authorization: Bearer <token>`: a person's access token (ours, or the
OIDC issuer's), or a tenant API key (`sfk_…`) — always checked against the database.

An access token names its user; whether that user is still active and still an operator is
read from `shared.users` (cached per process for AUTH_USER_CACHE_S), so disabling an account
or demoting an operator takes effect within that time, not at the token's expiry. API keys
are cached the same time and forgotten everywhere as soon as a revocation commits.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from litestar.datastructures import State
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.principal import Principal, unauthorized
from socialflow.db.session import unit_of_work
from socialflow.identity.oidc import is_for_issuer, oidc_principal
from socialflow.identity.tokens import hash_token, read_access_token
from socialflow.lib.problems import Problem

API_KEY_PREFIX = "sfk_"
KEY_LOOKUP = text(
    "SELECT id, tenant_id, role, expires_at, revoked_at, last_used_at FROM shared.api_keys "
    "WHERE key_hash = :h"
)
USER_LOOKUP = text("SELECT email, is_active, is_operator FROM shared.users WHERE id = :id")
# last_used_at is refreshed at most this often per key: a busy integration writes little.
LAST_USED_RESOLUTION_S = 60

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Standing:
    """What a request needs to know about a person, as the database said at `read_at`."""

    email: str
    is_active: bool
    is_operator: bool
    read_at: float


class StandingCache:
    """Users' standing per process, kept `ttl_s` (0: always ask the database), at most
    `max_entries` users (the least recently read go first)."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[uuid.UUID, Standing] = OrderedDict()

    async def standing(self, session: AsyncSession, user_id: uuid.UUID) -> Standing | None:
        now = time.monotonic()
        cached = self._entries.get(user_id)
        if cached is not None and now - cached.read_at < self.ttl_s:
            return cached
        row = (await session.execute(USER_LOOKUP, {"id": user_id})).one_or_none()
        if row is None:
            self._entries.pop(user_id, None)
            return None
        fresh = Standing(row.email, row.is_active, row.is_operator, now)
        if self.ttl_s > 0:
            self._entries[user_id] = fresh
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return fresh


@dataclass(frozen=True, slots=True)
class KeyStanding:
    """An API key as the database said at `read_at` (a revoked key is never kept)."""

    principal: Principal
    expires_at: datetime | None
    read_at: float


class ApiKeyCache:
    """API keys per process, by the hash of their secret, kept `ttl_s` (0: always ask).

    A revocation is announced to every API process once it commits (`forget`), so a revoked
    key is refused at once everywhere; a lost announcement is bounded by `ttl_s`.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, KeyStanding] = OrderedDict()
        self._generation = 0  # bumped by every forget: a read in flight is not kept

    def get(self, key_hash: str) -> KeyStanding | None:
        cached = self._entries.get(key_hash)
        if cached is not None and time.monotonic() - cached.read_at < self.ttl_s:
            return cached
        return None

    def keep(self, key_hash: str, standing: KeyStanding, generation: int) -> None:
        if self.ttl_s <= 0 or generation != self._generation:
            return
        self._entries[key_hash] = standing
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    @property
    def generation(self) -> int:
        return self._generation

    def forget(self, key_id: str | None) -> None:
        """Drop the key with this id (None: every key, e.g. announcements were missed)."""
        self._generation += 1
        if key_id is None:
            self._entries.clear()
            return
        for key_hash, cached in list(self._entries.items()):
            if str(cached.principal.user_id) == key_id:
                del self._entries[key_hash]


def api_key_cache(state: State) -> ApiKeyCache:
    cache = state.get("api_key_cache")
    if not isinstance(cache, ApiKeyCache):
        cache = state.setdefault("api_key_cache", ApiKeyCache(state.settings.auth_user_cache_s))
    return cache


def _standing_cache(state: State) -> StandingCache:
    cache = state.get("user_standing")
    if not isinstance(cache, StandingCache):
        cache = state.setdefault("user_standing", StandingCache(state.settings.auth_user_cache_s))
    return cache


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def resolve_principal(session: AsyncSession, state: State, token: str) -> Principal:
    """The principal of a bearer token; a 401 problem for a token that does not open anything."""
    if token.startswith(API_KEY_PREFIX):
        return await _api_key_principal(session, api_key_cache(state), token)
    if is_for_issuer(state.settings, token):
        return await oidc_principal(session, state.settings, token)
    user_id = read_access_token(state.settings, token)
    standing = await _standing_cache(state).standing(session, user_id)
    if standing is None or not standing.is_active:
        raise unauthorized("This account is disabled or no longer exists.")
    return Principal(user_id=user_id, email=standing.email, is_operator=standing.is_operator)


async def authenticate(state: State, authorization: str | None) -> Principal | None:
    """The caller of a request, resolved in a unit of work of its own, or None when the header
    opens nothing (or the database cannot say). Counts no rate limit and never raises: for
    middleware that must know the caller before the route runs (idempotency)."""
    token = bearer_token(authorization)
    if token is None:
        return None
    try:
        async with unit_of_work(state.session_factory) as session:
            return await resolve_principal(session, state, token)
    except Problem:
        return None
    except (SQLAlchemyError, OSError) as exc:
        log.warning("authenticate.unavailable", error_type=type(exc).__name__)
        return None


async def principal_from_header(
    session: AsyncSession, state: State, authorization: str | None
) -> Principal:
    """The caller of an `Authorization` header, or a 401 problem: how the route guards
    (access/guards.py) authenticate, given to them in the app's state."""
    token = bearer_token(authorization)
    if token is None:
        raise unauthorized("Send an access token: Authorization: Bearer <token>.")
    return await resolve_principal(session, state, token)


async def _api_key_principal(session: AsyncSession, cache: ApiKeyCache, token: str) -> Principal:
    key_hash = hash_token(token)
    now = datetime.now(UTC)
    cached = cache.get(key_hash)
    if cached is not None:
        if cached.expires_at is not None and cached.expires_at <= now:
            raise unauthorized("The API key is invalid, revoked or expired.")
        return cached.principal
    generation = cache.generation
    key = (await session.execute(KEY_LOOKUP, {"h": key_hash})).one_or_none()
    if key is None or key.revoked_at is not None or (key.expires_at and key.expires_at <= now):
        raise unauthorized("The API key is invalid, revoked or expired.")
    if (
        key.last_used_at is None
        or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_S
    ):
        await session.execute(
            text("UPDATE shared.api_keys SET last_used_at = now() WHERE id = :id"), {"id": key.id}
        )
    principal = Principal(
        user_id=key.id,
        email="",
        is_operator=False,
        kind="api_key",
        tenant_id=key.tenant_id,
        key_role=key.role,
    )
    cache.keep(key_hash, KeyStanding(principal, key.expires_at, time.monotonic()), generation)
    return principal
