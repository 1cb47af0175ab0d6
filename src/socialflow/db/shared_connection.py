"""One pooled connection per request transaction, shared by its hot statements and its session.

A request's transaction starts with the guards' hot statements (db/rows.py) and often ends with
them. Going through a session for those cost a Session transaction, an engine Connection and
two greenlet switches per request (about a tenth of a request's CPU), for statements that never
needed them. So the request checks a connection out of the engine's pool itself, runs the hot
statements on its driver connection, and gives the ORM session (when the handler uses it) an
engine Connection over the same pooled connection: one transaction, same search_path, same
locks, committed or rolled back once.

    SharedConnectionSession.get_bind → the shared connection, when the session has one
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

# session.info: the SharedConnection the session runs on (set for a request's session only)
SHARED_CONNECTION = "socialflow.shared_connection"
_IDLE = TransactionStatus.IDLE


class SharedConnection:
    """The pooled connection of one transaction, checked out on first use.

    `begin_sql` is what opens a transaction when the driver does not (autocommit mode behind a
    transaction pooler, see db/engine.py): sent before a hot statement finds none open. An
    engine Connection over it begins its own way (the engine's `begin` event), and finds the
    transaction open when a hot statement came first.
    """

    __slots__ = ("_begin_sql", "_connection", "_engine", "_pooled")

    def __init__(self, engine: AsyncEngine, begin_sql: str | None) -> None:
        self._engine = engine
        self._begin_sql = begin_sql
        self._pooled: PoolProxiedConnection | None = None
        self._connection: Connection | None = None

    @property
    def checked_out(self) -> bool:
        return self._pooled is not None

    async def pooled(self) -> PoolProxiedConnection:
        """The pooled connection, in an open transaction once a statement runs on it."""
        try:
            pooled = self._pooled
            if pooled is None:
                pooled = self._pooled = await self._engine.raw_connection()
            if self._begin_sql is not None:
                driver: psycopg.AsyncConnection[Any] = pooled.driver_connection  # type: ignore[assignment]
                if driver.info.transaction_status == _IDLE:
                    await driver.execute(self._begin_sql)
        except psycopg.Error as exc:  # as an engine Connection would raise it
            raise DBAPIError.instance(
                self._begin_sql, None, exc, psycopg.Error, dialect=self._engine.dialect
            ) from exc
        return pooled

    def engine_connection(self) -> Connection:
        """An engine Connection over the pooled connection, for the ORM (in its greenlet)."""
        if self._connection is None:
            if self._pooled is None:
                self._pooled = self._engine.sync_engine.raw_connection()
            self._connection = Connection(self._engine.sync_engine, connection=self._pooled)
        return self._connection

    async def commit(self) -> None:
        """Commit what ran on the connection (the server's transaction, whoever began it)."""
        if self._pooled is not None:
            driver: psycopg.AsyncConnection[Any] = self._pooled.driver_connection  # type: ignore[assignment]
            await driver.commit()

    def release(self) -> None:
        """Roll back whatever is open and return the connection to the pool (in a greenlet:
        the pool's reset talks to the server)."""
        connection, pooled = self._connection, self._pooled
        self._connection = self._pooled = None
        if connection is not None:
            connection.close()  # returns `pooled` too
        elif pooled is not None:
            pooled.close()

    async def invalidate(self, error: BaseException) -> None:
        """The connection was found dead: drop it from the pool."""
        target = self._connection or self._pooled
        if target is not None:
            await greenlet_spawn(target.invalidate, error)


class SharedConnectionSession(Session):
    """A Session that runs on its SharedConnection when it has one (a request's), on the engine
    otherwise."""

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        shared = self.info.get(SHARED_CONNECTION)
        if isinstance(shared, SharedConnection) and kwargs.get("bind") is None:
            return shared.engine_connection()
        return super().get_bind(*args, **kwargs)
