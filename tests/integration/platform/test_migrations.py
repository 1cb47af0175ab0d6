"""The shared Alembic tree builds the shared schema; the tenant tree migrates one given schema."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory

from socialflow.db.migrate import SHARED_TREE, alembic_config, upgrade_shared, upgrade_tenant
from socialflow.db.tenant_schema import InvalidSchemaName


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


def test_tenant_tree_migrates_the_schema_it_is_given(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    pg.execute("DROP SCHEMA IF EXISTS t_migration_probe CASCADE")
    upgrade_tenant(database_url, "t_migration_probe")
    exists = pg.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = 't_migration_probe'"
    ).fetchone()
    assert exists == (1,)
    pg.execute("DROP SCHEMA t_migration_probe CASCADE")


def test_tenant_tree_refuses_a_schema_name_outside_the_pattern(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    with pytest.raises(InvalidSchemaName):
        upgrade_tenant(database_url, 'shared"; DROP SCHEMA shared CASCADE; --')
    assert pg.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'shared'").fetchone() == (
        1,
    )
