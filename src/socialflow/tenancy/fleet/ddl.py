"""A tenant's tables at the tenant head, rendered once per head and applied in one round trip.

Running Alembic online for every new tenant costs tens of milliseconds of Python per schema;
the DDL it would run is the same for every tenant, so it is rendered offline once (unqualified
names, resolved through the transaction's search_path) and replayed.
"""

from __future__ import annotations

import io
from functools import lru_cache

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.db.migrate import TENANT_TREE, alembic_config
from socialflow.db.tenancy import enter_tenant_schema, leave_tenant_schema
from socialflow.db.tenant_schema import quote_schema

_RENDER_URL = "postgresql+psycopg://render@localhost/render"


@lru_cache(maxsize=1)
def tenant_head() -> str:
    """The head of the tenant tree this code ships (read once per process)."""
    head = ScriptDirectory.from_config(alembic_config(TENANT_TREE, _RENDER_URL)).get_current_head()
    assert head is not None
    return head


@lru_cache(maxsize=4)
def tenant_ddl(head: str) -> str:
    """Every statement that brings an empty schema to `head`, version row included."""
    buffer = io.StringIO()
    config = alembic_config(TENANT_TREE, _RENDER_URL, output_buffer=buffer)
    config.attributes["render_offline"] = True
    command.upgrade(config, head, sql=True)
    return buffer.getvalue()


async def create_tenant_schema(session: AsyncSession, schema: str) -> str:
    """CREATE SCHEMA and every tenant table, in the caller's transaction; returns the revision."""
    head = tenant_head()
    await session.execute(text(f"CREATE SCHEMA {quote_schema(schema)}"))
    await enter_tenant_schema(session, schema)
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    # No parameters: psycopg sends the script as one simple query, one round trip.
    await raw.driver_connection.execute(tenant_ddl(head))  # type: ignore[union-attr]
    await leave_tenant_schema(session)
    return head
