"""Relay benchmark: throughput while producers run, drain rate of a backlog, commit → enqueued
latency.

Durable servers (bench/_servers.py): PostgreSQL with fsync and synchronous_commit on, Redis with
`appendfsync always` (the relay deletes outbox rows once Redis answered, so it trusts that
answer to be on disk), or DATABASE_URL / REDIS_URL as they are. Producers are separate
processes writing events through the product's `emit_many()` for a tenant created here; the
relay's claim loops run in this process at production defaults (RELAY_CONCURRENCY loops,
RELAY_BATCH_SIZE rows a claim). Every phase ends by reading the Redis queue: each event
committed is there exactly once, under its deterministic message id.

- sustained: events enqueued (in Redis, the relay's claim committed) while the producers run,
  divided by the producers' window; the outbox backlog is sampled through the window.
- drain: a backlog written in one statement, then the relay alone until it is empty.
- latency: producers paced at --latency-rate in all, one event a transaction, several in
  flight (with fsync on, one stream alone commits at the disk's pace); the time from a
  producer sending COMMIT to the relay's Redis acknowledgement, on this machine's clock. That
  includes the commit's own flush (an upper bound); the table also shows it from COMMIT's
  return (a lower bound, negative when the relay acknowledged before the producer resumed).

    python bench/relay.py [--json] [--drain-events 100000] [--sustained-s 10] [--latency-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import redis
from outbox_relay.messages import OutboxRow
from outbox_relay.relay import OutboxRelay

from _servers import (
    Servers,
    check,
    durable_servers,
    prepare_shared,
    print_settings,
    quiet_logging,
    server_settings,
)
from _servers import settings_lines as server_lines
from socialflow.db.engine import libpq_url
from socialflow.outbox.events import AuditLog, DomainEvent
from socialflow.outbox.routing import Route, by_event_type
from socialflow.settings import Settings
from socialflow.workers.broker import NAMESPACE


class BenchHappened(DomainEvent, frozen=True, kw_only=True):
    """The benchmark's event, with a payload the size of a typical one."""

    event_type = "bench.happened"
    aggregate_type = "post"
    aggregate_key = "post_id"
    audit_log = AuditLog.NONE

    post_id: str
    status: str = "approved"
    by: str = "user-42"
    note: str = "x" * 120


TENANT = "bench"
QUEUE, ACTOR = "bench", "bench_actor"
QUEUE_KEY, MESSAGES_KEY = f"{NAMESPACE}:{QUEUE}", f"{NAMESPACE}:{QUEUE}.msgs"
ROUTES = by_event_type({BenchHappened: (Route(ACTOR, QUEUE),)})
PAYLOAD = BenchHappened(post_id="12345").payload()
# Production defaults, whatever this shell's environment says.
DEFAULT_BATCH = Settings.model_fields["relay_batch_size"].default
DEFAULT_CONCURRENCY = Settings.model_fields["relay_concurrency"].default
BACKLOG_SAMPLE_S = 0.2


