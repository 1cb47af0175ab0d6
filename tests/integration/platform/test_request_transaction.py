"""A request's unit of work: its hot statements (db/rows.py) and its session's ORM work share one
pooled connection and one transaction, directly and behind a transaction pooler; it commits or
rolls back both together and always gives the connection back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from litestar.datastructures import State
from sqlalchemy import event, text

from socialflow.db.engine import create_engine, create_session_factory, libpq_url
from socialflow.db.rows import fetch_rows
from socialflow.db.session import RequestUnitOfWork
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.settings import Settings

PROBE = "t_request_tx_probe"
TRANSACTION = text("SELECT txid_current(), pg_backend_pid()")
SEARCH_PATH = text("SELECT current_setting('search_path')")
INSERT = text(f"INSERT INTO {PROBE}.marks (mark, source) VALUES (:mark, :source)")


@pytest.fixture(scope="module")
def probe_schema(database_url: str) -> Iterator[str]:
    """A tenant-like schema with a table each test writes its own marks into."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PROBE}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {PROBE}.marks (mark uuid, source text)")
    yield PROBE
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PROBE} CASCADE")


@pytest.fixture(params=["direct", "pooled"])
async def state(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[State]:
    """What the app's state gives a request's unit of work: straight to PostgreSQL, and
    through PgBouncer in transaction mode (the driver in autocommit, BEGIN sent by us)."""
    if request.param == "pooled":
        settings = request.getfixturevalue("pooled_settings")
    engine = create_engine(settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 0}))
    yield State(
        {"engine": engine, "session_factory": create_session_factory(engine), "settings": settings}
    )
    await engine.dispose()


def _marks(database_url: str, mark: uuid.UUID) -> list[str]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(f"SELECT source FROM {PROBE}.marks WHERE mark = %s", (mark,))
        return sorted(source for (source,) in rows)


def _checked_out(state: State) -> int:
    return int(state.engine.sync_engine.pool.checkedout())


async def test_hot_statements_and_the_orm_run_in_one_transaction_in_the_tenant_schema(
    state: State, probe_schema: str
) -> None:
    work = RequestUnitOfWork(state)
    async with work.adopted() as session:
        await enter_tenant_schema(session, probe_schema)  # a guard's hot statement, first
        hot = await fetch_rows(session, TRANSACTION)
        orm = (await session.execute(TRANSACTION)).one()
        # The ORM began after the hot statement: same transaction, and (behind the pooler)
        # its BEGIN did not reset the tenant's search_path to the fail-closed default.
        assert hot == [tuple(orm)]
        assert (await session.execute(SEARCH_PATH)).scalar_one() == f'"{probe_schema}", extensions'
        assert await fetch_rows(session, TRANSACTION) == hot
    assert _checked_out(state) == 0


@pytest.mark.usefixtures("probe_schema")
async def test_a_request_commits_its_hot_statements_with_or_without_orm_work(
    state: State, database_url: str
) -> None:
    alone, together = uuid.uuid4(), uuid.uuid4()
    async with RequestUnitOfWork(state).adopted() as session:
        await fetch_rows(session, INSERT, {"mark": alone, "source": "hot"})
    async with RequestUnitOfWork(state).adopted() as session:
        await fetch_rows(session, INSERT, {"mark": together, "source": "hot"})
        await session.execute(INSERT, {"mark": together, "source": "orm"})
    assert _marks(database_url, alone) == ["hot"]
    assert _marks(database_url, together) == ["hot", "orm"]
    assert _checked_out(state) == 0


@pytest.mark.usefixtures("probe_schema")
async def test_a_failed_request_rolls_back_its_hot_statements_and_orm_work(
    state: State, database_url: str
) -> None:
    mark = uuid.uuid4()

    async def failing_request() -> None:
        async with RequestUnitOfWork(state).adopted() as session:
            await fetch_rows(session, INSERT, {"mark": mark, "source": "hot"})
            await session.execute(INSERT, {"mark": mark, "source": "orm"})
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError, match="handler failed"):
        await failing_request()
    assert _marks(database_url, mark) == []
    assert _checked_out(state) == 0


@pytest.mark.usefixtures("probe_schema")
async def test_a_request_refused_before_its_handler_ran_keeps_nothing(
    state: State, database_url: str
) -> None:
    mark = uuid.uuid4()
    work = RequestUnitOfWork(state)
    await fetch_rows(work.session(), INSERT, {"mark": mark, "source": "hot"})  # a guard's
    await work.close()  # the guard refused: the middleware closes the unit of work
    await work.close()  # and again when the request ends: idempotent
    assert _marks(database_url, mark) == []
    assert _checked_out(state) == 0


async def test_after_the_orm_rolls_back_a_hot_statement_still_runs_in_a_transaction(
    state: State, probe_schema: str
) -> None:
    async with RequestUnitOfWork(state).adopted() as session:
        await enter_tenant_schema(session, probe_schema)
        await session.execute(TRANSACTION)
        await session.rollback()  # e.g. releasing a row lock before failing (refresh reuse)
        await enter_tenant_schema(session, probe_schema)  # SET LOCAL: needs a transaction
        assert await fetch_rows(session, SEARCH_PATH) == [(f'"{probe_schema}", extensions',)]
    assert _checked_out(state) == 0


async def test_a_request_that_never_touched_the_database_checks_out_nothing(
    state: State,
) -> None:
    checkouts = 0

    def counted(*_: Any) -> None:
        nonlocal checkouts
        checkouts += 1

    event.listen(state.engine.sync_engine.pool, "checkout", counted)
    async with RequestUnitOfWork(state).adopted():
        pass
    assert checkouts == 0
