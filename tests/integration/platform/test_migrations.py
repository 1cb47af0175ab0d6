"""The shared Alembic tree builds the shared schema; the tenant tree migrates one given schema."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory

from socialflow.db.migrate import SHARED_TREE, alembic_config, upgrade_shared, upgrade_tenant
from socialflow.db.tenant_schema import InvalidSchemaName
from socialflow.tenancy.fleet.ddl import tenant_head


def test_shared_head_puts_pgvector_in_the_extensions_schema(
    pg: psycopg.Connection[Any], database_url: str
) -> None:
    row = pg.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    assert row == ("extensions",)
    head = ScriptDirectory.from_config(alembic_config(SHARED_TREE, database_url)).get_current_head()
    assert pg.execute("SELECT version_num FROM shared.alembic_version").fetchone() == (head,)
    # The type resolves through the extensions schema, as tenant search paths will use it.
    pg.execute("SET search_path = extensions")
    assert pg.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone() == (1.0,)


def test_shared_upgrade_is_idempotent(database_url: str, pg: psycopg.Connection[Any]) -> None:
    upgrade_shared(database_url)
    assert pg.execute("SELECT count(*) FROM shared.alembic_version").fetchone() == (1,)


# The tables of the tenant tree (a later revision may add more; these must always be there).
TENANT_TABLES = {"alembic_version", "settings", "audit_log", "ai_provider_keys", "ai_settings"}
PROBES = ("t_migration_probe", "t_migration_probe_2")


def _tables(pg: psycopg.Connection[Any], *, in_schema: str) -> set[str]:
    rows = pg.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (in_schema,)
    )
    return {row[0] for row in rows}


def _tables_outside(pg: psycopg.Connection[Any], schemas: tuple[str, ...]) -> set[tuple[str, str]]:
    rows = pg.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema <> ALL(%s)",
        (list(schemas),),
    )
    return {(row[0], row[1]) for row in rows}


def test_tenant_tree_creates_the_tenant_tables_in_the_schema_it_is_given_and_nowhere_else(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    for probe in PROBES:
        pg.execute(f"DROP SCHEMA IF EXISTS {probe} CASCADE")
    elsewhere = _tables_outside(pg, PROBES)
    try:
        for probe in PROBES:
            upgrade_tenant(database_url, probe)
            tables = _tables(pg, in_schema=probe)
            assert tables >= TENANT_TABLES, f"{probe} lacks {TENANT_TABLES - tables}"
            version = pg.execute(f"SELECT version_num FROM {probe}.alembic_version").fetchall()
            assert version == [(tenant_head(),)]
            # The data steps ran in the schema too (the settings row the first revision adds).
            assert pg.execute(f"SELECT id FROM {probe}.settings").fetchall() == [(1,)]
        # Each schema has its own full set.
        assert _tables(pg, in_schema=PROBES[0]) == _tables(pg, in_schema=PROBES[1])
        # Nothing landed in shared, public, extensions or another tenant's schema.
        assert _tables_outside(pg, PROBES) == elsewhere
    finally:
        for probe in PROBES:
            pg.execute(f"DROP SCHEMA IF EXISTS {probe} CASCADE")


def test_tenant_tree_refuses_a_schema_name_outside_the_pattern(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    with pytest.raises(InvalidSchemaName):
        upgrade_tenant(database_url, 'shared"; DROP SCHEMA shared CASCADE; --')
    assert pg.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'shared'").fetchone() == (
        1,
    )