# -- producers (child processes) -------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What one producer process writes: `streams` transactions at a time, each of
    `per_transaction` events, paced to `rate_per_s` for the process (None: as fast as it can).

    With fsync on, one stream commits at the disk's pace (a few ms a commit): a steady 1,000
    one-event transactions a second needs several in flight, as an API serving many requests
    has (PostgreSQL then flushes them in group commits).
    """

    seconds: float
    per_transaction: int
    streams: int = 1
    rate_per_s: float | None = None


def produce(database_url: str, load: Load, start_together: Any, results: Any) -> None:
    """Emit events through `emit_many()` for `load.seconds` once every producer is connected;
    report (start, end, [(event id, COMMIT sent, COMMIT returned)])."""
    quiet_logging()
    asyncio.run(_produce(database_url, load, start_together, results))


async def _produce(database_url: str, load: Load, start_together: Any, results: Any) -> None:
    from sqlalchemy import text

    from socialflow.db.engine import create_engine, create_session_factory
    from socialflow.outbox import emit_many

    settings = Settings(database_url=database_url, db_pool_size=load.streams, _env_file=None)
    engine = create_engine(settings)
    factory = create_session_factory(engine)

    async def connect() -> None:
        async with factory() as session:
            await session.execute(text("SELECT 1"))

    await asyncio.gather(*(connect() for _ in range(load.streams)))  # before the window opens
    await asyncio.to_thread(start_together.wait)
    committed: list[tuple[str, float, float]] = []
    start = time.time()

    async def stream(number: int) -> None:
        rate = load.rate_per_s / load.streams if load.rate_per_s else None
        offset = number / load.rate_per_s if load.rate_per_s else 0.0  # streams interleave
        sent = 0
        while (now := time.time()) - start < load.seconds:
            if rate is not None and (due := start + offset + sent / rate) > now:
                await asyncio.sleep(due - now)
            events = [
                BenchHappened(post_id=f"{number}-{sent + i}") for i in range(load.per_transaction)
            ]
            async with factory() as session:
                async with session.begin():
                    ids = await emit_many(session, events, tenant=TENANT)
                    sent_at = time.time()  # the block's end sends COMMIT
                returned_at = time.time()
            committed.extend((str(i), sent_at, returned_at) for i in ids)
            sent += load.per_transaction

    await asyncio.gather(*(stream(n) for n in range(load.streams)))
    end = max((returned for _, _, returned in committed), default=time.time())
    await engine.dispose()
    results.put((start, end, committed))


class Producers:
    """Producer processes that start their window together, and what they committed."""

    def __init__(self, database_url: str, count: int, load: Load) -> None:
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.start_together = ctx.Barrier(count)
        self.processes = [
            ctx.Process(
                target=produce, args=(database_url, load, self.start_together, self.results)
            )
            for _ in range(count)
        ]
        for process in self.processes:
            process.start()

    async def collect(self) -> tuple[float, float, dict[str, tuple[float, float]]]:
        """(window start, window end, {event id: (COMMIT sent, COMMIT returned)}) once every
        producer is done."""
        committed: dict[str, tuple[float, float]] = {}
        starts, ends = [], []
        for _ in self.processes:
            start, end, triples = await asyncio.to_thread(self.results.get)
            starts.append(start)
            ends.append(end)
            committed.update((event_id, (sent, returned)) for event_id, sent, returned in triples)
        for process in self.processes:
            process.join()
            check(process.exitcode == 0, f"a producer exited with {process.exitcode}")
        return min(starts), max(ends), committed


# -- setup and proof ---------------------------------------------------------------------------


def create_tenant(database_url: str) -> None:
    """The tenant the events name: `emit()` refuses a slug that names no live tenant."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(
            "WITH agency AS (INSERT INTO shared.agencies (slug, name) VALUES ('bench', 'bench') "
            "ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id) "
            "INSERT INTO shared.tenants (slug, name, agency_id, plan, schema_name) "
            "SELECT %s, %s, id, 'pro', 't_bench' FROM agency "
            "WHERE NOT EXISTS (SELECT FROM shared.tenants WHERE slug = %s)",
            (TENANT, TENANT, TENANT),
        )


