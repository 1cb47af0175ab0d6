"""Tenant lookup by slug, cached briefly per process (never by reflecting the catalog), and
dropped from every process's cache as soon as a change to the tenant commits."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.slugs import is_valid_slug
from socialflow.db.session import after_commit
from socialflow.lib import http_metrics

log = structlog.get_logger(__name__)

# A tenant as TenantRef holds it, with its plan's API requests a minute (its override first).
# The plan tables belong to plans/, a layer above: named in SQL here, not imported.
TENANT_SELECT = (
    "SELECT t.id, t.slug, t.name, t.agency_id, t.plan, t.status, t.schema_name, "
    "coalesce((e.overrides ->> 'api_requests_per_minute')::int, p.api_requests_per_minute) "
    "FROM shared.tenants t JOIN shared.plans p ON p.name = t.plan "
    "LEFT JOIN shared.tenant_entitlements e ON e.tenant_id = t.id "
)
LOOKUP_SQL = text(TENANT_SELECT + "WHERE t.slug = :slug AND t.status <> 'purged'")
BY_ID_SQL = text(TENANT_SELECT + "WHERE t.id = :id")
# Every API process listens here and drops what it hears ("tenant:<slug>", "api_key:<id>")
# from its caches.
CHANGES_CHANNEL = "socialflow:changed"
TENANT = "tenant"
EVERY = "*"  # announced as the key: every entry of that kind changed
RESUBSCRIBE_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class TenantRef:
    id: uuid.UUID
    slug: str
    name: str
    agency_id: uuid.UUID
    plan: str
    status: str
    schema_name: str
    requests_per_minute: int  # the tenant's API rate limit (plan, or its override)


async def tenant_by_id(session: AsyncSession, tenant_id: uuid.UUID) -> TenantRef | None:
    """The tenant with this id, purged or not, read now (workers and jobs: not cached)."""
    row = (await session.execute(BY_ID_SQL, {"id": tenant_id})).one_or_none()
    return None if row is None else TenantRef(*row)


class TenantDirectory:
    """slug → TenantRef with a short TTL (TENANT_CACHE_TTL_S).

    A change to a tenant is announced after its transaction commits (never before: a request
    running meanwhile would cache the old row again) to this process and, over Redis pub/sub,
    to every other one. If the announcement is lost, the TTL bounds how long a stale row lives.
    Membership and role are never cached.
    """

    def __init__(self, ttl_s: float, redis: Redis | None = None) -> None:
        self.ttl_s = ttl_s
        self.redis = redis
        self._entries: dict[str, tuple[float, TenantRef]] = {}
        # Other per-process caches that changes are announced to, by kind ("api_key" …):
        # each gets the changed key, or None when announcements may have been missed.
        self._listeners: dict[str, Callable[[str | None], None]] = {TENANT: self._forget}
        # Bumped by every invalidation: a lookup that read the row before an announcement
        # arrived must not cache what it read after it.
        self._generation = 0

    async def find(self, session: AsyncSession, slug: str) -> TenantRef | None:
        if not is_valid_slug(slug):
            return None
        cached = self._entries.get(slug)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        generation = self._generation
        row = (await session.execute(LOOKUP_SQL, {"slug": slug})).one_or_none()
        if row is None:
            self._entries.pop(slug, None)
            return None
        ref = TenantRef(*row)
        if self.ttl_s > 0 and generation == self._generation:
            self._entries[slug] = (time.monotonic() + self.ttl_s, ref)
        return ref

    def invalidate(self, slug: str) -> None:
        self._generation += 1
        self._entries.pop(slug, None)

    def _forget(self, slug: str | None) -> None:
        if slug is None:
            self._generation += 1
            self._entries.clear()
        else:
            self.invalidate(slug)

    def on(self, kind: str, forget: Callable[[str | None], None]) -> None:
        """Also tell `forget` when a change of `kind` is announced (a per-process cache)."""
        self._listeners[kind] = forget

    def changed(self, session: AsyncSession, slug: str, kind: str = TENANT) -> None:
        """Announce, once `session` commits, that `slug` (a tenant, or an object of `kind`)
        changed: this process's caches forget it at once, the others over pub/sub."""
        after_commit(session, lambda: self.announce(slug, kind))

    def changed_all(self, session: AsyncSession, kind: str = TENANT) -> None:
        """Announce, once `session` commits, that every entry of `kind` changed (a plan's
        limits, which any tenant may be on)."""
        self.changed(session, EVERY, kind)

    async def announce(self, key: str, kind: str = TENANT) -> None:
        self._dispatch(kind, key)
        if self.redis is not None:
            try:
                await self.redis.publish(CHANGES_CHANNEL, f"{kind}:{key}")
            except (RedisError, OSError) as exc:
                http_metrics.redis_error("tenant_directory")
                log.warning("tenant_directory.announce_failed", error_type=type(exc).__name__)

    def _dispatch(self, kind: str, key: str | None) -> None:
        forget = self._listeners.get(kind)
        if forget is not None:
            forget(None if key == EVERY else key)

    async def listen(self, subscriber: Redis, ready: asyncio.Event | None = None) -> None:
        """Drop the tenants other processes announce; run as a task for the process's life.

        `subscriber` is a client without a read timeout (a quiet channel is not a failure),
        with health checks so that a dead connection is noticed.
        """
        delay = 0.1
        while True:
            try:
                async with subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANGES_CHANNEL)
                    # Announcements missed while unsubscribed are unknown: start afresh.
                    for forget in self._listeners.values():
                        forget(None)
                    if ready is not None:
                        ready.set()
                    delay = 0.1
                    async for message in pubsub.listen():
                        data = message.get("data")
                        if isinstance(data, bytes):
                            kind, _, key = data.decode(errors="replace").partition(":")
                            self._dispatch(kind, key)
            except (RedisError, OSError) as exc:
                http_metrics.redis_error("tenant_directory")
                log.warning(
                    "tenant_directory.listen_failed",
                    error_type=type(exc).__name__,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(RESUBSCRIBE_MAX_S, delay * 2)


@contextlib.asynccontextmanager
async def listening(directory: TenantDirectory, redis_url: str) -> AsyncIterator[None]:
    """Keep `directory` listening for announcements while the block runs."""
    subscriber = Redis.from_url(redis_url, health_check_interval=30)
    ready = asyncio.Event()
    task = asyncio.create_task(directory.listen(subscriber, ready))
    try:
        # Subscribed before the process serves, unless Redis is down (then the TTL applies).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout=2.0)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await subscriber.aclose()
