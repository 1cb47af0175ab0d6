"""Fleet migrations: every tenant schema to a target revision — fast, resumable, observable.

- The ledger (`shared.tenant_schema_migrations`) says where each schema stands; finding the
  schemas to migrate is one query, so a run with nothing to do costs one query.
- Each (from → to) step is rendered once by Alembic's offline mode and replayed per schema in
  one round trip, inside that schema's own transaction, under a per-schema advisory lock and
  lock/statement timeouts. The schema's version table and its ledger row change in the same
  transaction: a schema is at the old revision or the new one, never between.
- A failure is recorded in the ledger with its error and the run goes on (unless fail-fast);
  a re-run picks up every schema not at the target, failed ones included.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from psycopg.rows import TupleRow

from socialflow.db.engine import libpq_url
from socialflow.db.migrate import TENANT_TREE, alembic_config
from socialflow.db.tenant_schema import (
    NO_TENANT_SEARCH_PATH,
    search_path_for,
    set_search_path,
    validate_schema_name,
)

_RENDER_URL = "postgresql+psycopg://render@localhost/render"
LOCK_NAMESPACE = 7_310_100  # advisory lock class for per-schema migration locks

PENDING_SQL = """
SELECT l.schema_name, t.slug, l.revision, l.status
FROM shared.tenant_schema_migrations l
JOIN shared.tenants t ON t.id = l.tenant_id
WHERE t.status <> 'purged' AND (l.revision <> %(target)s OR l.status = 'failed')
  AND (%(only)s::text[] IS NULL OR t.slug = ANY(%(only)s))
ORDER BY l.schema_name
"""
STATUS_SQL = """
SELECT l.revision, l.status, count(*) FROM shared.tenant_schema_migrations l
JOIN shared.tenants t ON t.id = l.tenant_id WHERE t.status <> 'purged'
GROUP BY 1, 2 ORDER BY 1, 2
"""
FAILURES_SQL = """
SELECT l.schema_name, t.slug, l.revision, l.error, l.last_run_at
FROM shared.tenant_schema_migrations l JOIN shared.tenants t ON t.id = l.tenant_id
WHERE l.status = 'failed' AND t.status <> 'purged' ORDER BY l.schema_name
"""
RECORD_OK_SQL = """
UPDATE shared.tenant_schema_migrations
SET revision = %(revision)s, status = 'ok', error = NULL, last_run_at = now(),
    duration_ms = %(ms)s, updated_at = now()
WHERE schema_name = %(schema)s
"""
RECORD_FAILED_SQL = """
UPDATE shared.tenant_schema_migrations
SET status = 'failed', error = %(error)s, last_run_at = now(), duration_ms = %(ms)s,
    updated_at = now()
