"""Rate limits in Redis: fixed one-minute windows per API key, per user and per tenant.

INCR is atomic, so however many API processes share Redis, a window never admits more than its
limit. The tightest window that applies sets the `RateLimit-*` headers of the response.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from socialflow.lib import http_metrics
from socialflow.lib.problems import Problem

WINDOW_S = 60

log = structlog.get_logger(__name__)


class RateLimit(NamedTuple):
    """Requests a minute allowed in `scope`; `quota` names the plan resource it is, if any
    (passing a plan's quota is answered `quota-exceeded`, passing another limit
    `rate-limited`)."""

    scope: str
    limit: int
    quota: str | None = None


@dataclass(frozen=True)
class Window:
    limit: int
    remaining: int
    reset_s: int


@dataclass(frozen=True)
class Count:
    """One request counted in a fixed window: the window's key, its count and reset."""

    key: str
    count: int
    window_s: int
    reset_s: int


async def count_in_window(redis: Redis, prefix: str, window_s: int = WINDOW_S) -> Count:
    """INCR the counter of the current `window_s` window under `prefix` (atomic across every
    process sharing Redis); Redis errors propagate, callers decide how to fail."""
    now = int(time.time())
    window_start = now - now % window_s
    key = f"{prefix}:{window_start}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_s + 5)
        count, _ = await pipe.execute()
    return Count(key=key, count=count, window_s=window_s, reset_s=window_start + window_s - now)


# Every counter of one request in one command: INCR each key, giving a new one its expiry.
_COUNT_ALL = """
local counts = {}
for i, key in ipairs(KEYS) do
    local count = redis.call('INCR', key)
    if count == 1 then redis.call('EXPIRE', key, ARGV[1]) end
    counts[i] = count
end
return counts
"""
_COUNT_ALL_SHA = hashlib.sha1(_COUNT_ALL.encode()).hexdigest()  # noqa: S324 - Redis's script id


async def _count_all(redis: Redis, keys: list[str], ttl_s: int) -> list[int]:
    try:
        counts = await redis.evalsha(_COUNT_ALL_SHA, len(keys), *keys, ttl_s)
    except NoScriptError:  # a restarted Redis forgot the script: EVAL caches it again
        counts = await redis.eval(_COUNT_ALL, len(keys), *keys, ttl_s)
    return [int(c) for c in counts]


async def hit(redis: Redis, scope: str, limit: int) -> Window:
    """Count one request against `scope`; a 429 problem (with Retry-After) past the limit."""
    (window,) = await hit_all(redis, [RateLimit(scope, limit)])
    return window


def _key(scope: str, window_start: int) -> str:
    return f"socialflow:ratelimit:{scope}:{window_start}"


def _window_start(now: int) -> int:
    return now - now % WINDOW_S


async def hit_all(redis: Redis, limits: Sequence[RateLimit]) -> list[Window]:
    """Count one request against every limit, in one Redis round trip; a 429 problem (with
    Retry-After) for the first limit passed. Fails open if Redis is unreachable (logged;
    /ready reports Redis): the API must not go down with it."""
    now = int(time.time())
    window_start = _window_start(now)
    reset = window_start + WINDOW_S - now
    keys = [_key(limit.scope, window_start) for limit in limits]
    try:
        counts = await _count_all(redis, keys, WINDOW_S + 5)
    except (RedisError, OSError) as exc:
        http_metrics.redis_error("rate_limits")
        log.warning("rate_limit.unavailable", error_type=type(exc).__name__)
        return [Window(limit=limit.limit, remaining=limit.limit, reset_s=reset) for limit in limits]
    windows = []
    for (scope, limit, quota), count in zip(limits, counts, strict=True):
        if count > limit:
            headers = {
                "Retry-After": str(reset),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(reset),
            }
            if quota is not None:
                raise Problem(
                    429,
                    "quota-exceeded",
                    f"The plan allows {limit} requests a minute for this tenant.",
                    headers=headers,
                    resource=quota,
                    limit=limit,
                    used=count - 1,  # the requests of this minute before this one
                    resets_at=datetime.fromtimestamp(window_start + WINDOW_S, UTC).isoformat(),
                )
            raise Problem(
                429,
                "rate-limited",
                f"More than {limit} requests a minute for this {scope.split(':', 1)[0]}.",
                headers=headers,
            )
        windows.append(Window(limit=limit, remaining=limit - count, reset_s=reset))
    return windows


async def current_counts(redis: Redis, scopes: Sequence[str]) -> list[int]:
    """The requests counted so far this minute in each scope (0 where none, or when Redis is
    unreachable): what the usage views show, without counting a request."""
    if not scopes:
        return []
    window_start = _window_start(int(time.time()))
    try:
        counts = await redis.mget([_key(scope, window_start) for scope in scopes])
    except (RedisError, OSError) as exc:
        http_metrics.redis_error("rate_limits")
        log.warning("rate_limit.unavailable", error_type=type(exc).__name__)
        return [0] * len(scopes)
    return [int(count or 0) for count in counts]


def remember(scope: MutableMapping[str, Any], window: Window) -> None:
    """Keep the tightest window of this request, for the response headers."""
    state = scope.setdefault("state", {})
    current = state.get("rate_limit")
    if current is None or window.remaining < current.remaining:
        state["rate_limit"] = window
