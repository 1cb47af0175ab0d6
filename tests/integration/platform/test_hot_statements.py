"""fetch_rows runs on the session's own transaction, refuses what it cannot run as SQLAlchemy
would, reports driver errors as SQLAlchemy's exceptions, and leaves no reference cycle: a
finished request's session is freed at once, not by the garbage collector."""

from __future__ import annotations

import enum
import gc
import weakref
from collections.abc import Iterator

import pytest
from sqlalchemy import Enum, bindparam, column, literal_column, select, table, text
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.rows import fetch_rows
from tests.integration.tenancy_fixtures import Platform, World

SCRATCH = table("hot_scratch", column("n"), schema="pg_temp")


async def test_rows_come_from_the_sessions_own_transaction(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        await session.execute(text("CREATE TEMP TABLE hot_scratch (n int) ON COMMIT DROP"))
        await session.execute(text("INSERT INTO pg_temp.hot_scratch VALUES (1), (2)"))
        query = select(SCRATCH.c.n).order_by(SCRATCH.c.n)
        assert await fetch_rows(session, query) == [(1,), (2,)]  # uncommitted rows: same tx
        await session.execute(text("INSERT INTO pg_temp.hot_scratch VALUES (3)"))
        assert await fetch_rows(session, query) == [(1,), (2,), (3,)]
        await session.rollback()


async def test_a_statement_that_returns_no_rows_gives_an_empty_list(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        assert await fetch_rows(session, text("SET LOCAL statement_timeout = 1000")) == []
        assert await fetch_rows(session, text("SELECT 1 WHERE false")) == []


async def test_parameters_expanded_at_execution_are_refused(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    in_list = select(literal_column("1")).where(
        literal_column("1").in_(bindparam("ns", expanding=True))
    )
    async with session_factory() as session:
        with pytest.raises(TypeError, match="expanded at execution"):
            await fetch_rows(session, in_list, {"ns": [1, 2]})


class Colour(enum.Enum):
    RED = "red"


async def test_values_sqlalchemy_would_convert_are_refused(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    as_enum = select(bindparam("c", type_=Enum(Colour, native_enum=False)))
    async with session_factory() as session:
        with pytest.raises(TypeError, match="needs SQLAlchemy's conversion"):
            await fetch_rows(session, as_enum, {"c": Colour.RED})


async def test_a_driver_error_is_sqlalchemys_and_the_session_recovers(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        with pytest.raises(DataError, match="division by zero"):
            await fetch_rows(session, text("SELECT 1 / 0"))
        await session.rollback()
        assert await fetch_rows(session, text("SELECT 2")) == [(2,)]


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("collector_off")
async def test_a_closed_session_is_freed_without_the_collector(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    session = session_factory()
    await fetch_rows(session, text("SELECT 1"))
    await fetch_rows(session, text("SELECT 2"))  # the held connection, reused
    await session.commit()
    await session.close()
    freed = weakref.ref(session.sync_session)
    del session
    assert freed() is None


@pytest.mark.usefixtures("collector_off")
async def test_a_tenant_request_leaves_no_database_objects_to_the_collector(
    platform: Platform, world: World
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/audit-log?limit=5"
    assert (await platform.client.get(url, headers=world.owner_a.headers)).status_code == 200
    gc.collect()  # what set-up left
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage, not freed
    try:
        for _ in range(3):
            response = await platform.client.get(url, headers=world.owner_a.headers)
            assert response.status_code == 200
        gc.collect()
        cyclic = {type(o).__module__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not {m for m in cyclic if m.startswith(("sqlalchemy", "psycopg", "socialflow"))}
