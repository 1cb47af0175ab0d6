"""The search_path discipline: a tenant transaction sees its schema and `extensions` only."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.db.engine import NO_TENANT_SEARCH_PATH
from socialflow.db.tenant_schema import search_path_for

# Sessions without a tenant resolve unqualified names in `extensions` only (set by db.engine
# per connection, or per transaction behind a pooler); shared tables are always qualified.
__all__ = ["NO_TENANT_SEARCH_PATH", "enter_tenant_schema"]


async def enter_tenant_schema(session: AsyncSession, schema: str) -> None:
    """Point this transaction's search_path at `schema` (SET LOCAL semantics: gone at commit).

    Safe behind a transaction-mode pooler; the schema name is validated and quoted, and passed
    to set_config as a bound value, never formatted into the statement.
    """
    await session.execute(
        text("SELECT set_config('search_path', :path, true)"), {"path": search_path_for(schema)}
    )
