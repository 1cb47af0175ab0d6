"""Fleet migration benchmark: a run with nothing to do, and a revision adding a column and an
index to a table holding rows, with 1,000 and 10,000 tenant schemas.

Each size gets a fresh database on a durable PostgreSQL (fsync and synchronous_commit on; see
bench/_servers.py) or on the server of DATABASE_URL, seeded in bulk with tenants at the tenant
head (the same rendered DDL provisioning replays) and --audit-rows rows in each schema's
`audit_log`, then vacuumed and checkpointed, so the measured runs start from a settled fleet
and the index build reads real pages. The migrator runs at the CLI's defaults (concurrency 4,
lock and statement timeouts). Afterwards the catalog is read: every schema has the column and
a valid index holding one entry per row, and the ledger agrees with every schema's version.

    python bench/fleet_migrate.py [--json] [--sizes 1000,10000] [--audit-rows 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from _servers import (
    check,
    durable_servers,
    prepare_shared,
    print_settings,
    quiet_logging,
    server_settings,
)
from _servers import settings_lines as server_lines
from socialflow.db.engine import libpq_url
from socialflow.tenancy.fleet.ddl import tenant_ddl, tenant_head
from socialflow.tenancy.fleet.migrator import FleetMigrator

REVISION = """
revision = "bench_add_column"
down_revision = "{down}"
branch_labels = None
depends_on = None

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.add_column("audit_log", sa.Column("source", sa.String(32)))
    op.create_index("ix_audit_log_source", "audit_log", ["source"])


def downgrade():
    op.drop_index("ix_audit_log_source", table_name="audit_log")
    op.drop_column("audit_log", "source")
"""


@contextmanager
def fresh_database(server_url: str, name: str) -> Iterator[str]:
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Rows of one schema's audit log, written with the tenant's tables (search_path is the schema).
AUDIT_ROWS_SQL = """
INSERT INTO audit_log (at, actor, action, target_type, target_id, request_id, after)
SELECT now() - g * interval '1 minute', 'user-' || (g % 17), 'post.updated', 'post', g::text,
       md5(g::text), jsonb_build_object('status', 'approved', 'n', g)
FROM generate_series(1, {rows}) g;
"""
# One catalog read over every schema of the ledger: the column, the index (valid, on
# audit_log) and its entry count, which CREATE INDEX sets to the rows it indexed.
CATALOG_SQL = """
SELECT l.schema_name,
       EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'source'
               AND NOT a.attisdropped) AS has_column,
       coalesce(i.indisvalid, false) AS has_index,
       coalesce(ic.reltuples, -1)::bigint AS index_entries
FROM shared.tenant_schema_migrations l
JOIN pg_namespace n ON n.nspname = l.schema_name
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'audit_log'
LEFT JOIN pg_class ic ON ic.relnamespace = n.oid AND ic.relname = 'ix_audit_log_source'
LEFT JOIN pg_index i ON i.indexrelid = ic.oid AND i.indrelid = c.oid
"""


def seed(database_url: str, count: int, audit_rows: int, chunk: int = 250) -> float:
    """`count` tenants at the tenant head, with their schemas, ledger rows and audit rows."""
    ddl = tenant_ddl(tenant_head()) + AUDIT_ROWS_SQL.format(rows=int(audit_rows))
    started = time.perf_counter()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        agency = conn.execute(
            "INSERT INTO shared.agencies (slug, name) VALUES ('bench', 'Bench') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        for start in range(0, count, chunk):
            parts = ["BEGIN;"]
            for i in range(start, min(start + chunk, count)):
                slug, schema = f"fleet-{i:06d}", f"t_fleet_{i:06d}"
                tenant_id = uuid.uuid4()
                parts.append(
                    f"INSERT INTO shared.tenants (id, slug, name, agency_id, plan, schema_name) "
                    f"VALUES ('{tenant_id}', '{slug}', '{slug}', '{agency}', 'pro', '{schema}');"
                    "INSERT INTO shared.tenant_schema_migrations "
                    f"(schema_name, tenant_id, revision) "
                    f"VALUES ('{schema}', '{tenant_id}', '{tenant_head()}');"
                    f'CREATE SCHEMA "{schema}"; SET LOCAL search_path = "{schema}", extensions;'
                    f"{ddl}"
                )
            parts.append("COMMIT;")
            conn.execute("\n".join(parts).encode())
    return time.perf_counter() - started


def settle(database_url: str, chunk: int = 500) -> float:
    """What tables in service have had: the audit logs vacuumed (hint bits and visibility map
    set, so autovacuum has nothing to start during a measured run) and analysed, then a
    checkpoint, so no write of the seed is flushed inside a measured run."""
    started = time.perf_counter()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        # Durability of the vacuum's own commits does not matter: the checkpoint flushes all.
        conn.execute("SET synchronous_commit = off")
        schemas = [
            str(row[0])
            for row in conn.execute("SELECT schema_name FROM shared.tenant_schema_migrations")
        ]
        for start in range(0, len(schemas), chunk):
            tables = sql.SQL(", ").join(
                sql.Identifier(schema, "audit_log") for schema in schemas[start : start + chunk]
            )
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(tables))
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def verify_catalog(database_url: str, size: int, audit_rows: int) -> dict[str, int]:
    """Every schema has the column and a valid index holding one entry per audit row."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        rows = conn.execute(CATALOG_SQL).fetchall()
    with_column = sum(1 for _, column, _, _ in rows if column)
    with_index = sum(1 for _, _, index, _ in rows if index)
    full = sum(1 for _, _, _, entries in rows if entries == audit_rows)
    check(len(rows) == size, f"{len(rows)} tenant schemas in the catalog, {size} seeded")
    check(with_column == size, f"{size - with_column} schemas lack audit_log.source")
    check(with_index == size, f"{size - with_index} schemas lack a valid ix_audit_log_source")
    check(full == size, f"{size - full} indexes do not hold {audit_rows} entries")
    return {
        "schemas": len(rows),
        "with_column": with_column,
        "with_index": with_index,
        "indexes_full": full,
    }


