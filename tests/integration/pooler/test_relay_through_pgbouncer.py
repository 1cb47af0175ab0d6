"""The relay behind a transaction pooler: claims through PgBouncer, LISTENs on the direct URL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import redis as redis_lib
from outbox_relay.relay import OutboxRelay
from sqlalchemy.engine import make_url

from socialflow.db.engine import create_engine, create_session_factory, libpq_url
from socialflow.outbox.emit import NOTIFY_CHANNEL
from socialflow.settings import Settings
from tests.integration.outbox.support import TEST_ROUTES, emit_notes, queued_event_ids, wait_until
from tests.integration.pooler_fixtures import PgBouncer


async def test_a_relay_from_pooled_settings_claims_through_pgbouncer_and_wakes_on_notify(
    pooled_settings: Settings,
    pgbouncer: PgBouncer,
    clean_outbox: None,
    pg: psycopg.Connection[Any],
    redis_client: redis_lib.Redis,
    running_relays: Callable[[OutboxRelay], asyncio.Task[None]],
) -> None:
    # A 60 s poll: only a NOTIFY, which needs a session-level LISTEN, wakes it within the test.
    slow_poll = pooled_settings.model_copy(update={"relay_poll_interval_s": 60.0})
    relay = OutboxRelay.from_settings(slow_poll, routes=TEST_ROUTES)
    assert make_url(relay.database_url).port == pgbouncer.port
    assert relay.listen_url == libpq_url(pgbouncer.direct_url)
    running_relays(relay)
    await wait_until(
        lambda: (
            pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
                (f"LISTEN {NOTIFY_CHANNEL}",),
            ).fetchone()
            == (1,)
        ),
        timeout_s=10,
        message="the relay listening",
    )

    engine = create_engine(pooled_settings)
    try:
        event_ids = await emit_notes(create_session_factory(engine), 3, per_transaction=1)
    finally:
        await engine.dispose()
    # Enqueued, and the claim committed (it commits right after Redis answers).
    await wait_until(
        lambda: (
            sorted(queued_event_ids(redis_client)) == sorted(map(str, event_ids))
            and pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)
        ),
        timeout_s=10,
        message="events dispatched within seconds although the poll interval is 60 s",
    )
