"""Units of work: one session per request or job, committed on success, rolled back otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in an open transaction; it commits when the block ends cleanly.

    Services never commit: the unit of work around them does, so everything a use case
    writes (its rows and its outbox events) lands together or not at all.
    """
    async with factory() as session, session.begin():
        yield session


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    """Litestar dependency: the request's unit of work.

    Litestar throws a handler's exception into this generator, so the transaction rolls back;
    when the handler returns, the commit happens before the response is sent, so a client never
    sees success for a change that failed to commit.
    """
    async with unit_of_work(state.session_factory) as session:
        yield session