async def measure(
    database_url: str, size: int, args: argparse.Namespace, revision_dir: Path
) -> dict[str, Any]:
    seed_s = seed(database_url, size, args.audit_rows)
    settle_s = settle(database_url)
    plain = FleetMigrator(database_url, concurrency=args.concurrency)
    plain.head()  # what a deploy's first command does anyway: read the scripts
    started = time.perf_counter()
    noop = await plain.run("head")
    noop_s = time.perf_counter() - started
    check(noop.planned == 0 and not noop.outcomes, "a fresh fleet is at head: nothing to run")

    with_column = FleetMigrator(
        database_url, version_locations=[revision_dir], concurrency=args.concurrency
    )
    started = time.perf_counter()
    summary = await with_column.run("head")
    add_column_s = time.perf_counter() - started
    check(summary.ok, f"fleet run failed: {summary.failed[:3]}")
    check(summary.count("migrated") == size, f"migrated {summary.count('migrated')} of {size}")
    mismatches = await with_column.verify()
    check(mismatches == [], f"ledger and schemas disagree: {mismatches[:3]}")
    return {
        "seed_s": seed_s,
        "settle_s": settle_s,
        "noop_s": noop_s,
        "add_column_s": add_column_s,
        "schemas_per_s": size / add_column_s,
        "verified": verify_catalog(database_url, size, args.audit_rows),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict[str, Any] = {"noop_s": {}, "add_column_s": {}}
    detail: dict[str, Any] = {"sizes": {}}
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as scratch:
        revision_dir = Path(scratch) / "revisions"
        revision_dir.mkdir()
        (revision_dir / "bench_add_column.py").write_text(REVISION.format(down=tenant_head()))
        with durable_servers(with_redis=False) as servers:
            detail["servers"] = server_lines(servers, server_settings(servers))
            for size in sizes:
                with fresh_database(servers.database_url, f"bench_fleet_{size}") as database_url:
                    prepare_shared(database_url)
                    figures = await measure(database_url, size, args, revision_dir)
                result["noop_s"][str(size)] = round(figures["noop_s"], 3)
                result["add_column_s"][str(size)] = round(figures["add_column_s"], 2)
                detail["sizes"][str(size)] = figures
    result["schemas_per_s"] = round(min(d["schemas_per_s"] for d in detail["sizes"].values()))
    detail["run"] = {
        "fleet migrator": f"concurrency {args.concurrency} (the CLI's default is 4), lock "
        "timeout 5 s and statement timeout 300 s (the CLI's defaults), one process",
        "fleet": f"{args.audit_rows:,} audit_log rows in each tenant schema, vacuumed and "
        "checkpointed before the measured runs",
        "revision": "ADD COLUMN audit_log.source varchar(32), CREATE INDEX on it",
    }
    result["_detail"] = detail
    return result


def print_table(result: dict[str, Any], file: Any = sys.stdout) -> None:
    detail = result["_detail"]
    print_settings(detail["servers"], detail["run"], file=file)
    print(
        f"{'schemas':>8} {'nothing to do':>14} {'add column+index':>17} {'schemas/s':>10}"
        f" {'seed + settle':>14}",
        file=file,
    )
    for size, figures in detail["sizes"].items():
        print(
            f"{int(size):>8,} {figures['noop_s']:>12.3f} s {figures['add_column_s']:>15.2f} s "
            f"{figures['schemas_per_s']:>10.0f} {figures['seed_s']:>6.0f} + "
            f"{figures['settle_s']:.0f} s",
            file=file,
        )
    for size, figures in detail["sizes"].items():
        seen = figures["verified"]
        print(
            f"verified at {int(size):,}: {seen['with_column']:,} of {seen['schemas']:,} schemas "
            f"have audit_log.source, {seen['with_index']:,} a valid index, {seen['indexes_full']:,}"
            " with one entry per row; ledger and schema versions agree",
            file=file,
        )
    print(
        "targets: nothing to do at 10,000 <= 1 s; add column+index at 1,000 <= 20 s (>= 50/s)",
        file=file,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="table to stderr, one JSON line")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--audit-rows", type=int, default=1_000, help="rows in each audit_log")
    arguments = parser.parse_args()
    quiet_logging()
    outcome = asyncio.run(run(arguments))
    if arguments.json:
        print_table(outcome, file=sys.stderr)
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))
    else:
        print_table(outcome)