def reset(database_url: str, redis_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("TRUNCATE shared.outbox, shared.outbox_dead_letter")
        conn.execute("VACUUM ANALYZE shared.outbox")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


def prewrite(database_url: str, count: int) -> set[str]:
    """A backlog in one statement: the rows `emit()` writes, tenant id included."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO shared.outbox (event_id, tenant, tenant_id, aggregate_type, "
            "aggregate_id, event_type, payload) "
            "SELECT gen_random_uuid(), t.slug, t.id, 'post', g::text, 'bench.happened', %s::jsonb "
            "FROM shared.tenants t, generate_series(1, %s) g WHERE t.slug = %s "
            "RETURNING event_id",
            (json.dumps(PAYLOAD), count, TENANT),
        ).fetchall()
        conn.execute("VACUUM ANALYZE shared.outbox")
    check(len(rows) == count, f"prewrote {len(rows)} of {count} events")
    return {str(row[0]) for row in rows}


def verify_delivered(database_url: str, redis_url: str, committed: set[str]) -> None:
    """Every committed event is in the queue exactly once, and nothing is left or dead."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        queued = [str(message_id) for message_id in client.lrange(QUEUE_KEY, 0, -1)]
        stored = client.hlen(MESSAGES_KEY)
    finally:
        client.close()
    wanted = {f"{event_id}.{ACTOR}" for event_id in committed}
    unique = set(queued)
    check(len(queued) == len(unique), f"{len(queued) - len(unique)} duplicates in the queue")
    check(
        unique == wanted,
        f"{len(wanted - unique)} committed events missing from the queue, "
        f"{len(unique - wanted)} unexpected",
    )
    check(stored == len(wanted), f"{stored} stored messages for {len(wanted)} events")
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM shared.outbox").fetchone()
        dead = conn.execute("SELECT count(*) FROM shared.outbox_dead_letter").fetchone()
    check(left == (0,) and dead == (0,), f"outbox left {left}, dead letters {dead}")


# -- the relay ---------------------------------------------------------------------------------


def make_relays(
    servers: Servers, batch: int, concurrency: int, on_dispatched: Callable[..., None]
) -> list[OutboxRelay]:
    """The claim loops one `socialflow relay` process runs."""
    assert servers.redis_url is not None
    return [
        OutboxRelay(
            database_url=libpq_url(servers.database_url),
            redis_url=servers.redis_url,
            routes=ROUTES,
            batch_size=batch,
            on_dispatched=on_dispatched,
        )
        for _ in range(concurrency)
    ]


class RunningRelay:
    """The relay's loops as tasks of this process, recording each event's acknowledgement."""

    def __init__(self, servers: Servers, batch: int, concurrency: int) -> None:
        self.acked: dict[str, float] = {}
        self.last_ack = 0.0
        self.stop = asyncio.Event()
        relays = make_relays(servers, batch, concurrency, self._record)
        self.started = time.perf_counter()
        self.task = asyncio.gather(*(relay.run(self.stop) for relay in relays))

    def _record(self, rows: list[OutboxRow], at: datetime) -> None:
        stamp = at.timestamp()
        for row in rows:
            self.acked[str(row.event_id)] = stamp
        self.last_ack = time.perf_counter()

    async def until(self, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            if self.task.done():
                await self.task  # raises the error that ended a loop
                check(False, "the relay stopped before its work was done")
            await asyncio.sleep(0.01)
        self.stop.set()
        await self.task


# -- measurements ------------------------------------------------------------------------------


async def measure_drain(servers: Servers, events: int, batch: int, concurrency: int) -> float:
    assert servers.redis_url is not None
    reset(servers.database_url, servers.redis_url)
    written = prewrite(servers.database_url, events)
    relay = RunningRelay(servers, batch, concurrency)
    await relay.until(lambda: len(relay.acked) >= events, timeout_s=600)
    elapsed = relay.last_ack - relay.started  # not counting the loops' shutdown
    check(len(relay.acked) == events, f"drained {len(relay.acked)} of {events} within 600 s")
    verify_delivered(servers.database_url, servers.redis_url, written)
    return events / elapsed


async def sample_backlog(database_url: str, stop: asyncio.Event) -> list[tuple[float, int]]:
    """(time, rows in the outbox) every BACKLOG_SAMPLE_S until `stop`."""
    samples: list[tuple[float, int]] = []
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as conn:
        while not stop.is_set():
            row = await (await conn.execute("SELECT count(*) FROM shared.outbox")).fetchone()
            samples.append((time.time(), int(row[0]) if row else 0))
            await asyncio.sleep(BACKLOG_SAMPLE_S)
    return samples


async def measure_sustained(
    servers: Servers, producers: int, load: Load, batch: int, concurrency: int
) -> dict[str, Any]:
    assert servers.redis_url is not None
    reset(servers.database_url, servers.redis_url)
    relay = RunningRelay(servers, batch, concurrency)
    producing = Producers(servers.database_url, producers, load)
    produced = asyncio.Event()
    sampler = asyncio.create_task(sample_backlog(servers.database_url, produced))
    start, end, committed = await producing.collect()
    produced.set()
    samples = await sampler
    await relay.until(lambda: len(relay.acked) >= len(committed), timeout_s=300)
    check(
        len(relay.acked) == len(committed),
        f"dispatched {len(relay.acked)} != committed {len(committed)}",
    )
    verify_delivered(servers.database_url, servers.redis_url, set(committed))
    window = end - start
    in_window = [n for t, n in samples if start <= t <= end] or [0]
    return {
        "events": len(committed),
        "dispatched": len(relay.acked),
        "window_s": window,
        "produced_per_s": len(committed) / window,
        "enqueued_per_s": sum(1 for t in relay.acked.values() if start <= t <= end) / window,
        "backlog_max": max(in_window),
        "backlog_final": in_window[-1],
        "backlog_samples": len(in_window),
    }


async def measure_latency(
    servers: Servers, producers: int, load: Load, batch: int, concurrency: int
) -> dict[str, Any]:
    assert servers.redis_url is not None
    reset(servers.database_url, servers.redis_url)
    relay = RunningRelay(servers, batch, concurrency)
    start, end, committed = await Producers(servers.database_url, producers, load).collect()
    await relay.until(lambda: len(relay.acked) >= len(committed), timeout_s=120)
    check(
        len(relay.acked) == len(committed),
        f"dispatched {len(relay.acked)} != committed {len(committed)}",
    )
    verify_delivered(servers.database_url, servers.redis_url, set(committed))
    # Two bounds of one delay, neither clamped. From COMMIT sent: includes the commit's own
    # flush (an upper bound). From COMMIT returned: the producer may resume after the relay
    # already acknowledged the event, which shows as a negative value (a lower bound).
    acked = [(relay.acked[e], sent, returned) for e, (sent, returned) in committed.items()]
    return {
        "events": len(committed),
        "rate_per_s": len(committed) / (end - start),
        **distribution([(at - sent) * 1000 for at, sent, _ in acked]),
        "from_return": distribution([(at - returned) * 1000 for at, _, returned in acked]),
    }


def distribution(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "negative": sum(1 for v in ordered if v < 0),
    }


# -- the run -----------------------------------------------------------------------------------


def run_settings(args: argparse.Namespace) -> dict[str, str]:
    def default_or_not(value: int, default: int) -> str:
        return "the default" if value == default else f"NOT the default {default}"

    loops = default_or_not(args.concurrency, DEFAULT_CONCURRENCY)
    batch = default_or_not(args.batch, DEFAULT_BATCH)
    return {
        "relay": f"1 process (this one), {args.concurrency} claim loops (RELAY_CONCURRENCY, "
        f"{loops}), {args.batch} rows a claim (RELAY_BATCH_SIZE, {batch})",
        "sustained": f"{args.producers} producer processes x {args.streams} transaction(s) in "
        f"flight x {args.per_transaction} events a transaction, unpaced, {args.sustained_s:g} s",
        "drain": f"{args.drain_events:,} events written before the relay starts",
        "latency": f"{args.latency_producers} producer processes x {args.latency_streams} "
        f"transactions in flight x 1 event a transaction, paced at {args.latency_rate:,.0f}/s "
        f"in all, {args.latency_s:g} s",
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with durable_servers() as servers:
        # Seeding runs its own event loop: in a thread, beside this one.
        await asyncio.to_thread(prepare_shared, servers.database_url)
        create_tenant(servers.database_url)
        lines = server_lines(servers, server_settings(servers))
        drain = await measure_drain(servers, args.drain_events, args.batch, args.concurrency)
        tuned = None
        if args.tuned_drain_batch:
            tuned = await measure_drain(
                servers, args.drain_events, args.tuned_drain_batch, args.concurrency
            )
        flat_out = Load(args.sustained_s, args.per_transaction, args.streams)
        sustained = await measure_sustained(
            servers, args.producers, flat_out, args.batch, args.concurrency
        )
        paced = Load(
            args.latency_s, 1, args.latency_streams, args.latency_rate / args.latency_producers
        )
        latency = await measure_latency(
            servers, args.latency_producers, paced, args.batch, args.concurrency
        )
    return {
        "sustained_events_per_s": round(sustained["enqueued_per_s"]),
        "drain_events_per_s": round(drain),
        "latency_p50_ms": round(latency["p50_ms"], 2),
        "latency_p95_ms": round(latency["p95_ms"], 2),
        "latency_p99_ms": round(latency["p99_ms"], 2),
        "_detail": {
            "servers": lines,
            "run": run_settings(args),
            "sustained": sustained,
            "latency": latency,
            "tuned_drain_events_per_s": tuned,
            "args": vars(args),
        },
    }


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    detail = result["_detail"]
    args, sustained, latency = detail["args"], detail["sustained"], detail["latency"]
    back = latency["from_return"]
    behind_ms = 1000 / max(sustained["produced_per_s"], 1e-9)
    rows = [
        (
            "sustained: enqueued while producers ran",
            f"{result['sustained_events_per_s']:,}/s",
            ">= 5,000",
        ),
        ("  committed by producers in that window", f"{sustained['produced_per_s']:,.0f}/s", ""),
        (
            "  outbox backlog in the window, max",
            f"{sustained['backlog_max']:,} events",
            f"= {sustained['backlog_max'] * behind_ms:,.0f} ms of production",
        ),
        (
            "  outbox backlog at the window's end",
            f"{sustained['backlog_final']:,} events",
            f"= {sustained['backlog_final'] * behind_ms:,.0f} ms of production",
        ),
        (
            "  dispatched == committed (Redis read)",
            f"{sustained['dispatched']:,}",
            f"== {sustained['events']:,}",
        ),
        (
            f"drain of a backlog, batch {args['batch']}",
            f"{result['drain_events_per_s']:,}/s",
            ">= 20,000",
        ),
    ]
    if detail["tuned_drain_events_per_s"] is not None:
        rows.append(
            (
                f"  tuned variant, batch {args['tuned_drain_batch']:,} (not the default)",
                f"{detail['tuned_drain_events_per_s']:,.0f}/s",
                "",
            )
        )
    rows += [
        (
            f"latency p50 @ {latency['rate_per_s']:,.0f}/s reached",
            f"{result['latency_p50_ms']} ms",
            "<= 5 @ 1,000/s",
        ),
        ("latency p95", f"{result['latency_p95_ms']} ms", ""),
        ("latency p99", f"{result['latency_p99_ms']} ms", "<= 25 @ 1,000/s"),
        ("latency min / max", f"{latency['min_ms']:.2f} / {latency['max_ms']:.2f} ms", ""),
        (
            "  negative (clock or ordering fault)",
            f"{latency['negative']:,} of {latency['events']:,}",
            "kept in the percentiles, not clamped",
        ),
        (
            "  from COMMIT returned: p50 / p99",
            f"{back['p50_ms']:.2f} / {back['p99_ms']:.2f} ms",
            "a lower bound",
        ),
        (
            "  from COMMIT returned: negative",
            f"{back['negative']:,} of {latency['events']:,}",
            "acked before the producer resumed; kept",
        ),
    ]
    return rows


def print_table(result: dict[str, Any], file: Any = sys.stdout) -> None:
    print_settings(result["_detail"]["servers"], result["_detail"]["run"], file=file)
    rows = table_rows(result)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>18}  target", file=file)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>18}  {target}", file=file)
    print("every event committed was found exactly once in the Redis queue", file=file)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="table to stderr, one JSON line")
    parser.add_argument("--drain-events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="RELAY_BATCH_SIZE")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="RELAY_CONCURRENCY"
    )
    parser.add_argument(
        "--tuned-drain-batch", type=int, default=2_000, help="an extra drain row; 0 skips it"
    )
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--streams", type=int, default=1, help="transactions in flight each")
    parser.add_argument("--per-transaction", type=int, default=50, help="events per producer tx")
    parser.add_argument("--sustained-s", type=float, default=10.0)
    parser.add_argument("--latency-s", type=float, default=10.0)
    parser.add_argument("--latency-rate", type=float, default=1_000.0, help="events/s in all")
    parser.add_argument("--latency-producers", type=int, default=2)
    parser.add_argument("--latency-streams", type=int, default=4, help="transactions in flight")
    arguments = parser.parse_args()
    quiet_logging()
    outcome = asyncio.run(main(arguments))
    if arguments.json:
        print_table(outcome, file=sys.stderr)
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))
    else:
        print_table(outcome)
