"""Pooled connections: pinged only after idling, and a dead idle one is replaced unseen."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from sqlalchemy import text

from socialflow.db.engine import create_engine, ping_idle_connections
from socialflow.settings import Settings


async def test_a_connection_killed_while_idle_is_replaced_before_a_request_uses_it(
    settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    engine = create_engine(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    ping_idle_connections(engine, 0.1)  # idle for 0.1 s is "idle" here
    try:
        async with engine.connect() as conn:
            first = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # The server side of the pooled connection goes away (a restart, a pooler's timeout).
        pg.execute("SELECT pg_terminate_backend(%s)", (first,))
        await asyncio.sleep(0.3)
        async with engine.connect() as conn:
            second = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_back_from_a_request_a_moment_ago_is_not_pinged(
    settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    engine = create_engine(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    pings = 0
    original = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        nonlocal pings
        pings += 1
        return bool(original(dbapi_connection))

    engine.dialect.do_ping = counted  # type: ignore[method-assign]
    try:
        for _ in range(20):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert pings == 0
    finally:
        await engine.dispose()
