"""The declared tables are the database's: Alembic's autogenerate finds nothing to change in
either tree at head, so `alembic revision --autogenerate` writes only what a change declares."""

from __future__ import annotations

from typing import Any

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, text

from socialflow.db.engine import sqlalchemy_url
from socialflow.db.migrate import upgrade_tenant
from socialflow.tables import SHARED_METADATA, TENANT_METADATA


def _differences(database_url: str, metadata: MetaData, search_path: str, **opts: Any) -> list[Any]:
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as connection:
            connection.execute(
                text("SELECT set_config('search_path', :p, false)"), {"p": search_path}
            )
            context = MigrationContext.configure(connection, opts={"compare_type": True, **opts})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _not_the_version_table(obj: Any, name: Any, type_: str, reflected: bool, to: Any) -> bool:
    return name != "alembic_version"


def _shared_only(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
    # Autogenerate of the shared tree looks at the shared schema (and its own version table).
    return not (type_ == "table" and name == "alembic_version")


def test_the_shared_tables_declared_are_the_shared_schemas(database_url: str) -> None:
    diffs = _differences(
        database_url, SHARED_METADATA, "shared, extensions",
        include_schemas=True,
        include_name=lambda name, type_, parent: type_ != "schema" or name == "shared",
        include_object=_shared_only,
    )  # fmt: skip
    described = [_describe(d) for d in diffs]
    assert not described, "\n".join(described)


def test_the_tenant_tables_declared_are_a_tenant_schemas(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    schema = "t_declared_probe"
    pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    upgrade_tenant(database_url, schema)
    try:
        diffs = _differences(
            database_url, TENANT_METADATA, f'"{schema}", extensions',
            include_object=_not_the_version_table,
        )  # fmt: skip
    finally:
        pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    described = [_describe(d) for d in diffs]
    assert not described, "\n".join(described)


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(_describe(d) for d in diff)
    kind, *rest = diff
    names = [getattr(r, "name", None) or getattr(r, "key", None) or str(r) for r in rest]
    return f"{kind} {' '.join(str(n) for n in names if n)}"


def test_a_column_declared_on_a_tenant_table_is_what_autogenerate_adds(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    from sqlalchemy import Column, String

    declared = MetaData()
    for table in TENANT_METADATA.tables.values():
        table.to_metadata(declared)
    declared.tables["audit_log"].append_column(Column("source", String(32)))
    schema = "t_declared_probe_2"
    pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    upgrade_tenant(database_url, schema)
    try:
        diffs = _differences(
            database_url, declared, f'"{schema}", extensions',
            include_object=_not_the_version_table,
        )  # fmt: skip
    finally:
        pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    assert [_describe(d) for d in diffs] == ["add_column None audit_log source"]  # no schema
