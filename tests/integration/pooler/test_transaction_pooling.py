"""DB_POOLER=transaction through a real PgBouncer in transaction mode: the fail-closed search_path,
the statement timeout and the tenant's SET LOCAL hold on every transaction, whoever used the
server connection before; no server-side prepared statement is ever needed twice."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from socialflow.db.engine import (
    create_engine,
    create_session_factory,
    libpq_url,
    sqlalchemy_url,
)
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.settings import Settings
from tests.integration.pooler_fixtures import PgBouncer, running_pgbouncer, through_pooler

PROBE_SCHEMA = "t_pooler_probe"


@pytest.fixture(scope="module")
def probe_schema(database_url: str) -> Iterator[str]:
    """A tenant-like schema holding a row no tenantless transaction may ever read."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PROBE_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {PROBE_SCHEMA}")
        conn.execute(f"CREATE TABLE {PROBE_SCHEMA}.settings (display_name text)")
        conn.execute(f"INSERT INTO {PROBE_SCHEMA}.settings VALUES ('probe tenant secret')")
    yield PROBE_SCHEMA
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PROBE_SCHEMA} CASCADE")


@pytest.fixture
async def pooled_engine(pooled_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pooled_settings.model_copy(update={"db_pool_size": 8}))
    yield engine
    await engine.dispose()


async def _session_defaults(engine: AsyncEngine) -> tuple[str, str]:
    async with engine.connect() as conn, conn.begin():
        path = (await conn.execute(text("SHOW search_path"))).scalar_one()
        timeout = (await conn.execute(text("SHOW statement_timeout"))).scalar_one()
    return str(path), str(timeout)


async def test_pgbouncer_refuses_direct_modes_startup_options_and_pooler_mode_needs_none(
    pooled_settings: Settings,
) -> None:
    direct_mode = create_engine(pooled_settings.model_copy(update={"db_pooler": "none"}))
    with pytest.raises(OperationalError, match="unsupported startup parameter: options"):
        await _session_defaults(direct_mode)
    await direct_mode.dispose()

    pooler_mode = create_engine(pooled_settings)
    assert await _session_defaults(pooler_mode) == ("extensions", "30s")
    await pooler_mode.dispose()


async def test_a_pooler_dropping_startup_options_loses_the_fail_closed_path_but_not_pooler_mode(
    database_url: str, settings: Settings
) -> None:
    # The usual "fix" for the refusal above: PgBouncer told to ignore `options`.
    with running_pgbouncer(database_url, ignore_startup_parameters="options") as lenient:
        pooled = through_pooler(settings, lenient)
        direct_mode = create_engine(pooled.model_copy(update={"db_pooler": "none"}))
        leaked = await _session_defaults(direct_mode)
        await direct_mode.dispose()
        pooler_mode = create_engine(pooled)
        kept = await _session_defaults(pooler_mode)
        await pooler_mode.dispose()
    assert leaked == ('"$user", public', "0")  # silently: no fail-closed path, no timeout
    assert kept == ("extensions", "30s")


async def _poison_every_server_connection(bouncer: PgBouncer, schema: str) -> None:
    """Another client of the pooler leaves session-level state on both server connections."""
    clients = [await psycopg.AsyncConnection.connect(libpq_url(bouncer.url)) for _ in range(2)]
    # Both transactions open at once: each holds its own server connection.
    for client in clients:
        await client.execute(f"SET search_path = {schema}, extensions")
        await client.execute("SET statement_timeout = 0")
    for client in clients:
        await client.commit()
        await client.close()


async def test_session_state_left_by_another_client_never_reaches_a_pooled_transaction(
    database_url: str, settings: Settings, probe_schema: str
) -> None:
    # A PgBouncer of its own: the state left on its server connections must not outlive the test.
    with running_pgbouncer(database_url) as bouncer:
        await _poison_every_server_connection(bouncer, probe_schema)
        # Control: defaults set per role or per connection would now read the tenant's row.
        async with await psycopg.AsyncConnection.connect(libpq_url(bouncer.url)) as raw:
            leaked = await (await raw.execute("SELECT display_name FROM settings")).fetchone()
        assert leaked == ("probe tenant secret",)

        engine = create_engine(
            through_pooler(settings, bouncer).model_copy(update={"db_statement_timeout_ms": 200})
        )
        try:
            for _ in range(6):  # both server connections, several times
                assert await _session_defaults(engine) == ("extensions", "200ms")
                with pytest.raises(ProgrammingError, match="does not exist"):
                    async with engine.connect() as conn, conn.begin():
                        await conn.execute(text("SELECT display_name FROM settings"))
            with pytest.raises(DBAPIError, match="statement timeout"):
                async with engine.connect() as conn, conn.begin():
                    await conn.execute(text("SELECT pg_sleep(5)"))
        finally:
            await engine.dispose()


