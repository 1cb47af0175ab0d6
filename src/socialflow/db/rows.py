"""Hot statements: run on the driver connection of the caller's transaction, rows as tuples or
as response structs.

    ENTRY_OUT = struct_columns(TenantAuditEntry, EntryOut)
    query = select(*ENTRY_OUT).order_by(...)          # built once, with bound parameters
    return await fetch_structs(session, query, EntryOut, params)

Why: on the busiest routes, SQLAlchemy's execution path (cache key, execution context, result
metadata, a greenlet switch for each call into the driver) cost about three times what psycopg
itself spends on a statement. A statement that runs on every request is compiled here once,
then sent straight to psycopg on the connection the session already holds, inside the same
transaction (same search_path, same locks, committed or rolled back with the session).

Only statements whose compiled form needs nothing from SQLAlchemy at run time are accepted: no
parameters expanded at execution (IN lists), no bind or result processors (psycopg converts
UUIDs, aware datetimes, JSON and numbers itself). Anything else is refused when first compiled,
so the fast path can never return something the ordinary path would not. Driver errors come out
as SQLAlchemy's exception classes, and a connection found dead is invalidated, as
`session.execute` would do.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec
import psycopg
from psycopg.pq import ExecStatus
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from socialflow.db.shared_connection import SHARED_CONNECTION, SharedConnection

S = TypeVar("S", bound=msgspec.Struct)
TUPLES_OK = ExecStatus.TUPLES_OK
_CURSOR = "socialflow.hot_cursor"  # a pooled connection's info: the cursor hot statements use
# session.info: (a weak reference to its transaction, that transaction's connection)
_HELD = "socialflow.hot_connection"


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    defaults: Mapping[str, Any]  # values bound when the statement was built (e.g. literals)
    columns: tuple[str, ...]


_COMPILED: weakref.WeakKeyDictionary[ClauseElement, _Compiled] = weakref.WeakKeyDictionary()


def _compile(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
    sql = compiled.string
    if "POSTCOMPILE" in sql:
        raise TypeError("a statement with parameters expanded at execution is not a hot one")
    for name, bind in compiled.binds.items():
        if bind.type._cached_bind_processor(dialect) is not None:
            raise TypeError(f"parameter {name!r} needs SQLAlchemy's conversion")
    result_columns = getattr(compiled, "_result_columns", [])
    for column in result_columns:
        if column.type._cached_result_processor(dialect, None) is not None:
            raise TypeError(f"column {column.keyname!r} needs SQLAlchemy's conversion")
    return _Compiled(
        sql=sql,
        defaults={k: v for k, v in compiled.params.items() if v is not None},
        columns=tuple(column.keyname for column in result_columns),
    )


def _compiled(session: AsyncSession, statement: ClauseElement) -> _Compiled:
    found = _COMPILED.get(statement)
    if found is None:
        bind = session.bind
        if bind is None:
            raise RuntimeError("the session is bound to no engine")
        found = _COMPILED[statement] = _compile(statement, bind.dialect)
    return found


async def _connection(session: AsyncSession) -> AsyncConnection:
    """The connection of the session's transaction, begun if need be. Asked once per
    transaction: each `session.connection()` is a greenlet switch, even when it has one."""
    transaction = session.sync_session.get_transaction()
    held = session.info.get(_HELD)
    if held is not None and transaction is not None and held[0]() is transaction:
        return held[1]  # type: ignore[no-any-return]
    connection = await session.connection()
    transaction = session.sync_session.get_transaction()
    if transaction is not None:
        # A weak reference: the session holding its own transaction would make a reference
        # cycle, freed only by the garbage collector (which paused each process ~65 ms every
        # ~1,000 requests; a test keeps requests free of cycles).
        session.info[_HELD] = (weakref.ref(transaction), connection)
    return connection


async def _run(
    session: AsyncSession, compiled: _Compiled, params: Mapping[str, Any] | None
) -> list[tuple[Any, ...]]:
    shared = session.info.get(SHARED_CONNECTION)
    connection: AsyncConnection | None = None
    if isinstance(shared, SharedConnection):  # a request's: its connection, no ORM needed
        dbapi_connection = await shared.pooled()
    else:
        connection = await _connection(session)
        dbapi_connection = connection.sync_connection.connection  # type: ignore[union-attr]
    driver: psycopg.AsyncConnection[Any] = dbapi_connection.driver_connection  # type: ignore[assignment]
    values = {**compiled.defaults, **params} if params else compiled.defaults
    try:
        cursor = dbapi_connection.info.get(_CURSOR)  # one per pooled connection, reused
        if cursor is None or cursor.connection is not driver:
            cursor = dbapi_connection.info[_CURSOR] = driver.cursor()
        await cursor.execute(compiled.sql, values)
        result = cursor.pgresult  # not `description`: it builds a Column per column
        return await cursor.fetchall() if result and result.status == TUPLES_OK else []
    except psycopg.Error as exc:
        dialect = session.bind.dialect  # type: ignore[union-attr]
        dead = dialect.is_disconnect(exc, dbapi_connection, None)  # type: ignore[arg-type]
        if dead:
            if connection is not None:
                await connection.invalidate(exc)
            elif isinstance(shared, SharedConnection):
                await shared.invalidate(exc)
        raise DBAPIError.instance(
            compiled.sql,
            values,
            exc,
            psycopg.Error,
            connection_invalidated=dead,
            dialect=dialect,
        ) from exc


async def fetch_rows(
    session: AsyncSession, statement: ClauseElement, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """The rows of a hot `statement` (built once: it is compiled on first use), as tuples."""
    return await _run(session, _compiled(session, statement), params)


def struct_columns(model: type[DeclarativeBase], item: type[msgspec.Struct]) -> list[Any]:
    """The model's columns named as `item`'s fields, in the struct's order."""
    table = model.__table__
    return [table.c[name] for name in item.__struct_fields__]


async def fetch_structs(
    session: AsyncSession,
    query: ClauseElement,
    item: type[S],
    params: Mapping[str, Any] | None = None,
) -> list[S]:
    """The rows of a hot `query` (its columns: `item`'s fields in order), as `item` structs.

    Each row becomes a struct positionally, with the driver's values (UUIDs, aware datetimes,
    decoded JSON): the field types must be what the columns hold."""
    compiled = _compiled(session, query)
    if compiled.columns != item.__struct_fields__:
        raise TypeError(f"columns {compiled.columns} are not the fields of {item.__name__}")
    return [item(*row) for row in await _run(session, compiled, params)]