WHERE schema_name = %(schema)s
"""


@dataclass(frozen=True, slots=True)
class SchemaState:
    schema: str
    slug: str
    revision: str
    status: str


@dataclass
class Outcome:
    schema: str
    slug: str
    result: str  # migrated | failed | busy | current
    from_revision: str
    to_revision: str
    duration_ms: float
    error: str | None = None


@dataclass
class RunSummary:
    target: str
    planned: int
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False
    stopped_early: bool = False

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and not self.stopped_early


Progress = Callable[[Outcome], None]


class FleetMigrator:
    """Migrates tenant schemas through the tenant tree (plus any extra version locations)."""

    def __init__(
        self,
        database_url: str,
        *,
        version_locations: Sequence[Path] = (),
        concurrency: int = 4,
        lock_timeout_ms: int = 5_000,
        statement_timeout_ms: int = 300_000,
    ) -> None:
        self.database_url = libpq_url(database_url)
        self.version_locations = tuple(version_locations)
        self.concurrency = max(1, concurrency)
        self.lock_timeout_ms = lock_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms

    async def _connect(self) -> psycopg.AsyncConnection[TupleRow]:
        # Safe behind a transaction pooler: every setting and lock here is per transaction, and
        # nothing is prepared server-side (the next transaction may get another server).
        return await psycopg.AsyncConnection.connect(
            self.database_url, application_name="socialflow-fleet-migrate", prepare_threshold=None
        )

    # -- revisions and rendered SQL -----------------------------------------------------

    def head(self) -> str:
        return _head(self.version_locations)

    def resolve(self, revision: str) -> str:
        script = ScriptDirectory.from_config(_tenant_config(self.version_locations))
        if revision == "head":
            return self.head()
        found = script.get_revision(revision)
        if found is None:
            raise ValueError(f"unknown tenant revision {revision!r}")
        return found.revision

    def render(self, from_revision: str, to_revision: str) -> str:
        """The SQL that moves a schema from one revision to another (upgrade or downgrade)."""
        return _render(self.version_locations, from_revision, to_revision)

    # -- reading the fleet ----------------------------------------------------------------

    async def pending(self, target: str, only: Sequence[str] | None = None) -> list[SchemaState]:
        """Schemas not at `target` (or whose last run failed): one query."""
        async with await self._connect() as conn:
            rows = await conn.execute(
                PENDING_SQL, {"target": target, "only": list(only) if only else None}
            )
            return [SchemaState(*row) for row in await rows.fetchall()]

    async def status(self) -> tuple[list[tuple[str, str, int]], list[tuple[object, ...]]]:
        async with await self._connect() as conn:
            counts = await (await conn.execute(STATUS_SQL)).fetchall()
            failures = await (await conn.execute(FAILURES_SQL)).fetchall()
        return [(str(r), str(s), int(n)) for r, s, n in counts], list(failures)

    async def verify(self) -> list[tuple[str, str | None, str | None]]:
        """(schema, ledger revision, schema's own version) for every disagreement."""
        async with await self._connect() as conn:
            ledger: dict[str, str] = dict(
                await (
                    await conn.execute(
                        "SELECT l.schema_name, l.revision FROM shared.tenant_schema_migrations l "
                        "JOIN shared.tenants t ON t.id = l.tenant_id WHERE t.status <> 'purged'"
                    )
                ).fetchall()
            )
            actual: dict[str, str | None] = {}
            schemas = sorted(ledger)
            for start in range(0, len(schemas), 500):
                chunk = schemas[start : start + 500]
                union = sql.SQL(" UNION ALL ").join(
                    sql.SQL("SELECT {}, (SELECT max(version_num) FROM {}.alembic_version)").format(
                        sql.Literal(schema), sql.Identifier(validate_schema_name(schema))
                    )
                    for schema in chunk
                )
                rows = await (await conn.execute(union)).fetchall()
                actual.update({str(schema): version for schema, version in rows})
        return [
            (schema, ledger[schema], actual.get(schema))
            for schema in schemas
            if ledger[schema] != actual.get(schema)
        ]

    # -- running --------------------------------------------------------------------------

    async def run(
        self,
        target: str = "head",
        *,
        only: Sequence[str] | None = None,
        canary: int = 0,
        fail_fast: bool = False,
        progress: Progress | None = None,
        stop: asyncio.Event | None = None,
    ) -> RunSummary:
        target = self.resolve(target)
        states = await self.pending(target, only)
        summary = RunSummary(target=target, planned=len(states))
        stop = stop or asyncio.Event()
        started = time.perf_counter()
        try:
            if canary > 0 and states:
                first, states = states[:canary], states[canary:]
                await self._migrate_all(first, target, summary, progress, stop, fail_fast=True)
                if summary.failed:
                    summary.stopped_early = True
                    return summary
            await self._migrate_all(states, target, summary, progress, stop, fail_fast=fail_fast)
        finally:
            summary.elapsed_s = time.perf_counter() - started
            summary.interrupted = stop.is_set() and len(summary.outcomes) < summary.planned
        return summary

    async def _migrate_all(
        self,
        states: Iterable[SchemaState],
        target: str,
        summary: RunSummary,
        progress: Progress | None,
        stop: asyncio.Event,
        *,
        fail_fast: bool,
    ) -> None:
        queue: asyncio.Queue[SchemaState] = asyncio.Queue()
        for state in states:
            queue.put_nowait(state)

        halted = asyncio.Event()  # fail-fast: no new schema after a failure

        async def worker() -> None:
            async with await self._connect() as conn:
                while not (stop.is_set() or halted.is_set()) and not queue.empty():
                    outcome = await self._migrate_one(conn, queue.get_nowait(), target)
                    summary.outcomes.append(outcome)
                    if progress is not None:
                        progress(outcome)
                    if outcome.result == "failed" and fail_fast:
                        summary.stopped_early = True
                        halted.set()

        workers = min(self.concurrency, queue.qsize())
        await asyncio.gather(*(worker() for _ in range(workers)))

    async def _migrate_one(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], state: SchemaState, target: str
    ) -> Outcome:
        started = time.perf_counter()
        current = state.revision
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('lock_timeout', %s, true), "
                    "set_config('statement_timeout', %s, true)",
                    (f"{self.lock_timeout_ms}ms", f"{self.statement_timeout_ms}ms"),
                )
                locked = await (
                    await conn.execute(
                        "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                        (LOCK_NAMESPACE, state.schema),
                    )
                ).fetchone()
                if not (locked and locked[0]):
                    return Outcome(state.schema, state.slug, "busy", current, target, 0.0)
                version = await (
                    await conn.execute(
                        sql.SQL("SELECT version_num FROM {}.alembic_version").format(
                            sql.Identifier(validate_schema_name(state.schema))
                        )
                    )
                ).fetchone()
                current = str(version[0]) if version else current
                if current != target:
                    await conn.execute(
                        f"SELECT {set_search_path('%s')}", (search_path_for(state.schema),)
                    )
                    # No parameters: one simple query, one round trip, however many statements.
                    await conn.execute(self.render(current, target).encode())
                    await conn.execute(f"SELECT {set_search_path(repr(NO_TENANT_SEARCH_PATH))}")
                ms = (time.perf_counter() - started) * 1000
                await conn.execute(
                    RECORD_OK_SQL, {"revision": target, "ms": ms, "schema": state.schema}
                )
            result = "migrated" if current != target else "current"
            return Outcome(state.schema, state.slug, result, current, target, ms)
        except psycopg.Error as exc:
            ms = (time.perf_counter() - started) * 1000
            error = f"{type(exc).__name__}: {str(exc).strip()}"[:2000]
            async with conn.transaction():
                await conn.execute(
                    RECORD_FAILED_SQL, {"error": error, "ms": ms, "schema": state.schema}
                )
            return Outcome(state.schema, state.slug, "failed", current, target, ms, error)


