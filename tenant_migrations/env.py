"""Alembic environment for one tenant schema, named by `tenant_schema` (attribute or -x)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from socialflow.db.engine import sqlalchemy_url
from socialflow.db.tenant_schema import (
    quote_schema,
    search_path_for,
    set_search_path,
    validate_schema_name,
)
from socialflow.tables import TENANT_METADATA

config = context.config
# Every declared table: `alembic revision --autogenerate` compares the database with them.
target_metadata = TENANT_METADATA


def not_the_version_table(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # The schema's own Alembic version table is Alembic's, not a declared table.
    return not (type_ == "table" and name == "alembic_version")


def tenant_schema() -> str:
    name = config.attributes.get("tenant_schema") or context.get_x_argument(as_dictionary=True).get(
        "tenant_schema"
    )
    if not name:
        raise SystemExit("tenant migrations need a schema: -x tenant_schema=NAME")
    return validate_schema_name(name)


def run_migrations_online() -> None:
    schema = tenant_schema()
    url = sqlalchemy_url(config.get_main_option("sqlalchemy.url") or "")
    # Pooler-safe: the search_path is per transaction, and nothing is prepared server-side
    # (a transaction pooler may hand the next transaction another server).
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"prepare_threshold": None})
    with engine.connect() as connection, connection.begin():
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote_schema(schema)}"))
        # Unqualified names in tenant revisions resolve to this schema, types to extensions.
        connection.execute(
            text(f"SELECT {set_search_path(':path')}"),
            {"path": search_path_for(schema)},
        )
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema,
            transaction_per_migration=False,
            include_object=not_the_version_table,
        )
        context.run_migrations()
    engine.dispose()


def render_offline() -> None:
    """Render the DDL with unqualified names (provisioning replays it under a search_path)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        transactional_ddl=False,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    render_offline()
else:
    run_migrations_online()
