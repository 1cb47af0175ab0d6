"""The search_path discipline: a tenant transaction sees its schema and `extensions` only."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.db.rows import fetch_rows
from socialflow.db.tenant_schema import NO_TENANT_SEARCH_PATH, search_path_for, set_search_path

__all__ = ["NO_TENANT_SEARCH_PATH", "enter_tenant_schema", "leave_tenant_schema"]

_SET = text(f"SELECT {set_search_path(':path')}")


async def enter_tenant_schema(session: AsyncSession, schema: str) -> None:
    """Point this transaction's search_path at `schema` (SET LOCAL semantics: gone at commit).

    The schema name is validated and quoted, and passed to set_config as a bound value, never
    formatted into the statement. Every tenant request runs it: a hot statement (db/rows.py).
    """
    await fetch_rows(session, _SET, {"path": search_path_for(schema)})


async def leave_tenant_schema(session: AsyncSession) -> None:
    """Back to no tenant schema for the rest of this transaction."""
    await session.execute(_SET, {"path": NO_TENANT_SEARCH_PATH})
