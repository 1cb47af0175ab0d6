"""The search_path discipline: a tenant transaction sees its schema and `extensions` only."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.db.tenant_schema import search_path_for

# Sessions without a tenant resolve unqualified names in `extensions` only (set per
# connection in db.engine), so a query that forgot its tenant fails instead of reading
# another schema; shared tables are always schema-qualified.
NO_TENANT_SEARCH_PATH = "extensions"


async def enter_tenant_schema(session: AsyncSession, schema: str) -> None:
    """Point this transaction's search_path at `schema` (SET LOCAL semantics: gone at commit).

    Safe behind a transaction-mode pooler; the schema name is validated and quoted, and passed
    to set_config as a bound value, never formatted into the statement.
    """
    await session.execute(
        text("SELECT set_config('search_path', :path, true)"), {"path": search_path_for(schema)}
    )
