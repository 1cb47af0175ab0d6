"""Reading a tenant's audit log (the session is in the tenant's schema)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.audit.bodies import AuditEntryOut
from socialflow.audit.models import TenantAuditEntry
from socialflow.db.rows import fetch_structs, struct_columns
from socialflow.lib.pagination import PageRequest

_ENTRY = TenantAuditEntry.__table__.c


@functools.cache
def _page_query(*, by_action: bool, after: bool) -> Select[Any]:
    """The audit-log page statement, built once per filter combination (bound parameters)."""
    query = (
        select(*struct_columns(TenantAuditEntry, AuditEntryOut))
        .order_by(_ENTRY.id.desc())
        .limit(bindparam("limit"))
    )
    if by_action:
        query = query.where(_ENTRY.action == bindparam("action"))
    if after:
        query = query.where(_ENTRY.id < bindparam("after"))
    return query


async def list_audit(
    session: AsyncSession, page: PageRequest, *, action: str | None = None
) -> list[AuditEntryOut]:
    """The tenant's audit log, newest first; one entry more than the page."""
    query = _page_query(by_action=action is not None, after=bool(page.after))
    params = {
        "limit": page.limit + 1,
        "action": action,
        "after": page.after[0] if page.after else None,
    }
    return await fetch_structs(session, query, AuditEntryOut, params)