def _tenant_config(
    version_locations: tuple[Path, ...], buffer: io.StringIO | None = None
) -> Config:
    config = alembic_config(TENANT_TREE, _RENDER_URL, output_buffer=buffer)
    if version_locations:
        locations = [str(TENANT_TREE / "versions"), *map(str, version_locations)]
        config.set_main_option("version_locations", os.pathsep.join(locations))
    config.attributes["render_offline"] = True
    return config


@lru_cache(maxsize=8)
def _head(version_locations: tuple[Path, ...]) -> str:
    head = ScriptDirectory.from_config(_tenant_config(version_locations)).get_current_head()
    assert head is not None
    return head


@lru_cache(maxsize=64)
def _render(version_locations: tuple[Path, ...], from_revision: str, to_revision: str) -> str:
    buffer = io.StringIO()
    config = _tenant_config(version_locations, buffer)
    script = ScriptDirectory.from_config(config)
    below_target = {rev.revision for rev in script.walk_revisions("base", to_revision)}
    if from_revision in below_target:
        command.upgrade(config, f"{from_revision}:{to_revision}", sql=True)
    else:
        command.downgrade(config, f"{from_revision}:{to_revision}", sql=True)
    return buffer.getvalue()


def summarise(summary: RunSummary) -> str:
    counts = Counter(o.result for o in summary.outcomes)
    rate = summary.count("migrated") / summary.elapsed_s if summary.elapsed_s else 0.0
    parts = [f"{counts.get(k, 0)} {k}" for k in ("migrated", "current", "busy", "failed")]
    line = (
        f"target {summary.target}: {summary.planned} schema(s) to do; {', '.join(parts)} "
        f"in {summary.elapsed_s:.2f} s ({rate:.0f} schemas/s)"
    )
    if summary.interrupted:
        line += "; interrupted — re-run to resume"
    if summary.stopped_early:
        line += "; stopped after a failure"
    return line
