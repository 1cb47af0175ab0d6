"""Sign-in throttling: attempts per client address and failures per account, counted in Redis.

Every attempt on a sign-in endpoint counts against the caller's address (a one-minute window,
`lib.rate_limits`). Per account (the email, the refresh token, the invitation token) only
failures count, in a window of SIGNIN_FAILURE_WINDOW_S; an attempt reserves its place before it
runs and gives it back when it succeeds, so a burst of concurrent guesses at one account cannot
slip past the limit, and a throttled attempt never reaches argon2 or the database.
Like the other limits they fail open when Redis is unreachable (logged; `/ready` reports it).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from litestar import Request
from litestar.datastructures import State
from redis.asyncio import Redis
from redis.exceptions import RedisError

from socialflow.lib.problems import Problem
from socialflow.lib.rate_limits import count_in_window, hit, remember

# Answers that mean a wrong credential; a 422 (a weak new password) or a 503 is not a guess.
COUNTED_FAILURES = frozenset({401, 403, 404, 410})
IPV6_PREFIX = 64  # one host usually holds a whole /64

log = structlog.get_logger(__name__)


def client_address(request: Request[Any, Any, Any]) -> str:
    """The caller's address (uvicorn applies X-Forwarded-For from FORWARDED_ALLOW_IPS)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


@dataclass(frozen=True)
class _Reservation:
    key: str
    window_s: int


@asynccontextmanager
async def sign_in_attempt(
    request: Request[Any, Any, Any], state: State, *, endpoint: str, account: str
) -> AsyncIterator[None]:
    """Admit one attempt at `account` through `endpoint`, or raise a 429 problem.

    A counted failure (a problem with a status in COUNTED_FAILURES) raised inside the block
    keeps its place in the account's window; anything else gives it back.
    """
    settings = state.settings
    window = await hit(
        state.redis,
        f"address:{endpoint}:{client_address(request)}",
        settings.signin_attempts_per_address_per_minute,
    )
    remember(request.scope, window)  # type: ignore[arg-type]
    reservation = await _reserve(
        state.redis,
        endpoint,
        account,
        settings.signin_failures_per_account,
        settings.signin_failure_window_s,
    )
    try:
        yield
    except Problem as exc:
        if exc.status not in COUNTED_FAILURES:
            await _give_back(state.redis, reservation)
        raise
    except Exception:
        await _give_back(state.redis, reservation)
        raise
    await _give_back(state.redis, reservation)


async def _reserve(
    redis: Redis, endpoint: str, account: str, limit: int, window_s: int
) -> _Reservation | None:
    digest = hashlib.sha256(account.encode()).hexdigest()[:32]  # no emails in Redis keys
    try:
        counted = await count_in_window(redis, f"socialflow:signin:{endpoint}:{digest}", window_s)
    except (RedisError, OSError) as exc:
        log.warning("signin_throttle.unavailable", error_type=type(exc).__name__)
        return None
    if counted.count > limit:
        raise Problem(
            429,
            "rate-limited",
            f"Too many failed attempts for this account; retry in {counted.reset_s} s.",
            headers={"Retry-After": str(counted.reset_s)},
        )
    return _Reservation(counted.key, window_s)


async def _give_back(redis: Redis, reservation: _Reservation | None) -> None:
    if reservation is None:
        return
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.decr(reservation.key)
            pipe.expire(reservation.key, reservation.window_s + 5)  # never a key without TTL
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("signin_throttle.unavailable", error_type=type(exc).__name__)
