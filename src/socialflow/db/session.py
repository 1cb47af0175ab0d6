"""Units of work: one session per request or job, committed on success, rolled back otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog
from litestar import Request
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.middleware import MiddlewareProtocol
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.util import greenlet_spawn

from socialflow.db.engine import explicit_begin
from socialflow.db.shared_connection import SHARED_CONNECTION, SharedConnection

log = structlog.get_logger(__name__)

AfterCommit = Callable[[], Awaitable[None]]
_AFTER_COMMIT = "socialflow.after_commit"
_AFTER_TRANSACTION = "socialflow.after_transaction"
# Where a request's unit of work lives: its scope's state, beside what the guards resolved.
_REQUEST_WORK = "unit_of_work"


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once this unit of work has committed (never if it rolls back).

    For effects that must not be seen before the change is durable, such as telling other
    processes to drop a cached row: done before the commit, a concurrent reader could cache
    the old row again.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def after_transaction(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once this unit of work has ended, committed or rolled back, and its
    connection is back in the pool.

    For a record that must outlive a rollback (a refusal noted while the refused work rolls
    back), written in a transaction of its own without holding a second connection meanwhile.
    """
    session.info.setdefault(_AFTER_TRANSACTION, []).append(callback)


def _finished(session: AsyncSession, *, committed: bool) -> list[AfterCommit]:
    """The callbacks to run now that `session`'s transaction has ended."""
    done: list[AfterCommit] = session.info.pop(_AFTER_TRANSACTION, [])
    after_commit: list[AfterCommit] = session.info.pop(_AFTER_COMMIT, [])
    return [*after_commit, *done] if committed else done


