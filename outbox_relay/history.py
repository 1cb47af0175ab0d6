"""The event history's upkeep, by the relay that prunes (one at a time, under its lock).

- Days ahead: a partition for each day (UTC) from yesterday to `DAYS_AHEAD` days on, so the
  claim's insert never waits on DDL and rarely lands in the default partition (a day whose
  rows did land there gets its partition with them moved in).
- Past every plan's retention: the day's partition is dropped (one DDL, no row-by-row delete).
- A tenant whose retention is shorter than the longest: its older rows are deleted in bounded
  batches through the feed index (readers never see them anyway: they filter by retention).
- The default partition: its rows past the longest retention, in batches.

DDL waits at most `LOCK_TIMEOUT` for its lock (the claims hold the parent briefly): a busy
relay gets it on a later round.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import structlog

from socialflow.outbox.models import HISTORY_PARTITION_PREFIX

log = structlog.get_logger("outbox_relay.history")

DAYS_AHEAD = 3
# One relay at a time (a session lock: the upkeep spans several transactions).
UPKEEP_LOCK_KEY = 7_310_003
LOCK_TIMEOUT = "2s"
BATCH_ROWS = 10_000
BATCHES_MAX = 50
# Retention when nothing says otherwise (no plan yet).
DEFAULT_RETENTION_DAYS = 30

PARTITIONS_SQL = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE n.nspname = 'shared' AND p.relname = 'event_history'
"""
# Each live tenant's retention in days: its override, else its plan's.
RETENTIONS_SQL = """
SELECT t.id,
       coalesce((e.overrides->>'event_retention_days')::int, p.event_retention_days) AS days
FROM shared.tenants t
JOIN shared.plans p ON p.name = t.plan
LEFT JOIN shared.tenant_entitlements e ON e.tenant_id = t.id
WHERE t.status <> 'purged'
"""
PRUNE_TENANTS_SQL = """
DELETE FROM shared.event_history h
USING (
    SELECT occurred_at, event_id FROM shared.event_history
    WHERE tenant_id = ANY(%(tenants)s) AND occurred_at < %(cutoff)s
    LIMIT %(limit)s
) AS old
WHERE h.occurred_at = old.occurred_at AND h.event_id = old.event_id
"""
# The default partition (HISTORY_DEFAULT_PARTITION), by its rows' addresses.
PRUNE_DEFAULT_SQL = """
DELETE FROM shared.event_history_default
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM shared.event_history_default WHERE occurred_at < %(cutoff)s
    LIMIT %(limit)s
))
"""


def partition_name(day: date) -> str:
    return f"{HISTORY_PARTITION_PREFIX}{day:%Y%m%d}"


def _day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def partition_day(name: str) -> date | None:
    if not name.startswith(HISTORY_PARTITION_PREFIX):
        return None
    try:
        return datetime.strptime(name.removeprefix(HISTORY_PARTITION_PREFIX), "%Y%m%d").date()
    except ValueError:
        return None


Conn = psycopg.AsyncConnection[Any]


async def maintain(conn: Conn, now: datetime | None = None) -> None:
    """One round of upkeep, unless another relay is at it. Runs outside any transaction of the
    caller's: each step commits on its own, so a step that cannot get its lock does not undo
    the others."""
    async with conn.transaction():
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (UPKEEP_LOCK_KEY,))
        locked = await cursor.fetchone()
    if not (locked and locked[0]):
        return
    try:
        await _maintain(conn, now or datetime.now(UTC))
    finally:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_unlock(%s)", (UPKEEP_LOCK_KEY,))


async def _maintain(conn: Conn, now: datetime) -> None:
    retentions = await _retentions(conn)
    longest = max([DEFAULT_RETENTION_DAYS, *retentions.values()])
    existing = {row[0] for row in await _rows(conn, PARTITIONS_SQL)}
    today = now.date()
    for offset in range(-1, DAYS_AHEAD + 1):
        day = today + timedelta(days=offset)
        if partition_name(day) not in existing:
            await _create_partition(conn, day)
    horizon = now - timedelta(days=longest)
    for name in sorted(existing):
        past = partition_day(name)
        if past is not None and _day_end(past) <= horizon:
            await _ddl(conn, f"DROP TABLE IF EXISTS shared.{name}")
    await _prune_batches(conn, PRUNE_DEFAULT_SQL, {"cutoff": horizon})
    by_days: dict[int, list[Any]] = defaultdict(list)
    for tenant_id, days in retentions.items():
        if days < longest:
            by_days[days].append(tenant_id)
    for days, tenants in sorted(by_days.items()):
        cutoff = now - timedelta(days=days)
        await _prune_batches(conn, PRUNE_TENANTS_SQL, {"tenants": tenants, "cutoff": cutoff})


async def _retentions(conn: Conn) -> dict[Any, int]:
    return {row[0]: int(row[1]) for row in await _rows(conn, RETENTIONS_SQL)}


async def _rows(conn: Conn, sql: str) -> list[Any]:
    async with conn.transaction():
        cursor = await conn.execute(sql)
        return await cursor.fetchall()


async def _create_partition(conn: Conn, day: date) -> None:
    """The day's partition. If rows of that day already sit in the default partition (the relay
    was down, or events were recorded before its first round), they are moved into the day's
    table before it is attached, with the history's writers held back for that moment."""
    name = partition_name(day)
    bounds = (
        f"FOR VALUES FROM ('{day.isoformat()}T00:00:00+00:00') "
        f"TO ('{(day + timedelta(days=1)).isoformat()}T00:00:00+00:00')"
    )
    if await _ddl(
        conn, f"CREATE TABLE IF NOT EXISTS shared.{name} PARTITION OF shared.event_history {bounds}"
    ):
        return
    start, end = _day_end(day) - timedelta(days=1), _day_end(day)
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await conn.execute("LOCK TABLE shared.event_history IN SHARE ROW EXCLUSIVE MODE")
            await conn.execute(
                f"CREATE TABLE shared.{name} (LIKE shared.event_history INCLUDING DEFAULTS)"
            )
            await conn.execute(
                f"WITH moved AS (DELETE FROM shared.event_history_default "  # noqa: S608
                f"WHERE occurred_at >= %s AND occurred_at < %s RETURNING *) "
                f"INSERT INTO shared.{name} SELECT * FROM moved",
                (start, end),
            )
            await conn.execute(
                f"ALTER TABLE shared.event_history ATTACH PARTITION shared.{name} {bounds}"
            )
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DuplicateTable) as exc:
        log.warning("relay.history_partition_deferred", partition=name, error=str(exc))


async def _ddl(conn: Conn, statement: str) -> bool:
    """One DDL statement in its own transaction, waiting briefly for its lock; False when it
    could not be done now (no lock, or the default partition holds rows of a new day's)."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await conn.execute(statement)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.CheckViolation) as exc:
        log.info("relay.history_ddl_deferred", statement=statement[:80], error=str(exc))
        return False
    return True


async def _prune_batches(conn: Conn, sql: str, params: dict[str, Any]) -> None:
    for _ in range(BATCHES_MAX):
        async with conn.transaction():
            cursor = await conn.execute(sql, {**params, "limit": BATCH_ROWS})
        if cursor.rowcount < BATCH_ROWS:
            return
