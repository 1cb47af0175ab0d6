"""Tenant lookup by slug, cached briefly in-process (never by reflecting the catalog)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.tenancy.slugs import is_valid_slug

LOOKUP_SQL = text(
    "SELECT id, slug, name, agency_id, plan, status, schema_name FROM shared.tenants "
    "WHERE slug = :slug AND status <> 'purged'"
)


@dataclass(frozen=True, slots=True)
class TenantRef:
    id: uuid.UUID
    slug: str
    name: str
    agency_id: uuid.UUID
    plan: str
    status: str
    schema_name: str


class TenantDirectory:
    """slug → TenantRef with a short TTL; lifecycle changes in this process invalidate at once.

    Other processes see a change within `ttl_s` (TENANT_CACHE_TTL_S); membership and role are
    never cached.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, TenantRef]] = {}

    async def find(self, session: AsyncSession, slug: str) -> TenantRef | None:
        if not is_valid_slug(slug):
            return None
        cached = self._entries.get(slug)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        row = (await session.execute(LOOKUP_SQL, {"slug": slug})).one_or_none()
        if row is None:
            self._entries.pop(slug, None)
            return None
        ref = TenantRef(*row)
        if self.ttl_s > 0:
            self._entries[slug] = (time.monotonic() + self.ttl_s, ref)
        return ref

    def invalidate(self, slug: str) -> None:
        self._entries.pop(slug, None)