async def test_a_tenants_search_path_never_outlives_its_transaction_on_a_shared_connection(
    pooled_engine: AsyncEngine, probe_schema: str
) -> None:
    factory = create_session_factory(pooled_engine)

    async def transaction(i: int) -> tuple[bool, int, str]:
        tenant = i % 2 == 0
        async with factory() as session, session.begin():
            if tenant:
                await enter_tenant_schema(session, probe_schema)
            row = (
                await session.execute(
                    text("SELECT pg_backend_pid(), current_setting('search_path')")
                )
            ).one()
        return tenant, int(row[0]), str(row[1])

    results = await asyncio.gather(*(transaction(i) for i in range(300)))
    tenantless = [(pid, path) for tenant, pid, path in results if not tenant]
    assert {path for _, path in tenantless} == {"extensions"}
    assert {path for tenant, _, path in results if tenant} == {f'"{probe_schema}", extensions'}
    # The same server backends served tenant and tenantless transactions (PgBouncer shares 2).
    tenant_pids = {pid for tenant, pid, _ in results if tenant}
    assert tenant_pids & {pid for pid, _ in tenantless}
    assert len(tenant_pids) <= 2


async def _run_repeated_queries(engine: AsyncEngine) -> list[str]:
    """Many clients, each repeating one parameterised query in its own transactions."""

    async def client(n: int) -> list[str]:
        errors: list[str] = []
        async with engine.connect() as conn:
            for i in range(12):
                try:
                    async with conn.begin():
                        await conn.execute(text("SELECT CAST(:n AS int) + :i"), {"n": n, "i": i})
                except DBAPIError as exc:
                    errors.append(str(exc.orig))
        return errors

    outcomes = await asyncio.gather(*(client(n) for n in range(8)))
    return [error for errors in outcomes for error in errors]


async def test_concurrent_transactions_through_pgbouncer_never_miss_a_prepared_statement(
    pooled_engine: AsyncEngine, pgbouncer: PgBouncer
) -> None:
    # Control: psycopg's default prepares a query on its 5th run, on whichever server
    # connection PgBouncer handed out then; later transactions land on the other one.
    preparing = create_async_engine(sqlalchemy_url(pgbouncer.url), pool_size=8)
    try:
        assert any(
            "prepared statement" in error for error in await _run_repeated_queries(preparing)
        )
    finally:
        await preparing.dispose()
    assert await _run_repeated_queries(pooled_engine) == []


async def _round_trips_of_one_transaction(engine: AsyncEngine) -> int:
    """Client/server round trips of BEGIN, one parameterised query and COMMIT (libpq's trace)."""
    async with engine.connect() as conn:
        pgconn = (await conn.get_raw_connection()).driver_connection.pgconn  # type: ignore[union-attr]
        with tempfile.TemporaryFile("w+") as trace:
            pgconn.trace(trace.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                async with conn.begin():
                    await conn.execute(text("SELECT CAST(:n AS int)"), {"n": 1})
            finally:
                pgconn.untrace()
            trace.seek(0)
            return sum(line.startswith("B\t5\tReadyForQuery") for line in trace)


async def test_a_pooled_transaction_takes_no_more_round_trips_than_a_direct_one(
    settings: Settings, pooled_settings: Settings
) -> None:
    engines = [create_engine(settings), create_engine(pooled_settings)]
    try:
        direct, pooled = [await _round_trips_of_one_transaction(e) for e in engines]
    finally:
        for engine in engines:
            await engine.dispose()
    # BEGIN (behind the pooler, with the defaults in the same query), the query, COMMIT.
    assert (direct, pooled) == (3, 3)


async def test_isolation_levels_and_autocommit_keep_their_meaning_behind_the_pooler(
    pooled_engine: AsyncEngine,
) -> None:
    serializable = await pooled_engine.connect()
    try:
        conn = await serializable.execution_options(isolation_level="SERIALIZABLE")
        async with conn.begin():
            isolation = (await conn.execute(text("SHOW transaction_isolation"))).scalar_one()
            path = (await conn.execute(text("SHOW search_path"))).scalar_one()
            assert (isolation, path) == ("serializable", "extensions")
    finally:
        await serializable.close()
    async with pooled_engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM shared.outbox"))  # refused inside a transaction
