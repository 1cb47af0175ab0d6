"""Fleet migrations over real schemas with real test-only tenant revisions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from socialflow.tenancy.fleet.ddl import tenant_head
from socialflow.tenancy.fleet.migrator import FleetMigrator
from tests.integration.tenancy_fixtures import Platform

ADD_COLUMN = """
revision = "t9001"
down_revision = "{down}"
branch_labels = None
depends_on = None

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.execute("SELECT pg_sleep({sleep})")
    op.add_column("settings", sa.Column("nickname", sa.String(40)))
    op.create_index("ix_settings_nickname", "settings", ["nickname"])


def downgrade():
    op.drop_index("ix_settings_nickname", table_name="settings")
    op.drop_column("settings", "nickname")
"""

REQUIRE_DISPLAY_NAME = """
revision = "t9002"
down_revision = "t9001"
branch_labels = None
depends_on = None

from alembic import op


def upgrade():
    # Fails on every schema whose settings have no display name: a data condition.
    op.execute(
        "ALTER TABLE settings ADD CONSTRAINT ck_settings_display_name "
        "CHECK (display_name IS NOT NULL)"
    )


def downgrade():
    op.execute("ALTER TABLE settings DROP CONSTRAINT ck_settings_display_name")
"""


def _write(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True)
    (directory / name).write_text(source)
    return directory


@pytest.fixture
def add_column(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "a", "t9001_add_nickname.py", ADD_COLUMN.format(down=tenant_head(), sleep=0)
    )


@pytest.fixture
def require_display_name(tmp_path: Path) -> Path:
    return _write(tmp_path / "b", "t9002_require_display_name.py", REQUIRE_DISPLAY_NAME)


@pytest.fixture
async def fleet(platform: Platform, pg: psycopg.Connection[Any]) -> list[str]:
    """Six fresh tenants; every other tenant's schema is dropped from the ledger's view."""
    # Earlier tests' tenants are parked as purged so each fleet test sees only its own.
    pg.execute("UPDATE shared.tenants SET status = 'purged' WHERE status <> 'purged'")
    operator = await platform.operator()
    agency = await platform.agency(operator)
    return [await platform.tenant(operator, agency) for _ in range(6)]


def _schema(slug: str) -> str:
    return "t_" + slug.replace("-", "_")


def _versions(pg: psycopg.Connection[Any], slugs: list[str]) -> dict[str, str]:
    return {
        slug: pg.execute(f'SELECT version_num FROM "{_schema(slug)}".alembic_version').fetchone()[0]  # type: ignore[index]
        for slug in slugs
    }


def _has_nickname(pg: psycopg.Connection[Any], slug: str) -> bool:
    row = pg.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'settings' AND column_name = 'nickname'",
        (_schema(slug),),
    ).fetchone()
    return row == (1,)


async def test_a_fleet_at_mixed_revisions_is_brought_to_head(
    fleet: list[str], database_url: str, add_column: Path, pg: psycopg.Connection[Any]
) -> None:
    migrator = FleetMigrator(database_url, version_locations=[add_column], concurrency=3)
    first = await migrator.run("head", only=fleet[:2])
    assert first.count("migrated") == 2
    assert set(_versions(pg, fleet).values()) == {tenant_head(), "t9001"}  # mixed

    summary = await migrator.run("head")
    assert summary.planned == 4
    assert summary.count("migrated") == 4
    assert summary.ok
    assert set(_versions(pg, fleet).values()) == {"t9001"}
    assert all(_has_nickname(pg, slug) for slug in fleet)
    assert await migrator.verify() == []
    # Nothing left to do: the next run plans nothing.
    assert (await migrator.run("head")).planned == 0


async def test_failures_are_recorded_and_a_rerun_after_the_fix_completes_them(
    fleet: list[str],
    database_url: str,
    add_column: Path,
    require_display_name: Path,
    pg: psycopg.Connection[Any],
) -> None:
    for slug in fleet[:4]:
        pg.execute(f"""UPDATE "{_schema(slug)}".settings SET display_name = 'set'""")
    migrator = FleetMigrator(database_url, version_locations=[add_column, require_display_name])
    summary = await migrator.run("head")
    assert {o.slug for o in summary.failed} == set(fleet[4:])
    assert summary.count("migrated") == 4
    versions = _versions(pg, fleet)
    assert {versions[s] for s in fleet[:4]} == {"t9002"}
    # A failed schema rolled back whole (both steps ran in its one transaction): it is where
    # it started.
    assert {versions[s] for s in fleet[4:]} == {tenant_head()}
    ledger = dict(
        pg.execute(
            "SELECT schema_name, error FROM shared.tenant_schema_migrations WHERE status = 'failed'"
        ).fetchall()
    )
    assert set(ledger) == {_schema(s) for s in fleet[4:]}
    assert all("ck_settings_display_name" in error for error in ledger.values())

    for slug in fleet[4:]:
        pg.execute(f"""UPDATE "{_schema(slug)}".settings SET display_name = 'fixed'""")
    rerun = await migrator.run("head")
    assert rerun.planned == 2
    assert rerun.ok
    assert set(_versions(pg, fleet).values()) == {"t9002"}
    assert pg.execute(
        "SELECT count(*) FROM shared.tenant_schema_migrations WHERE status = 'failed'"
    ).fetchone() == (0,)


async def test_fail_fast_and_canary_stop_after_a_failure(
    fleet: list[str],
    database_url: str,
    add_column: Path,
    require_display_name: Path,
    pg: psycopg.Connection[Any],
) -> None:
    migrator = FleetMigrator(
        database_url, version_locations=[add_column, require_display_name], concurrency=1
    )
    await migrator.run("t9001")
    canary = await migrator.run("head", canary=2)  # no display names: the canary fails
    assert canary.stopped_early
    assert len(canary.outcomes) == 1
    fast = await migrator.run("head", fail_fast=True)
    assert fast.stopped_early
    assert len(fast.outcomes) == 1
    assert set(_versions(pg, fleet).values()) == {"t9001"}


async def test_two_runs_at_once_never_migrate_one_schema_twice(
    fleet: list[str], database_url: str, add_column: Path, pg: psycopg.Connection[Any]
) -> None:
    one = FleetMigrator(database_url, version_locations=[add_column], concurrency=3)
    two = FleetMigrator(database_url, version_locations=[add_column], concurrency=3)
    first, second = await asyncio.gather(one.run("head"), two.run("head"))
    migrated = [o.schema for o in first.outcomes + second.outcomes if o.result == "migrated"]
    assert sorted(migrated) == sorted(_schema(s) for s in fleet)
    assert set(_versions(pg, fleet).values()) == {"t9001"}


async def test_downgrading_the_fleet_uses_the_same_machinery(
    fleet: list[str], database_url: str, add_column: Path, pg: psycopg.Connection[Any]
) -> None:
    migrator = FleetMigrator(database_url, version_locations=[add_column])
    await migrator.run("head")
    summary = await migrator.run(tenant_head())
    assert summary.count("migrated") == len(fleet)
    assert set(_versions(pg, fleet).values()) == {tenant_head()}
    assert not any(_has_nickname(pg, slug) for slug in fleet)
    assert await migrator.verify() == []


def _cli(database_url: str, *args: str, **kwargs: Any) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "socialflow", "tenants", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,
    )


async def test_check_exits_non_zero_while_schemas_are_behind(
    fleet: list[str], database_url: str, add_column: Path, project_root: Path
) -> None:
    location = ["--version-location", str(add_column)]
    behind = await asyncio.to_thread(
        _cli, database_url, "migrate", "--check", *location, cwd=project_root
    )
    assert behind.returncode == 1
    assert all(slug in behind.stdout for slug in fleet)
    dry = await asyncio.to_thread(
        _cli, database_url, "migrate", "--dry-run", *location, cwd=project_root
    )
    assert "ADD COLUMN nickname" in dry.stdout
    migrated = await asyncio.to_thread(_cli, database_url, "migrate", *location, cwd=project_root)
    assert migrated.returncode == 0, migrated.stderr
    assert f"{len(fleet)} migrated" in migrated.stdout
    at_head = await asyncio.to_thread(
        _cli, database_url, "migrate", "--check", *location, cwd=project_root
    )
    assert at_head.returncode == 0
    verified = await asyncio.to_thread(_cli, database_url, "migrate", "--verify", cwd=project_root)
    assert verified.returncode == 0
    status = await asyncio.to_thread(_cli, database_url, "status", cwd=project_root)
    assert "t9001" in status.stdout


async def test_a_run_killed_midway_leaves_every_schema_old_or_new(
    fleet: list[str],
    database_url: str,
    tmp_path: Path,
    pg: psycopg.Connection[Any],
    project_root: Path,
) -> None:
    slow = _write(
        tmp_path / "slow", "t9001_add_nickname.py", ADD_COLUMN.format(down=tenant_head(), sleep=0.4)
    )
    run = subprocess.Popen(  # noqa: ASYNC220 - started once, polled below
        [
            sys.executable,
            "-m",
            "socialflow",
            "tenants",
            "migrate",
            "--concurrency",
            "1",
            "--version-location",
            str(slow),
        ],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=project_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = asyncio.get_running_loop().time() + 60
    while sum(v == "t9001" for v in _versions(pg, fleet).values()) < 2:
        assert asyncio.get_running_loop().time() < deadline, "the run made no progress"
        await asyncio.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()

    versions = _versions(pg, fleet)
    assert 2 <= sum(v == "t9001" for v in versions.values()) < len(fleet)
    for slug, version in versions.items():
        assert _has_nickname(pg, slug) == (version == "t9001"), slug
    # The killed run's backend rolls back when PostgreSQL notices its client is gone.
    while pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'socialflow-fleet-migrate'"
    ).fetchone() != (0,):
        assert asyncio.get_running_loop().time() < deadline, "the killed run's backend lingers"
        await asyncio.sleep(0.05)
    migrator = FleetMigrator(database_url, version_locations=[slow])
    # The ledger agrees with the schemas; the re-run resumes with the rest.
    assert await migrator.verify() == []
    resumed = await migrator.run("head")
    assert resumed.count("migrated") == len(fleet) - sum(v == "t9001" for v in versions.values())
    assert set(_versions(pg, fleet).values()) == {"t9001"}
