"""Alembic environment for the shared schema (agencies, tenants, users, outbox …)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from socialflow.db.engine import SHARED_SCHEMA, sqlalchemy_url
from socialflow.outbox.models import is_history_partition
from socialflow.tables import SHARED_METADATA

# Every process that migrates takes this lock, so replicas starting together migrate once.
MIGRATION_LOCK_KEY = 7_310_001

config = context.config
# Every declared table: `alembic revision --autogenerate` compares the database with them.
target_metadata = SHARED_METADATA


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Only shared-schema tables belong to this tree; tenant tables have their own. The event
    # history's partitions are made at run time by the relay, not declared.
    if type_ == "table" and is_history_partition(name):
        return False
    if type_ == "table":
        return getattr(obj, "schema", None) == SHARED_SCHEMA
    return True


def run_migrations_online() -> None:
    url = sqlalchemy_url(config.get_main_option("sqlalchemy.url") or "")
    # Pooler-safe: the lock and the settings are per transaction, and nothing is prepared
    # server-side (a transaction pooler may hand the next transaction another server).
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"prepare_threshold": None})
    with engine.connect() as connection, connection.begin():
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SHARED_SCHEMA}"'))
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=SHARED_SCHEMA,
            include_schemas=True,
            include_object=include_object,
            transaction_per_migration=False,
        )
        context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        version_table_schema=SHARED_SCHEMA,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
