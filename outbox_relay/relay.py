"""The relay loop: claim due outbox rows, enqueue them to Dramatiq's Redis, then commit the claim.

One batch is one PostgreSQL transaction and one Redis round trip:

1. `DELETE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …` claims exactly the rows
   it returns; other relays skip them, and a rollback puts them back.
2. Rows no retry can dispatch go to the dead-letter table in the same transaction.
3. The messages go to Redis in one MULTI/EXEC round trip: per queue, a script stores each
   message and pushes its id only if that id is not there yet (message ids are deterministic,
   one per event and actor), so a batch sent twice adds nothing twice.
4. Only after Redis acknowledged does the claim commit. A crash between 3 and 4 re-sends the
   batch later: delivery is at least once, and actors apply each event once. Rows whose queue
   answered a command error (not an outage) go back to the outbox with their attempt counted,
   and after `max_enqueue_attempts` to the dead-letter table, in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import redis
import structlog
from psycopg.rows import args_row
from redis.exceptions import NoScriptError, RedisError

from outbox_relay import history, metrics
from outbox_relay.messages import (
    EncodedMessage,
    MessageEncoder,
    OutboxRow,
    UndeliverableError,
    group_by_queue,
)
from socialflow.db.engine import libpq_url
from socialflow.lib import telemetry
from socialflow.outbox.emit import NOTIFY_CHANNEL, NOTIFY_INTERVAL_S
from socialflow.outbox.routing import RoutingTable, Subscription
from socialflow.settings import Settings
from socialflow.workers.broker import NAMESPACE

log = structlog.get_logger("outbox_relay")


def product_routes() -> RoutingTable:
    """The product's routing table (imported when first needed: it imports every feature's
    events, which relays given their own table, as in tests, do not need)."""
    from socialflow.event_routing import ROUTES

    return ROUTES


def product_subscription() -> Subscription:
    from socialflow.event_routing import SUBSCRIBED

    return SUBSCRIBED


def product_internal_types() -> frozenset[str]:
    from socialflow.event_routing import INTERNAL_EVENT_TYPES

    return INTERNAL_EVENT_TYPES


# The claimed rows of tenants also go into the event history, in the same statement (the
# write path pays nothing): when they took effect (a deferred event: when it fell due), once
# (a row retried after a Redis refusal has attempts > 0 and is there already; a requeued dead
# letter keeps its times and meets its own row).
CLAIM_SQL = """
WITH claimed AS (
    DELETE FROM shared.outbox
    WHERE id IN (
        SELECT id FROM shared.outbox
        WHERE available_at <= now()
        ORDER BY available_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, event_id, tenant, tenant_id, aggregate_type, aggregate_id, event_type, payload,
              headers, available_at, created_at, attempts, last_error
), kept AS (
    INSERT INTO shared.event_history
        (occurred_at, event_id, tenant_id, tenant, aggregate_type, aggregate_id, event_type,
         payload, request_id)
    SELECT greatest(created_at, available_at), event_id, tenant_id, tenant, aggregate_type,
           aggregate_id, event_type, payload, left(headers->>'request_id', 128)
    FROM claimed
    WHERE tenant_id IS NOT NULL AND attempts = 0 AND event_type <> ALL(%(internal)s)
    ORDER BY available_at, id
    ON CONFLICT DO NOTHING
)
SELECT
    id, event_id, tenant, tenant_id, event_type, available_at, created_at, attempts, last_error,
    json_build_object(
        'event_id', event_id, 'event_type', event_type, 'tenant', tenant,
        'tenant_id', tenant_id, 'aggregate_type', aggregate_type,
        'aggregate_id', aggregate_id, 'payload', payload, 'headers', headers,
        'occurred_at', created_at
    )::text AS arg,
    json_build_object(
        'tenant', tenant, 'tenant_id', tenant_id, 'request_id', headers->'request_id',
        'traceparent', headers->'traceparent'
    )::text AS context,
    tenant_id IS NOT NULL
        AND EXISTS (SELECT 1 FROM shared.webhook_tenants w WHERE w.tenant_id = claimed.tenant_id)
        AS subscribed
FROM claimed
"""
DEAD_LETTER_SQL = """
INSERT INTO shared.outbox_dead_letter
    (id, event_id, tenant, tenant_id, aggregate_type, aggregate_id, event_type, payload,
     headers, available_at, created_at, error, attempts)
SELECT %(id)s, %(event_id)s, %(tenant)s, %(tenant_id)s, arg->>'aggregate_type',
       arg->>'aggregate_id', %(event_type)s, arg->'payload', arg->'headers', %(available_at)s,
       %(created_at)s, %(error)s, greatest(%(attempts)s, 1)
FROM (SELECT %(arg)s::jsonb AS arg) AS row
ON CONFLICT (event_id) DO UPDATE
    SET error = EXCLUDED.error, attempts = shared.outbox_dead_letter.attempts + 1,
        dead_at = now()
"""
# A row whose queue refused the command goes back, due again after a backoff (same transaction
# as the claim: it is never out of the outbox without being enqueued or dead-lettered).
RETRY_LATER_SQL = """
INSERT INTO shared.outbox
    (event_id, tenant, tenant_id, aggregate_type, aggregate_id, event_type, payload, headers,
     available_at, created_at, attempts, last_error)
SELECT %(event_id)s, %(tenant)s, %(tenant_id)s, arg->>'aggregate_type', arg->>'aggregate_id',
       %(event_type)s, arg->'payload', arg->'headers',
       now() + make_interval(secs => %(delay_s)s), %(created_at)s, %(attempts)s, %(error)s
FROM (SELECT %(arg)s::jsonb AS arg) AS row
"""
# Seconds until the next deferred row, by the database's clock. Rows already due but locked by
# another relay are that relay's: waiting on them would spin.
NEXT_DUE_SQL = (
    "SELECT extract(epoch FROM min(available_at) - clock_timestamp()) "
    "FROM shared.outbox WHERE available_at > now()"
)
PRUNE_PROCESSED_SQL = """
DELETE FROM shared.processed_event
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM shared.processed_event
    WHERE processed_at < now() - make_interval(hours => %(hours)s)
    LIMIT %(limit)s
))
"""
# Only one relay prunes at a time.
PRUNE_LOCK_KEY = 7_310_002
PRUNE_EVERY_S = 60.0
PRUNE_BATCH_ROWS = 10_000
# After traffic, poll this often for a while: producers notify at most once per interval.
ACTIVE_POLL_S = 2 * NOTIFY_INTERVAL_S
ACTIVE_WINDOW_S = 1.0
# An empty claim never leads to a shorter wait than this.
MIN_IDLE_WAIT_S = 0.002
PRUNE_BATCHES_MAX = 50

OnDispatched = Callable[[list[OutboxRow], datetime], None]


class ReplicationLagError(RedisError):
    """Redis took the batch but too few replicas confirmed it: treat it as not enqueued."""


# KEYS: a Dramatiq queue's list and its message hash. ARGV: message id, message, id, … .
# Stores each message whose id is not stored yet and pushes those ids, in order: what
# Dramatiq's own enqueue does, made idempotent. The hash keeps an id until the worker acks it,
# so a batch sent again while its messages wait or run adds nothing; one sent again after they
# ran is skipped by the actors' processed-event record.
ENQUEUE_SCRIPT = """
local fresh, data = {}, {}
for i = 1, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
        fresh[#fresh + 1] = ARGV[i]
        data[#data + 1] = ARGV[i]
        data[#data + 1] = ARGV[i + 1]
    end
end
-- Reads first, then the push, then the store: a script that fails midway keeps what it wrote,
-- so a failing command must come before any write.
for i = 1, #fresh, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(fresh, i, math.min(i + 999, #fresh)))
end
for i = 1, #data, 2000 do
    redis.call('HSET', KEYS[2], unpack(data, i, math.min(i + 1999, #data)))
end
return #fresh
"""
ENQUEUE_SCRIPT_SHA = hashlib.sha1(ENQUEUE_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis's id


@dataclass
class _Batch:
    """One claim, sorted: messages to send, rows to retry later, rows to dead-letter."""

    messages: list[EncodedMessage] = field(default_factory=list)
    queues: dict[uuid.UUID, tuple[OutboxRow, set[str]]] = field(default_factory=dict)
    retry: list[tuple[OutboxRow, str]] = field(default_factory=list)
    dead: list[tuple[OutboxRow, str]] = field(default_factory=list)


@dataclass
class Backoff:
    """Exponential backoff with full jitter, reset by a success."""

    base_s: float = 0.1
    cap_s: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class OutboxRelay:
    database_url: str
    redis_url: str
    batch_size: int = 500
    poll_interval_s: float = 1.0
    processed_retention_hours: int = 168
    # Durability: with replicas, a batch counts as enqueued only once this many replicas have
    # it (Redis WAIT); otherwise the claim rolls back and the batch is sent again later.
    redis_min_replicas: int = 0
    redis_wait_timeout_ms: int = 1_000
    # LISTEN needs a session-level connection: behind a transaction pooler it goes to the
    # database directly (DATABASE_DIRECT_URL). Poolers also break server-side prepared
    # statements, so `prepare` is off there.
    listen_url: str | None = None
    prepare: bool = True
    # A row whose queue answers a command error this many times is dead-lettered; between
    # attempts it waits retry_base_s * 2**attempts (at most a minute).
    max_enqueue_attempts: int = 5
    retry_base_s: float = 1.0
    routes: RoutingTable = field(default_factory=product_routes)
    # Customer webhooks: the route added for subscribed tenants' events; internal events are
    # kept out of the history.
    subscription: Subscription | None = field(default_factory=product_subscription)
    internal_types: frozenset[str] = field(default_factory=product_internal_types)
    namespace: str = NAMESPACE
    on_dispatched: OnDispatched | None = None
    backoff: Backoff = field(default_factory=Backoff)

    _conn: psycopg.AsyncConnection[tuple[object, ...]] | None = field(default=None, init=False)
    _redis: redis.Redis | None = field(default=None, init=False)
    _last_activity: float = field(default=0.0, init=False)
    _last_prune: float = field(default=0.0, init=False)
    # When the claim loop last went round (liveness: a loop stuck anywhere stops moving it).
    last_turn: float = field(default_factory=time.monotonic, init=False)
    _encoder: MessageEncoder = field(init=False)

    def __post_init__(self) -> None:
        self._encoder = MessageEncoder(self.routes, self.subscription)
        self._internal = sorted(self.internal_types)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> OutboxRelay:
        assert settings.database_url is not None
        assert settings.redis_url is not None
        return cls(
            database_url=libpq_url(settings.database_url),
            redis_url=settings.redis_url,
            batch_size=settings.relay_batch_size,
            poll_interval_s=settings.relay_poll_interval_s,
            processed_retention_hours=settings.processed_event_retention_hours,
            redis_min_replicas=settings.relay_redis_min_replicas,
            listen_url=libpq_url(settings.database_direct_url or settings.database_url),
            prepare=settings.db_pooler == "none",
            max_enqueue_attempts=settings.relay_max_enqueue_attempts,
            **overrides,  # type: ignore[arg-type]
        )

    # -- one batch ------------------------------------------------------------------------

    async def dispatch_batch(self) -> int:
        """Claim, enqueue and commit one batch; return how many rows it claimed."""
        conn = await self._connection()
        client = self._redis_client()
        traced = None
        try:
            async with (
                conn.transaction(),
                conn.cursor(row_factory=args_row(OutboxRow)) as cursor,
            ):
                await cursor.execute(
                    CLAIM_SQL,
                    {"limit": self.batch_size, "internal": self._internal},
                    prepare=self.prepare,
                )
                rows = await cursor.fetchall()
                if not rows:
                    return 0
                rows.sort(key=lambda r: (r.available_at, r.id))
                if telemetry.TRACING.on:
                    traced = _batch_span(rows)
                batch = self._encode(rows)
                if batch.messages:
                    refused = await self.enqueue(client, batch.messages)
                    self._sort_refused(batch, refused)
                if batch.dead:
                    await self._dead_letter(conn, batch.dead)
                if batch.retry:
                    await self._retry_later(conn, batch.retry)
                acked_at = datetime.now(UTC)
        except BaseException as exc:
            if traced is not None:
                telemetry.end_span(*traced, error=exc)
            raise
        if traced is not None:
            telemetry.end_span(*traced)
        # Committed: only now are these events out of the outbox for good.
        held = {row.event_id for row, _ in (*batch.dead, *batch.retry)}
        delivered = [r for r in rows if r.event_id not in held] if held else rows
        self._record(delivered, len(rows), acked_at)
        return len(rows)

    async def enqueue(self, client: redis.Redis, encoded: list[EncodedMessage]) -> dict[str, str]:
        """One MULTI/EXEC round trip: per queue, the enqueue script adds the messages whose ids
        are not there yet. Returns the queues that refused the command, with the error.

        An outage (connection lost, timeout) raises: the claim rolls back and the batch is sent
        again later, adding nothing twice. A command error (e.g. WRONGTYPE on a queue key) is
        per queue: the other queues' messages stand. The synchronous client packs commands with
        hiredis (several times faster than the asyncio client at thousands of arguments); it
        runs in a thread so the loop keeps listening.
        """
        queues = group_by_queue(encoded)
        results = await asyncio.to_thread(self._run_enqueue_script, client, queues)
        if any(isinstance(r, NoScriptError) for r in results):
            # Redis lost its script cache (restart, SCRIPT FLUSH): load it, send again.
            client.script_load(ENQUEUE_SCRIPT)
            results = await asyncio.to_thread(self._run_enqueue_script, client, queues)
        if self.redis_min_replicas > 0:
            acked = await asyncio.to_thread(
                client.wait, self.redis_min_replicas, self.redis_wait_timeout_ms
            )
            if acked < self.redis_min_replicas:
                raise ReplicationLagError(
                    f"{acked} of {self.redis_min_replicas} Redis replica(s) acknowledged"
                )
        refused: dict[str, str] = {}
        for queue, result in zip(queues, results, strict=True):
            if isinstance(result, Exception):
                refused[queue] = f"{type(result).__name__}: {result}"
            else:
                metrics.MESSAGES_ENQUEUED.inc(int(result))
        return refused

    def _run_enqueue_script(
        self, client: redis.Redis, queues: dict[str, dict[str, bytes]]
    ) -> list[Any]:
        pipe = client.pipeline(transaction=True)
        for queue, messages in queues.items():
            args: list[str | bytes] = []
            for message_id, data in messages.items():
                args += (message_id, data)
            keys = (f"{self.namespace}:{queue}", f"{self.namespace}:{queue}.msgs")
            pipe.evalsha(ENQUEUE_SCRIPT_SHA, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)

    def _encode(self, rows: list[OutboxRow]) -> _Batch:
        now_ms = int(time.time() * 1000)
        batch = _Batch()
        encode = self._encoder.encode
        for row in rows:
            if row.attempts >= self.max_enqueue_attempts:
                batch.dead.append((row, row.last_error or "enqueue attempts exhausted"))
                continue
            try:
                messages = encode(row, now_ms)
            except UndeliverableError as exc:
                batch.dead.append((row, str(exc)))
                continue
            batch.messages.extend(messages)
            batch.queues[row.event_id] = (row, {queue for queue, _, _ in messages})
        return batch

    def _sort_refused(self, batch: _Batch, refused: dict[str, str]) -> None:
        """Rows with a message on a queue that refused the command: retry later, or dead-letter
        once their attempts are spent. Their other messages stand; ids keep them single."""
        if not refused:
            return
        for row, queues in batch.queues.values():
            errors = [refused[q] for q in sorted(queues) if q in refused]
            if not errors:
                continue
            if row.attempts + 1 >= self.max_enqueue_attempts:
                batch.dead.append((row._replace(attempts=row.attempts + 1), errors[0]))
            else:
                batch.retry.append((row, errors[0]))
        log.warning("relay.queue_refused", queues=refused)

    async def _retry_later(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], rows: list[tuple[OutboxRow, str]]
    ) -> None:
        params = [
            {
                **row._asdict(),
                "attempts": row.attempts + 1,
                "error": error,
                "delay_s": min(60.0, self.retry_base_s * 2.0**row.attempts),
            }
            for row, error in rows
        ]
        async with conn.cursor() as cursor:
            await cursor.executemany(RETRY_LATER_SQL, params)
        metrics.EVENTS_RETRIED.inc(len(rows))

    async def _dead_letter(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], dead: list[tuple[OutboxRow, str]]
    ) -> None:
        async with conn.cursor() as cursor:
            await cursor.executemany(
                DEAD_LETTER_SQL, [{**row._asdict(), "error": error} for row, error in dead]
            )
        for row, error in dead:
            log.error(
                "relay.dead_lettered",
                event_id=str(row.event_id),
                event_type=row.event_type,
                tenant=row.tenant,
                error=error,
            )
        metrics.EVENTS_DEAD_LETTERED.inc(len(dead))

    def _record(self, delivered: list[OutboxRow], claimed: int, acked_at: datetime) -> None:
        metrics.BATCH_SIZE.observe(claimed)
        metrics.EVENTS_DISPATCHED.inc(len(delivered))
        metrics.ENQUEUE_LATENCY.observe_many(
            (acked_at - row.created_at).total_seconds() for row in delivered
        )
        self._last_activity = time.monotonic()
        if self.on_dispatched is not None:
            self.on_dispatched(delivered, acked_at)

    # -- connections ----------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.database_url,
                application_name="socialflow-relay",
                # None: never prepare implicitly (a pooler may hand us another server).
                prepare_threshold=5 if self.prepare else None,
            )
        return self._conn

    def _redis_client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0
            )
        return self._redis

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._redis is not None:
            self._redis.close()

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; survive broker and database outages by backing off."""
        listener = await self._listen()
        log.info("relay.started", channel=NOTIFY_CHANNEL, batch_size=self.batch_size)
        try:
            while not stop.is_set():
                self.last_turn = time.monotonic()
                try:
                    claimed = await self.dispatch_batch()
                    if await self._prune_processed_events():
                        await history.maintain(await self._connection())
                    if claimed == 0:
                        listener = await self._ensure_listener(listener)
                        await self._wait_for_work(listener, stop)
                    # A non-empty batch loops at once: more rows may be waiting.
                except (RedisError, OSError, psycopg.OperationalError) as exc:
                    metrics.BATCH_FAILURES.inc()
                    delay = self.backoff.next_delay()
                    log.warning(
                        "relay.batch_failed",
                        error_type=type(exc).__name__,
                        error=str(exc),
                        retry_in_s=round(delay, 3),
                    )
                    await self._reset_after_failure()
                    await _sleep_unless(stop, delay)
                    listener = await self._ensure_listener(listener)
                    continue
                self.backoff.reset()
        finally:
            with contextlib.suppress(Exception):
                if listener is not None:
                    await listener.close()
            await self.close()

    async def _listen(self) -> psycopg.AsyncConnection[object] | None:
        listener = None
        try:
            listener = await psycopg.AsyncConnection.connect(
                self.listen_url or self.database_url, autocommit=True
            )
            await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.OperationalError as exc:
            log.warning("relay.listen_failed", error=str(exc))
            if listener is not None:
                await listener.close()
            return None
        return listener

    async def _ensure_listener(
        self, listener: psycopg.AsyncConnection[object] | None
    ) -> psycopg.AsyncConnection[object] | None:
        if listener is None or listener.closed or listener.broken:
            return await self._listen()
        return listener

    async def _reset_after_failure(self) -> None:
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _wait_for_work(
        self, listener: psycopg.AsyncConnection[object] | None, stop: asyncio.Event
    ) -> None:
        timeout = max(MIN_IDLE_WAIT_S, await self._idle_timeout())
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
        if listener is not None:
            waiters.add(asyncio.ensure_future(_next_notify(listener)))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for waiter in waiters:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiter

    async def _idle_timeout(self) -> float:
        """How long to wait for a NOTIFY: briefly after traffic, until the next deferred row."""
        if time.monotonic() - self._last_activity < ACTIVE_WINDOW_S:
            return ACTIVE_POLL_S
        conn = await self._connection()
        async with conn.transaction():
            cursor = await conn.execute(NEXT_DUE_SQL, prepare=self.prepare)
            row = await cursor.fetchone()
        until_due = row[0] if row else None
        if not isinstance(until_due, (int, float, Decimal)):
            return self.poll_interval_s
        return max(0.0, min(self.poll_interval_s, float(until_due)))

    async def _prune_processed_events(self) -> bool:
        """Prune the processed-event ledger when due and no other relay is at it; True when this
        relay pruned (it then keeps the event history too)."""
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY_S:
            return False
        self._last_prune = now
        conn = await self._connection()
        async with conn.transaction():
            cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,))
            locked = await cursor.fetchone()
            if not (locked and locked[0]):
                return False
            # In batches, so one run catches up with any insert rate without a long lock.
            for _ in range(PRUNE_BATCHES_MAX):
                cursor = await conn.execute(
                    PRUNE_PROCESSED_SQL,
                    {"hours": self.processed_retention_hours, "limit": PRUNE_BATCH_ROWS},
                )
                if cursor.rowcount < PRUNE_BATCH_ROWS:
                    break
        return True


async def _next_notify(listener: psycopg.AsyncConnection[object]) -> None:
    async for _ in listener.notifies():
        return


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)


def _batch_span(rows: list[OutboxRow]) -> tuple[Any, object]:
    """A claimed batch's span (an empty claim has none): a trace of its own, linked to the
    spans that emitted its events (each event's trace goes on in its actors, from the
    traceparent it carries)."""
    span, token = telemetry.start_span(
        "outbox dispatch",
        kind="producer",
        attributes={"messaging.system": "dramatiq", "messaging.batch.message_count": len(rows)},
    )
    telemetry.link_to(span, (json.loads(r.context).get("traceparent") for r in rows))
    return span, token
