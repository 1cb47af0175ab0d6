"""Shared and fleet migrations stay correct when DATABASE_URL goes through PgBouncer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from socialflow.db.migrate import upgrade_shared
from socialflow.tenancy.fleet.ddl import tenant_head
from socialflow.tenancy.fleet.migrator import FleetMigrator
from tests.integration.pooler_fixtures import PgBouncer
from tests.integration.tenancy_fixtures import Platform


async def test_a_fleet_rerun_through_pgbouncer_over_schemas_at_target_records_no_error(
    platform: Platform, pgbouncer: PgBouncer, pg: psycopg.Connection[Any]
) -> None:
    operator = await platform.operator()
    agency = await platform.agency(operator)
    slugs = [await platform.tenant(operator, agency) for _ in range(21)]
    # A re-run after failures whose schemas are in fact at the target: no DDL runs, so every
    # worker repeats the same statements (7 times each: psycopg would prepare them).
    pg.execute(
        "UPDATE shared.tenant_schema_migrations l SET status = 'failed' FROM shared.tenants t "
        "WHERE t.id = l.tenant_id AND t.slug = ANY(%s)",
        (slugs,),
    )
    # Three workers over PgBouncer's two server connections.
    migrator = FleetMigrator(pgbouncer.url, concurrency=3)
    summary = await migrator.run(tenant_head(), only=slugs)
    assert [o.error for o in summary.failed] == []
    assert summary.count("current") == 21
    upgrade_shared(pgbouncer.url)  # at head already: the lock and the version check only


@pytest.mark.parametrize("command", [["migrate"], ["tenants", "status"]])
def test_migration_commands_connect_to_database_direct_url_when_set(
    database_url: str, project_root: Path, command: list[str]
) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:9/socialflow?connect_timeout=2"
    env = {**os.environ, "DATABASE_URL": unreachable, "DATABASE_DIRECT_URL": database_url}
    run = subprocess.run(
        [sys.executable, "-m", "socialflow", *command],
        check=False,
        env=env,
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