async def _run_after_commit(callbacks: list[AfterCommit]) -> None:
    for callback in callbacks:
        try:
            await callback()
        except Exception:  # the change is committed; a failed follow-up must not undo the answer
            log.exception("unit_of_work.after_commit_failed")


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in an open transaction; it commits when the block ends cleanly.

    Services never commit: the unit of work around them does, so everything a use case
    writes (its rows and its outbox events) lands together or not at all.
    """
    callbacks: list[AfterCommit] = []
    try:
        async with factory() as session:
            try:
                async with session.begin():
                    yield session
            except Exception:
                callbacks = _finished(session, committed=False)
                raise
            callbacks = _finished(session, committed=True)
    finally:
        await _run_after_commit(callbacks)


async def autocommitted(
    engine: AsyncEngine, statement: Executable, params: Mapping[str, Any]
) -> Sequence[Row[Any]]:
    """Run one statement as a transaction of its own, committed by the server as it ends; its
    rows. For a row many workers update at once (a tenant's spend counter): its lock is held
    for the statement only, never across the client's next round trip. Never call it inside a
    unit of work (a second connection held while the first waits could starve the pool)."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        return (await autocommit.execute(statement, dict(params))).all()


class RequestUnitOfWork:
    """A request's one transaction, opened by the first who needs it: a route guard resolving
    the caller and their tenant, or the `session` dependency.

    Its connection is checked out of the pool on the first statement and shared by the hot
    statements and the session's ORM work (db/shared_connection.py). Only the dependency
    commits (`adopted`). Whatever it did not finish, because the handler never ran (a guard
    refused, the body did not validate), `close` rolls back: the UnitOfWorkMiddleware calls it
    before the answer is sent and again when the request ends.
    """

    __slots__ = ("_closed", "_connection", "_session", "_state")

    def __init__(self, state: State) -> None:
        self._state = state
        self._session: AsyncSession | None = None
        self._connection: SharedConnection | None = None
        self._closed = False

    def session(self) -> AsyncSession:
        """The request's session (created on first use; it connects on its first statement)."""
        if self._closed:
            raise RuntimeError("the request's unit of work is already finished")
        if self._session is None:
            factory: async_sessionmaker[AsyncSession] = self._state.session_factory
            self._session = factory()
            self._connection = SharedConnection(
                self._state.engine, explicit_begin(self._state.settings)
            )
            self._session.info[SHARED_CONNECTION] = self._connection
        return self._session

    @asynccontextmanager
    async def adopted(self) -> AsyncIterator[AsyncSession]:
        """The handler's session, with what the guards did in it: committed when the block
        ends cleanly, rolled back otherwise; after-commit callbacks run after the commit."""
        session = self.session()
        try:
            yield session
        except Exception:
            await self._end(session, commit=False)
            raise
        except BaseException:
            await self.close()
            raise
        await self._end(session, commit=True)

    async def release(self) -> None:
        """End the request's transaction before an outbound call (no connection or lock held
        while a slow server answers): what it did so far is committed (the guards' bookkeeping,
        an API key's last use), and the connection goes back to the pool. The request's
        session is finished: what the handler writes after goes in a unit of work of its own
        (`Resources.in_tenant`)."""
        if self._session is None:
            self._closed = True
            return
        await self._end(self._session, commit=True)

    async def _end(self, session: AsyncSession, *, commit: bool) -> None:
        """Commit (or roll back), give the connection back, then run the callbacks due."""
        try:
            if commit:
                await self._commit(session)
        except Exception:
            callbacks = _finished(session, committed=False)
            await self.close()
            await _run_after_commit(callbacks)
            raise
        except BaseException:
            await self.close()
            raise
        callbacks = _finished(session, committed=commit)
        await self.close()
        await _run_after_commit(callbacks)

    async def _commit(self, session: AsyncSession) -> None:
        orm = session.sync_session
        if orm.in_transaction() or orm.new or orm.deleted:
            await session.commit()  # flushes, then commits the connection's one transaction
        if self._connection is not None:
            # What hot statements did outside the ORM's transaction (all of it, when the
            # handler used no ORM); no round trip when the server has nothing open.
            await self._connection.commit()

    async def close(self) -> None:
        """Roll back whatever is still open and give the connection back; idempotent."""
        session, connection = self._session, self._connection
        self._session, self._connection, self._closed = None, None, True
        if session is None:
            return
        try:
            if connection is not None and connection.checked_out:
                await greenlet_spawn(_release, session.sync_session, connection)
            else:
                session.sync_session.close()  # it never connected: no I/O to await
        except Exception:  # the connection is gone; the pool drops it
            log.exception("unit_of_work.close_failed")


def _release(session: Session, connection: SharedConnection) -> None:
    """End the session (rolling back an ORM transaction still open), then the connection's."""
    try:
        session.close()
    finally:
        connection.release()


def request_work(scope: Scope) -> RequestUnitOfWork:
    work = scope.get("state", {}).get(_REQUEST_WORK)
    if not isinstance(work, RequestUnitOfWork):
        raise RuntimeError("no request unit of work: the app must install UnitOfWorkMiddleware")
    return work


def request_session(scope: Scope) -> AsyncSession:
    """The session of the request's unit of work, for guards (they run before dependencies)."""
    return request_work(scope).session()


class UnitOfWorkMiddleware(MiddlewareProtocol):
    """Route middleware: gives each HTTP request its unit of work, and finishes it for sure.

    A unit of work the `session` dependency adopted is committed or rolled back by it before
    the response is sent. One it never adopted is rolled back when the answer starts (so a
    refused request holds no transaction while its answer is sent) and, whatever happens, when
    the request ends: no request leaves a connection checked out or a transaction open.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        work = RequestUnitOfWork(scope["app"].state)
        scope.setdefault("state", {})[_REQUEST_WORK] = work

        async def finish_before_answering(message: Message) -> None:
            if message["type"] == "http.response.start":
                await work.close()
            await send(message)

        try:
            await self.app(scope, receive, finish_before_answering)
        finally:
            await work.close()


async def provide_session(request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    """Litestar dependency: the request's unit of work, with what the route's guards read in it.

    Litestar throws a handler's exception into this generator, so the transaction rolls back;
    when the handler returns, the commit happens before the response is sent, so a client never
    sees success for a change that failed to commit.
    """
    async with request_work(request.scope).adopted() as session:
        yield session
