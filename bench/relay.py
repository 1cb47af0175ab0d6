"""Relay benchmark: sustained throughput, backlog drain rate, commit → enqueued latency.

Runs against embedded PostgreSQL + Redis (or DATABASE_URL / REDIS_URL). Producers are separate
processes writing events through the product's `emit()`; the relay runs in this process.

    python bench/relay.py [--json] [--drain-events 100000] [--sustained-s 10] [--latency-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from outbox_relay.messages import OutboxRow
from outbox_relay.relay import OutboxRelay

from socialflow import embedded
from socialflow.db.engine import libpq_url
from socialflow.db.migrate import upgrade_shared
from socialflow.outbox.routing import Route
from socialflow.settings import Settings

QUEUE = "bench"
ROUTES = {"bench.happened": (Route("bench_actor", QUEUE),)}
CONCURRENCY = Settings(_env_file=None).relay_concurrency  # type: ignore[call-arg]
PAYLOAD = {"post_id": 12345, "status": "approved", "by": "user-42", "note": "x" * 120}


# -- producers (child processes) -------------------------------------------------------------


def produce(
    database_url: str,
    seconds: float,
    per_transaction: int,
    rate_per_s: float | None,
    results: Any,
) -> None:
    """Emit events through `emit()` for `seconds`; report (event id, commit time) pairs."""
    asyncio.run(_produce(database_url, seconds, per_transaction, rate_per_s, results))


async def _produce(
    database_url: str, seconds: float, per_transaction: int, rate_per_s: float | None, results: Any
) -> None:
    from socialflow.db.engine import create_engine, create_session_factory
    from socialflow.outbox import EventSpec, emit_many
    from socialflow.settings import Settings

    engine = create_engine(Settings(database_url=database_url, db_pool_size=2, _env_file=None))  # type: ignore[call-arg]
    factory = create_session_factory(engine)
    committed: list[tuple[str, float]] = []
    start = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - start < seconds:
        if rate_per_s is not None:
            due = start + sent / rate_per_s
            if due > now:
                await asyncio.sleep(due - now)
        specs = [
            EventSpec("bench.happened", "post", sent + i, PAYLOAD, "bench")
            for i in range(per_transaction)
        ]
        async with factory() as session, session.begin():
            ids = await emit_many(session, specs, routes=ROUTES)
        at = time.time()
        committed.extend((str(i), at) for i in ids)
        sent += per_transaction
    await engine.dispose()
    results.put(committed)


# -- measurements ------------------------------------------------------------------------------


def reset(database_url: str, redis_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("TRUNCATE shared.outbox, shared.outbox_dead_letter")
        conn.execute("VACUUM ANALYZE shared.outbox")
    redis.Redis.from_url(redis_url).flushdb()


def prewrite(database_url: str, count: int) -> None:
    """A backlog in one statement (the rows `emit()` writes, without 100k round trips)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO shared.outbox (event_id, tenant, aggregate_type, aggregate_id, "
            "event_type, payload) SELECT gen_random_uuid(), 'bench', 'post', g::text, "
            "'bench.happened', %s::jsonb FROM generate_series(1, %s) g",
            (json.dumps(PAYLOAD), count),
        )
        conn.execute("VACUUM ANALYZE shared.outbox")


async def run_relay_until(
    relays: list[OutboxRelay], done: Callable[[], bool], timeout_s: float
) -> None:
    stop = asyncio.Event()
    task = asyncio.gather(*(relay.run(stop) for relay in relays))
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110 - a plain predicate
        await asyncio.sleep(0.01)
    stop.set()
    await task


def make_relays(database_url: str, redis_url: str, batch_size: int, **kw: Any) -> list[OutboxRelay]:
    """The claim loops one `socialflow relay` process runs (RELAY_CONCURRENCY of them)."""
    return [
        OutboxRelay(
            database_url=libpq_url(database_url),
            redis_url=redis_url,
            routes=ROUTES,
            batch_size=batch_size,
            **kw,
        )
        for _ in range(CONCURRENCY)
    ]


async def measure_drain(database_url: str, redis_url: str, events: int, batch: int) -> float:
    reset(database_url, redis_url)
    prewrite(database_url, events)
    dispatched = 0

    def count(rows: list[OutboxRow], _at: datetime) -> None:
        nonlocal dispatched
        dispatched += len(rows)

    relays = make_relays(database_url, redis_url, batch, on_dispatched=count)
    start = time.perf_counter()
    await run_relay_until(relays, lambda: dispatched >= events, timeout_s=300)
    elapsed = time.perf_counter() - start
    assert redis.Redis.from_url(redis_url).llen(f"dramatiq:{QUEUE}") == events
    return events / elapsed


def start_producers(
    database_url: str, count: int, seconds: float, per_tx: int, rate: float | None
) -> tuple[list[mp.Process], Any]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=produce, args=(database_url, seconds, per_tx, rate, results))
        for _ in range(count)
    ]
    for p in procs:
        p.start()
    return procs, results


