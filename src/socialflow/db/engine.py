"""The async SQLAlchemy engine on psycopg 3, built from settings."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy.ext.asyncio
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)

from socialflow.db.shared_connection import SharedConnectionSession
from socialflow.db.tenant_schema import NO_TENANT_SEARCH_PATH, set_search_path
from socialflow.settings import Settings

# The shared schema holds every table that is not a tenant's; it is always schema-qualified.
SHARED_SCHEMA = "shared"
EXTENSIONS_SCHEMA = "extensions"
# Sessions without a tenant resolve unqualified names in `extensions` only, so a query that
# forgot its tenant fails instead of reading another schema.


def sqlalchemy_url(url: str, *, driver: str = "psycopg") -> str:
    """Normalise postgres:// and postgresql:// URLs to the psycopg 3 dialect."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg"}:
        parsed = parsed.set(drivername=f"postgresql+{driver}")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a plain libpq URL, for raw psycopg connections (LISTEN, COPY)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(settings: Settings, *, database_url: str | None = None) -> AsyncEngine:
    url = database_url or settings.database_url
    if url is None:
        raise RuntimeError("DATABASE_URL is not set and no embedded database was started")
    pooled = settings.db_pooler == "transaction"
    connect_args: dict[str, Any] = {"application_name": "socialflow"}
    if pooled:
        # A transaction pooler refuses startup options (or drops them) and hands each
        # transaction to any server connection: no session state, no server-side prepares.
        # The driver does not BEGIN by itself: begin_with_defaults() does (see there).
        connect_args |= {"prepare_threshold": None, "autocommit": True}
    else:
        # No tenant → no tenant schema on the path; tenant transactions set theirs with SET LOCAL.
        connect_args["options"] = (
            f"-c statement_timeout={settings.db_statement_timeout_ms} "
            f"-c search_path={NO_TENANT_SEARCH_PATH}"
        )
    # Looked up at each call: tracing (lib.telemetry) wraps the module's function.
    engine = sqlalchemy.ext.asyncio.create_async_engine(
        sqlalchemy_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_args=connect_args,
        # An error's text (logged, dead-lettered) names its statement, never the values bound.
        hide_parameters=True,
    )
    ping_idle_connections(engine, IDLE_BEFORE_PING_S)
    if pooled:
        begin_with_defaults(engine, settings.db_statement_timeout_ms)
    return engine


# A connection back from the pool within this time was working a moment ago: no ping.
IDLE_BEFORE_PING_S = 5.0


def ping_idle_connections(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a connection at checkout only if it sat idle in the pool for `idle_s` or more.

    SQLAlchemy's pool_pre_ping pings every checkout: a round trip on every request. A
    connection used a moment ago is alive; one that idled (the server may have restarted
    meanwhile) is pinged and, if dead, replaced before the request uses it.
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def remember_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_s:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("connection dead after idling") from exc
        if not alive:
            raise DisconnectionError("connection dead after idling")


def transaction_defaults_sql(statement_timeout_ms: int) -> str:
    """One statement giving a transaction the fail-closed search_path and the timeout."""
    # Literals, not parameters: the statement can share a simple query with BEGIN.
    return (
        f"SELECT {set_search_path(repr(NO_TENANT_SEARCH_PATH))}, "
        f"set_config('statement_timeout', '{int(statement_timeout_ms)}', true)"
    )


def explicit_begin(settings: Settings) -> str | None:
    """What opens a transaction on a bare pooled connection when the driver does not: behind a
    transaction pooler, BEGIN with the defaults (see begin_with_defaults); else None."""
    if settings.db_pooler != "transaction":
        return None
    return f"BEGIN; {transaction_defaults_sql(settings.db_statement_timeout_ms)}"


def begin_with_defaults(engine: AsyncEngine, statement_timeout_ms: int) -> None:
    """Behind a transaction pooler, every transaction starts by setting its own defaults.

    Per transaction, not per role: the server connection may come straight from another client
    that left session state on it, so each transaction sets what it relies on (SET LOCAL, gone
    at its end). The driver is in autocommit mode, so BEGIN is ours to send, and it travels with
    the defaults in one simple query: no round trip is added. psycopg's commit() and rollback()
    follow the server's transaction status, so they end that transaction as usual.
    """
    defaults = transaction_defaults_sql(statement_timeout_ms)

    def on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # asked for no transaction: there is none to set defaults in
        driver = connection.connection.driver_connection
        if driver.info.transaction_status != TransactionStatus.IDLE:  # type: ignore[union-attr]
            return  # a hot statement on the shared connection began it (shared_connection.py)
        if connection.connection.dbapi_connection.autocommit:  # type: ignore[union-attr]
            connection.exec_driver_sql(f"BEGIN; {defaults}")
        else:  # an isolation level was set: the driver sends its own BEGIN first
            connection.exec_driver_sql(defaults)

    event.listen(engine.sync_engine, "begin", on_begin)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        engine,
        expire_on_commit=False,
        autoflush=False,
        sync_session_class=SharedConnectionSession,
    )
