"""Reading a tenant's audit log (the session is in the tenant's schema)."""

from __future__ import annotations

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.audit.bodies import AuditEntryOut
from socialflow.audit.models import TenantAuditEntry
from socialflow.lib.pagination import PageRequest

_ENTRY = TenantAuditEntry.__table__.c


async def list_audit(
    session: AsyncSession, page: PageRequest, *, action: str | None = None
) -> list[AuditEntryOut]:
    """The tenant's audit log, newest first; one entry more than the page."""
    query = (
        select(*(_ENTRY[name] for name in AuditEntryOut.__struct_fields__))
        .order_by(_ENTRY.id.desc())
        .limit(page.limit + 1)
    )
    if action is not None:
        query = query.where(_ENTRY.action == action)
    if page.after:
        query = query.where(_ENTRY.id < page.after[0])
    rows = await session.execute(query)
    return msgspec.convert(rows.mappings().all(), list[AuditEntryOut])