async def collect(procs: list[mp.Process], results: Any) -> dict[str, float]:
    committed: dict[str, float] = {}
    for _ in procs:
        committed.update(dict(await asyncio.to_thread(results.get)))
    for p in procs:
        p.join()
    return committed


async def measure_sustained(
    database_url: str, redis_url: str, seconds: float, producers: int, per_tx: int, batch: int
) -> dict[str, float]:
    reset(database_url, redis_url)
    dispatched = 0
    first_at: float | None = None
    last_at = 0.0

    def count(rows: list[OutboxRow], _at: datetime) -> None:
        nonlocal dispatched, first_at, last_at
        now = time.perf_counter()
        first_at = first_at or now
        last_at = now
        dispatched += len(rows)

    relays = make_relays(database_url, redis_url, batch, on_dispatched=count)
    procs, results = start_producers(database_url, producers, seconds, per_tx, None)
    stop = asyncio.Event()
    task = asyncio.gather(*(relay.run(stop) for relay in relays))
    committed = await collect(procs, results)
    await run_relay_until_drained(database_url)
    stop.set()
    await task
    window = max(last_at - (first_at or last_at), 1e-9)
    return {
        "events": len(committed),
        "produced_per_s": len(committed) / seconds,
        "enqueued_per_s": dispatched / window,
        "dispatched": dispatched,
    }


async def run_relay_until_drained(database_url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as conn:
        while time.monotonic() < deadline:
            row = await (await conn.execute("SELECT count(*) FROM shared.outbox")).fetchone()
            if row and row[0] == 0:
                return
            await asyncio.sleep(0.05)


async def measure_latency(
    database_url: str, redis_url: str, seconds: float, rate: float, batch: int
) -> dict[str, float]:
    reset(database_url, redis_url)
    acked: dict[str, float] = {}

    def record(rows: list[OutboxRow], at: datetime) -> None:
        stamp = at.timestamp()
        for row in rows:
            acked[str(row.event_id)] = stamp

    relays = make_relays(database_url, redis_url, batch, on_dispatched=record)
    stop = asyncio.Event()
    task = asyncio.gather(*(relay.run(stop) for relay in relays))
    await asyncio.sleep(0.5)
    procs, results = start_producers(database_url, 1, seconds, 1, rate)
    committed = await collect(procs, results)
    await run_relay_until_drained(database_url)
    stop.set()
    await task
    latencies = sorted(max(0.0, acked[e] - t) * 1000 for e, t in committed.items() if e in acked)
    assert len(latencies) == len(committed), "every committed event must be enqueued"
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "events": len(latencies),
        "rate_per_s": len(latencies) / seconds,
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "max_ms": latencies[-1],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sf-bench-") as data_dir,
        embedded.services(
            os.environ.get("DATABASE_URL"),
            os.environ.get("REDIS_URL"),
            Path(data_dir),
            throwaway=True,
        ) as urls,
    ):
        upgrade_shared(urls.database_url)
        drain = await measure_drain(
            urls.database_url, urls.redis_url, args.drain_events, args.drain_batch
        )
        sustained = await measure_sustained(
            urls.database_url,
            urls.redis_url,
            args.sustained_s,
            args.producers,
            args.per_transaction,
            args.batch,
        )
        latency = await measure_latency(
            urls.database_url, urls.redis_url, args.latency_s, args.latency_rate, args.batch
        )
    return {
        "sustained_events_per_s": round(sustained["enqueued_per_s"]),
        "drain_events_per_s": round(drain),
        "latency_p50_ms": round(latency["p50_ms"], 2),
        "latency_p95_ms": round(latency["p95_ms"], 2),
        "latency_p99_ms": round(latency["p99_ms"], 2),
        "_detail": {"sustained": sustained, "latency": latency, "args": vars(args)},
    }


def print_table(result: dict[str, Any]) -> None:
    detail = result["_detail"]
    rows = [
        (
            "sustained, enqueued to Redis",
            f"{result['sustained_events_per_s']:,} events/s",
            ">= 5,000",
        ),
        ("  produced by producers", f"{detail['sustained']['produced_per_s']:,.0f} events/s", ""),
        ("drain of a backlog", f"{result['drain_events_per_s']:,} events/s", ">= 20,000"),
        ("latency p50 @ 1,000/s", f"{result['latency_p50_ms']} ms", "<= 5"),
        ("latency p95", f"{result['latency_p95_ms']} ms", ""),
        ("latency p99", f"{result['latency_p99_ms']} ms", "<= 25"),
        ("latency max", f"{detail['latency']['max_ms']:.2f} ms", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>20}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>20}  {target}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--drain-events", type=int, default=100_000)
    parser.add_argument("--drain-batch", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--per-transaction", type=int, default=50, help="events per producer tx")
    parser.add_argument("--sustained-s", type=float, default=10.0)
    parser.add_argument("--latency-s", type=float, default=10.0)
    parser.add_argument("--latency-rate", type=float, default=1_000.0)
    arguments = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    outcome = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))
    else:
        print_table(outcome)
