"""Rate limits in Redis: fixed one-minute windows per API key, per user and per tenant.

INCR is atomic, so however many API processes share Redis, a window never admits more than its
limit. The tightest window that applies sets the `RateLimit-*` headers of the response.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from socialflow.lib.problems import Problem

WINDOW_S = 60

log = structlog.get_logger(__name__)


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


async def hit(redis: Redis, scope: str, limit: int) -> Window:
    """Count one request against `scope`; a 429 problem (with Retry-After) past the limit."""
    try:
        counted = await count_in_window(redis, f"socialflow:ratelimit:{scope}")
    except (RedisError, OSError) as exc:
        # Fail open: an unreachable Redis must not take the API down with it (/ready says it).
        log.warning("rate_limit.unavailable", error_type=type(exc).__name__)
        now = int(time.time())
        return Window(limit=limit, remaining=limit, reset_s=WINDOW_S - now % WINDOW_S)
    count, reset = counted.count, counted.reset_s
    if count > limit:
        raise Problem(
            429,
            "rate-limited",
            f"More than {limit} requests a minute for this {scope.split(':', 1)[0]}.",
            headers={
                "Retry-After": str(reset),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(reset),
            },
        )
    return Window(limit=limit, remaining=limit - count, reset_s=reset)


def remember(scope: MutableMapping[str, Any], window: Window) -> None:
    """Keep the tightest window of this request, for the response headers."""
    state = scope.setdefault("state", {})
    current = state.get("rate_limit")
    if current is None or window.remaining < current.remaining:
        state["rate_limit"] = window
