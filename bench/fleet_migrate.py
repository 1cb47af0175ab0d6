"""Fleet migration benchmark: a run with nothing to do, and a revision adding a column and an
index to one table, with 1,000 and 10,000 tenant schemas.

Each size gets a fresh database on the embedded PostgreSQL (or the server of DATABASE_URL),
seeded in bulk with tenants at the tenant head (the same rendered DDL provisioning replays).

    python bench/fleet_migrate.py [--json] [--sizes 1000,10000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from socialflow import embedded
from socialflow.db.engine import libpq_url
from socialflow.db.migrate import upgrade_shared
from socialflow.tenancy.fleet import FleetMigrator
from socialflow.tenancy.schema_ddl import tenant_ddl, tenant_head

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


def seed(database_url: str, count: int, chunk: int = 250) -> float:
    """`count` tenants at the tenant head, with their schemas and ledger rows."""
    ddl = tenant_ddl(tenant_head())
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


async def measure(
    database_url: str, size: int, concurrency: int, revision_dir: Path
) -> dict[str, float]:
    seconds_to_seed = seed(database_url, size)
    plain = FleetMigrator(database_url, concurrency=concurrency)
    plain.head()  # what a deploy's first command does anyway: read the scripts
    started = time.perf_counter()
    noop = await plain.run("head")
    noop_s = time.perf_counter() - started
    assert noop.planned == 0, "a fresh fleet is at head"

    with_column = FleetMigrator(
        database_url, version_locations=[revision_dir], concurrency=concurrency
    )
    started = time.perf_counter()
    summary = await with_column.run("head")
    add_column_s = time.perf_counter() - started
    assert summary.ok, summary
    assert summary.count("migrated") == size, summary
    assert await with_column.verify() == []
    return {
        "seed_s": seconds_to_seed,
        "noop_s": noop_s,
        "add_column_s": add_column_s,
        "schemas_per_s": size / add_column_s,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict[str, Any] = {"noop_s": {}, "add_column_s": {}, "_detail": {}}
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as scratch:
        revision_dir = Path(scratch) / "revisions"
        revision_dir.mkdir()
        (revision_dir / "bench_add_column.py").write_text(REVISION.format(down=tenant_head()))
        with embedded.database(
            os.environ.get("DATABASE_URL"), Path(scratch), throwaway=True
        ) as server_url:
            for size in sizes:
                with fresh_database(server_url, f"bench_fleet_{size}") as database_url:
                    upgrade_shared(database_url)
                    figures = await measure(database_url, size, args.concurrency, revision_dir)
                result["noop_s"][str(size)] = round(figures["noop_s"], 3)
                result["add_column_s"][str(size)] = round(figures["add_column_s"], 2)
                result["_detail"][str(size)] = figures
    result["schemas_per_s"] = round(min(d["schemas_per_s"] for d in result["_detail"].values()))
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"{'schemas':>8} {'nothing to do':>14} {'add column+index':>17} {'schemas/s':>10}")
    for size, detail in result["_detail"].items():
        print(
            f"{int(size):>8,} {detail['noop_s']:>12.3f} s {detail['add_column_s']:>15.2f} s "
            f"{detail['schemas_per_s']:>10.0f}"
        )
    print("targets: nothing to do at 10,000 <= 1 s; add column+index at 1,000 <= 20 s (>= 50/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--concurrency", type=int, default=4)
    arguments = parser.parse_args()
    outcome = asyncio.run(run(arguments))
    if arguments.json:
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))
    else:
        print_table(outcome)
