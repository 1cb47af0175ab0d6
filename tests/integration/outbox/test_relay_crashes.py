"""Crashes and outages lose nothing: a relay killed mid-batch, Redis stopped and restarted."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from outbox_relay import metrics
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.engine import libpq_url
from socialflow.embedded import EmbeddedRedis
from socialflow.workers.broker import NAMESPACE
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import NOTES_QUEUE, emit_notes, queued_event_ids, wait_until
from tests.integration.worker_fixtures import RunningWorker

Factory = async_sessionmaker[AsyncSession]


async def test_a_relay_killed_between_enqueue_and_commit_loses_nothing_and_applies_once(
    make_relay: RelayFactory,
    running_relays: Any,
    session_factory: Factory,
    database_url: str,
    redis_url: str,
    redis_client: redis_lib.Redis,
    pg: psycopg.Connection[Any],
    project_root: Path,
    test_worker: RunningWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    emitted = await emit_notes(session_factory, 1_000, tenant="alpha")
    doomed = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
        [
            sys.executable,
            "-m",
            "tests.integration.outbox.relay_process",
            libpq_url(database_url),
            redis_url,
            "--hold-after-enqueue",
            "--batch-size",
            "200",
        ],
        cwd=project_root,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert doomed.stdout is not None
    try:
        # 200 messages are in Redis and the claim is not committed when it prints HELD.
        lines = [await asyncio.to_thread(doomed.stdout.readline) for _ in range(3)]
        assert "HELD" in [line.strip() for line in lines], lines
    finally:
        doomed.kill()
        doomed.wait()

    # Its claim died with its connection: every row is still in the outbox.
    await wait_until(
        lambda: (
            pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'socialflow-relay' "
                "AND state = 'idle in transaction'"
            ).fetchone()
            == (0,)
        ),
        message="the killed relay's backend gone",
    )
    assert pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (1_000,)

    running_relays(make_relay(batch_size=200))
    await wait_until(
        lambda: pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,),
        message="backlog drained by the restarted relay",
    )
    # At least once: every event reached the broker; the killed batch was sent twice, and its
    # messages still queued then were not added again (deterministic ids).
    await wait_until(
        lambda: (
            redis_client.hlen(f"{NAMESPACE}:{NOTES_QUEUE}.msgs") == 0
            and pg.execute("SELECT count(*) FROM t_alpha.notes").fetchone() == (1_000,)
        ),
        timeout_s=60,
        message="every message consumed",
    )
    # Applied once: one note per event, however many of the killed batch ran twice.
    notes = pg.execute("SELECT event_id, count(*) FROM t_alpha.notes GROUP BY 1").fetchall()
    assert {row[0] for row in notes} == set(emitted)
    assert {row[1] for row in notes} == {1}
    skipped = [
        r
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "actor.duplicate_skipped"
    ]
    assert len(skipped) <= 200  # only the killed batch can be delivered twice


async def test_redis_down_for_seconds_loses_nothing_and_the_backlog_drains_by_itself(
    make_relay: RelayFactory,
    running_relays: Any,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    # Redis of our own, persisting to disk across the restart like a production one.
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    client = redis_lib.Redis.from_url(url)
    failures_before = metrics.BATCH_FAILURES._value.get()
    try:
        running_relays(make_relay(redis_url=url, batch_size=100))
        emitted: list[Any] = []

        async def produce(seconds: float) -> None:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while loop.time() < end:
                emitted.extend(await emit_notes(session_factory, 20, per_transaction=20))
                await asyncio.sleep(0.05)

        await produce(1.0)
        server.stop()
        await produce(3.0)  # events keep committing while Redis is down
        assert pg.execute("SELECT count(*) FROM shared.outbox").fetchone()[0] > 0  # type: ignore[index]
        server.start()
        await produce(1.0)

        await wait_until(
            lambda: pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,),
            timeout_s=60,
            message="backlog drained after Redis came back",
        )
        dispatched = queued_event_ids(client)
        assert set(dispatched) == {str(e) for e in emitted}
        assert metrics.BATCH_FAILURES._value.get() > failures_before
    finally:
        client.close()
        server.stop()


async def test_with_required_replicas_a_batch_no_replica_confirmed_stays_in_the_outbox(
    make_relay: RelayFactory,
    session_factory: Factory,
    pg: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    from tests.e2e.conftest import free_port

    port = free_port()
    primary = EmbeddedRedis(
        tmp_path / "primary",
        throwaway=True,
        extra_args=["--port", str(port), "--bind", "127.0.0.1"],
    )
    replica = EmbeddedRedis(
        tmp_path / "replica", throwaway=True, extra_args=["--replicaof", "127.0.0.1", str(port)]
    )
    url = primary.start()
    client = redis_lib.Redis.from_url(url)
    try:
        replica.start()
        await wait_until(
            lambda: client.info("replication").get("connected_slaves") == 1,
            message="replica connected",
        )
        relay = make_relay(redis_url=url, redis_min_replicas=1, redis_wait_timeout_ms=200)
        await emit_notes(session_factory, 3)
        assert await relay.dispatch_batch() == 3  # the replica confirmed the batch

        replica.stop()
        await wait_until(
            lambda: client.info("replication").get("connected_slaves") == 0,
            message="replica gone",
        )
        kept = await emit_notes(session_factory, 2)
        with pytest.raises(RedisError, match="replica"):
            await relay.dispatch_batch()
        # Not confirmed, not deleted: the rows wait for the next attempt.
        remaining = {r[0] for r in pg.execute("SELECT event_id FROM shared.outbox")}
        assert remaining == set(kept)
    finally:
        client.close()
        replica.stop()
        primary.stop()
