"""Per-tenant AI rate limits: provider calls a minute per operation, counted in Redis so every
worker shares them. A call over the limit is not an error: the actor waits for the window."""

from __future__ import annotations

import random
import uuid

from redis.asyncio import Redis

from socialflow.lib.rate_limits import count_in_window


async def wait_ms(redis: Redis, tenant_id: uuid.UUID, operation: str, per_minute: int) -> int:
    """0 when one more `operation` call of the tenant fits this minute (it is counted); else
    how long to wait for the next window, with jitter so deferred calls do not arrive at once."""
    counted = await count_in_window(redis, f"socialflow:ai_rate:{tenant_id}:{operation}")
    if counted.count <= per_minute:
        return 0
    return counted.reset_s * 1000 + random.randint(50, 2_000)  # noqa: S311 - jitter, not a secret
