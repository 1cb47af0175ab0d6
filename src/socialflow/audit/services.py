"""Reading a tenant's audit log (the session is in the tenant's schema)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.pagination import PageRequest


async def list_audit(
    session: AsyncSession, page: PageRequest, *, action: str | None = None
) -> list[dict[str, Any]]:
    """The tenant's audit log, newest first; one row more than the page."""
    rows = await session.execute(
        text(
            "SELECT id, at, actor, action, target_type, target_id, request_id, before, after "
            "FROM audit_log "
            "WHERE (CAST(:action AS text) IS NULL OR action = :action) "
            "AND (CAST(:after AS bigint) IS NULL OR id < CAST(:after AS bigint)) "
            "ORDER BY id DESC LIMIT :limit"
        ),
        {"action": action, "after": page.after[0] if page.after else None,
         "limit": page.limit + 1},
    )  # fmt: skip
    return [dict(row._mapping) for row in rows]
