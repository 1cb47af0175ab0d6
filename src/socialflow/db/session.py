"""Units of work: one session per request or job, committed on success, rolled back otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = structlog.get_logger(__name__)

AfterCommit = Callable[[], Awaitable[None]]
_AFTER_COMMIT = "socialflow.after_commit"


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once this unit of work has committed (never if it rolls back).

    For effects that must not be seen before the change is durable, such as telling other
    processes to drop a cached row: done before the commit, a concurrent reader could cache
    the old row again.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in an open transaction; it commits when the block ends cleanly.

    Services never commit: the unit of work around them does, so everything a use case
    writes (its rows and its outbox events) lands together or not at all.
    """
    async with factory() as session:
        async with session.begin():
            yield session
        callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT, [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:  # the change is committed; a failed follow-up must not undo the answer
            log.exception("unit_of_work.after_commit_failed")


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    """Litestar dependency: the request's unit of work.

    Litestar throws a handler's exception into this generator, so the transaction rolls back;
    when the handler returns, the commit happens before the response is sent, so a client never
    sees success for a change that failed to commit.
    """
    async with unit_of_work(state.session_factory) as session:
        yield session
