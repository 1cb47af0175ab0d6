"""What a request, an actor and an operator command all work with, opened once per process:
settings, the database, the vault, the tenant directory and (in the API) the cache Redis; and
units of work, plain or in a tenant's schema.

The API's lifespan, the worker and the CLI each build theirs with `Resources.open`, so an
actor or a command gets exactly what a route gets, without building it by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from socialflow.access.directory import TenantDirectory, TenantRef
from socialflow.db.engine import create_engine, create_session_factory
from socialflow.db.session import unit_of_work
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.settings import Settings
from socialflow.vault.service import Vault


class UnknownTenant(LookupError):
    """No live tenant with that slug."""


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    vault: Vault
    directory: TenantDirectory
    # The cache Redis (rate limits, idempotency, tenant announcements): the API's and the
    # workers' (the AI actors' rate limits).
    redis: Redis | None = None

    @classmethod
    def open(cls, settings: Settings, *, cache_redis: bool = False) -> Resources:
        """Everything this process needs; the database pool is created lazily by SQLAlchemy."""
        if settings.database_url is None:
            raise RuntimeError("DATABASE_URL is not set and no embedded database was started")
        engine = create_engine(settings)
        redis = (
            Redis.from_url(
                settings.effective_cache_redis_url or "", socket_timeout=settings.ready_timeout_s
            )
            if cache_redis
            else None
        )
        return cls(
            settings=settings,
            engine=engine,
            session_factory=create_session_factory(engine),
            vault=Vault.from_settings(settings),
            directory=TenantDirectory(settings.tenant_cache_ttl_s, redis),
            redis=redis,
        )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()

    def unit_of_work(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in one transaction, committed when the block ends cleanly."""
        return unit_of_work(self.session_factory)

    @asynccontextmanager
    async def in_tenant(self, slug: str) -> AsyncIterator[tuple[TenantRef, AsyncSession]]:
        """A unit of work in the schema of the live tenant `slug` (UnknownTenant otherwise)."""
        async with self.unit_of_work() as session:
            tenant = await self.directory.find(session, slug)
            if tenant is None:
                raise UnknownTenant(slug)
            await enter_tenant_schema(session, tenant.schema_name)
            yield tenant, session


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Resources]:
    """Resources for the length of a block (operator commands, tests)."""
    resources = Resources.open(settings)
    try:
        yield resources
    finally:
        await resources.close()
