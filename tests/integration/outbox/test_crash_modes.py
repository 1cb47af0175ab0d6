"""Crashes that are not clean lose nothing, and every event is applied once.

- Redis killed with SIGKILL under a running relay and worker (no shutdown, no last fsync), then
  restarted on its data: with `appendfsync always`, every batch Redis acknowledged is there.
- PostgreSQL crashed (immediate shutdown: no checkpoint, every backend killed) under a running
  relay and worker, then started again: the relay resumes by itself, with no restart of its own.

A worker in this process applies the events: its actor records each event in
`public.crash_effects` in the same transaction as the processed-event record, so the effects
counted per event id show both "nothing lost" and "applied once".

The last test shows that messages a worker's fetch took whose answer was lost (Redis dying
between running the fetch and answering it) are taken back by that worker once it reconnects.
(A worker process SIGKILLed mid-actor is in tests/e2e/test_pipeline.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest
import redis as redis_lib
from dramatiq.asyncio import get_event_loop_thread
from outbox_relay import metrics
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from socialflow.db.engine import create_engine, create_session_factory, libpq_url
from socialflow.db.migrate import upgrade_shared
from socialflow.embedded import EmbeddedRedis
from socialflow.outbox import emit_many
from socialflow.outbox.events import Event
from socialflow.settings import Settings
from socialflow.workers.actors import event_actor
from socialflow.workers.broker import NAMESPACE, create_broker
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import (
    NOTES_QUEUE,
    NoteAdded,
    emit_notes,
    wait_until,
)

Factory = async_sessionmaker[AsyncSession]
EFFECTS_DDL = "CREATE TABLE IF NOT EXISTS public.crash_effects (event_id uuid NOT NULL)"


# -- the consumer ---------------------------------------------------------------------------


@dataclass
class EffectsWorker:
    """A Dramatiq worker whose `add_note` actor records each event it applies."""

    settings: Settings
    redis_url: str
    _engine: AsyncEngine | None = field(default=None, init=False)
    _worker: dramatiq.Worker | None = field(default=None, init=False)

    def _sessions(self) -> Factory:
        # Created on first use, inside the worker's event loop, like the real workers' pool.
        if self._engine is None:
            self._engine = create_engine(self.settings)
        return create_session_factory(self._engine)

    def start(self) -> None:
        broker = create_broker(self.redis_url)

        async def add_note(session: AsyncSession, event: Event) -> None:
            await session.execute(
                text("INSERT INTO public.crash_effects (event_id) VALUES (:e)"),
                {"e": event.event_id},
            )

        # Short backoffs: an outage of a few seconds is retried within it, not minutes later.
        event_actor(
            queue_name=NOTES_QUEUE,
            actor_name="add_note",
            broker=broker,
            session_factory=self._sessions,
            max_retries=100,
            min_backoff=50,
            max_backoff=500,
        )(add_note)
        self._worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
        self._worker.start()

    def stop(self) -> None:
        if self._worker is None:
            return
        loop = get_event_loop_thread()
        if self._engine is not None and loop is not None:
            loop.run_coroutine(self._engine.dispose())
        self._worker.stop()


def effects_by_event(conn: psycopg.Connection[Any]) -> dict[uuid.UUID, int]:
    rows = conn.execute("SELECT event_id, count(*) FROM public.crash_effects GROUP BY 1")
    return {row[0]: row[1] for row in rows}


@dataclass
class Producer:
    """Commits events in small transactions until stopped, riding out database outages like an
    API process would. It knows which events committed, and which are in doubt (the connection
    died during their COMMIT: committed or not, nobody can tell)."""

    factory: Factory
    committed: list[uuid.UUID] = field(default_factory=list)
    in_doubt: list[uuid.UUID] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        notes = [NoteAdded(note_id=str(n), body=f"note {n}") for n in range(20)]
        while not self._stop.is_set():
            ids: list[uuid.UUID] = []
            try:
                async with self.factory() as session, session.begin():
                    ids = await emit_many(session, notes, tenant=None)
            except (DBAPIError, psycopg.Error, OSError):
                self.in_doubt.extend(ids)  # empty unless it failed at COMMIT
                await asyncio.sleep(0.05)  # the database is down: try again shortly
                continue
            self.committed.extend(ids)
            await asyncio.sleep(0.01)  # a steady trickle, not a flood

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def until(self, count: int) -> None:
        await wait_until(lambda: len(self.committed) >= count, message=f"{count} events committed")


async def _all_applied_once(
    conn: psycopg.Connection[Any], producer: Producer, timeout_s: float = 45
) -> None:
    committed = set(producer.committed)
    with contextlib.suppress(AssertionError):  # the asserts below say what is missing
        await wait_until(
            lambda: (
                conn.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)
                and committed <= set(effects_by_event(conn))
            ),
            timeout_s=timeout_s,
        )
    effects = effects_by_event(conn)
    lost = committed - set(effects)
    assert not lost, f"{len(lost)} of {len(committed)} committed events never applied"
    invented = set(effects) - committed - set(producer.in_doubt)
    assert not invented, f"{len(invented)} events applied that nobody committed"
    twice = {event: n for event, n in effects.items() if n > 1}
    assert not twice, f"{len(twice)} events applied more than once"
    processed = conn.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM shared.processed_event "
        "WHERE actor = 'add_note'"
    ).fetchone()
    assert processed == (len(effects), len(effects))


# -- Redis killed ---------------------------------------------------------------------------


@pytest.fixture
def effects_table(pg: psycopg.Connection[Any]) -> None:
    pg.execute(EFFECTS_DDL)
    pg.execute("TRUNCATE public.crash_effects")


async def test_redis_killed_with_sigkill_under_the_relay_loses_no_event_and_applies_each_once(
    make_relay: RelayFactory,
    running_relays: Any,
    session_factory: Factory,
    settings: Settings,
    pg: psycopg.Connection[Any],
    effects_table: None,
    tmp_path: Path,
) -> None:
    # The broker's durable configuration (README): every write on disk before it is answered.
    server = EmbeddedRedis(
        tmp_path / "redis",
        throwaway=True,
        extra_args=["--appendonly", "yes", "--appendfsync", "always"],
    )
    url = server.start()
    client = redis_lib.Redis.from_url(url)
    worker = EffectsWorker(settings, url)
    producer = Producer(session_factory)
    failures_before = metrics.BATCH_FAILURES._value.get()
    try:
        worker.start()
        running_relays(make_relay(redis_url=url, batch_size=50))
        producer.start()
        await wait_until(lambda: len(effects_by_event(pg)) >= 100, message="traffic flowing")

        os.kill(int(client.info("server")["process_id"]), signal.SIGKILL)
        # Events keep committing while Redis is gone; the relay's batches fail and roll back.
        await wait_until(
            lambda: metrics.BATCH_FAILURES._value.get() > failures_before,
            message="the relay noticed",
        )
        await producer.until(len(producer.committed) + 100)
        server.start()  # the same data directory: the append-only file is replayed
        await producer.until(len(producer.committed) + 100)
        await producer.stop()

        # Nothing lost: every committed event is applied, or its message is still in Redis.
        committed = set(producer.committed)
        await wait_until(
            lambda: (
                pg.execute("SELECT count(*) FROM shared.outbox").fetchone() == (0,)
                and committed <= set(effects_by_event(pg)) | events_in_redis(client)
            ),
            message="every committed event applied or held by Redis",
        )
        # Messages a fetch took whose answer died with Redis are taken back by the worker's
        # reconnected consumer (see the last test): the same worker applies everything.
        await _all_applied_once(pg, producer)
    finally:
        await producer.stop()
        worker.stop()
        client.close()
        server.stop()


def events_in_redis(client: redis_lib.Redis) -> set[uuid.UUID]:
    """Events whose messages Redis holds: queued, delayed or taken by a worker, not acked."""
    found = set()
    for data in client.hvals(f"{NAMESPACE}:{NOTES_QUEUE}.msgs"):
        found.add(uuid.UUID(json.loads(data)["args"][0]["event_id"]))
    return found


# -- PostgreSQL crashed ---------------------------------------------------------------------


class CrashablePostgres:
    """A PostgreSQL of the test's own (pgserver's binaries) that the test can crash and restart.

    fsync is off for speed: a crash of the server's processes (not of the machine) loses no
    committed transaction either way, the WAL having reached the kernel at commit.
    """

    def __init__(self) -> None:
        import pgserver._commands

        self.bin = Path(pgserver._commands.POSTGRES_BIN_PATH)
        # PostgreSQL refuses to run as root: use pgserver's account then, as it does.
        self.user = "pgserver" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="sf-crash-pg-"))
        self.data = self.root / "data"
        self._process: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        subprocess.run(
            [self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "utf8"],
            check=True,
            capture_output=True,
            user=self.user,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@/postgres?host={self.root}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self.bin / "postgres",
                "-D",
                self.data,
                "-k",
                self.root,
                "-h",
                "",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=60",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            assert self._process.poll() is None, "postgres exited"
            try:
                psycopg.connect(libpq_url(self.url), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise AssertionError(f"postgres not ready within {timeout_s} s")

    def crash(self) -> None:
        """Immediate shutdown: every backend is killed at once, recovery runs on the next start."""
        assert self._process is not None
        self._process.send_signal(signal.SIGQUIT)
        self._process.wait(timeout=30)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def crashable_postgres() -> Iterator[CrashablePostgres]:
    server = CrashablePostgres()
    try:
        server.start()
        upgrade_shared(server.url)
        with psycopg.connect(libpq_url(server.url), autocommit=True) as conn:
            conn.execute(EFFECTS_DDL)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own_sessions(
    crashable_postgres: CrashablePostgres, settings: Settings
) -> AsyncIterator[Factory]:
    engine = create_engine(settings.model_copy(update={"database_url": crashable_postgres.url}))
    yield create_session_factory(engine)
    await engine.dispose()


async def test_postgres_crashed_and_restarted_under_the_relay_loses_nothing_and_it_resumes(
    crashable_postgres: CrashablePostgres,  # first: stopped after the relay and the worker
    own_sessions: Factory,
    make_relay: RelayFactory,
    running_relays: Any,
    settings: Settings,
    redis_url: str,
) -> None:
    server = crashable_postgres
    worker = EffectsWorker(settings.model_copy(update={"database_url": server.url}), redis_url)
    producer = Producer(own_sessions)
    failures_before = metrics.BATCH_FAILURES._value.get()
    conn: psycopg.Connection[Any] | None = None
    try:
        worker.start()
        running_relays(make_relay(database_url=libpq_url(server.url), batch_size=50))
        producer.start()
        await producer.until(300)
        with psycopg.connect(libpq_url(server.url), autocommit=True) as before:
            applied = len(effects_by_event(before))
        # Under traffic: events committing, the relay dispatching, the worker applying.
        await asyncio.to_thread(server.crash)
        assert applied < len(producer.committed)
        await wait_until(
            lambda: metrics.BATCH_FAILURES._value.get() > failures_before,
            message="the relay noticed",
        )
        down = len(producer.committed)
        await asyncio.to_thread(server.start)
        # The producer rides through; events committed after the restart reach the relay too.
        await producer.until(down + 100)
        await producer.stop()

        conn = psycopg.connect(libpq_url(server.url), autocommit=True)
        await _all_applied_once(conn, producer)
    finally:
        await producer.stop()
        worker.stop()
        if conn is not None:
            conn.close()


# -- a fetch whose answer never arrives -----------------------------------------------------


class AnswerDroppingProxy:
    """A TCP proxy in front of Redis. Once armed, it cuts the connection that is about to carry
    the next message to the worker: Redis ran the fetch (the messages are the worker's now), the
    worker never hears the answer — what a Redis crash between its fsync and its reply does."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and self.armed.is_set() and b'"actor_name"' in data:
                    self.armed.clear()
                    self.cut.set()
                    break
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


async def test_messages_of_a_fetch_whose_answer_was_lost_are_still_applied(
    make_relay: RelayFactory,
    running_relays: Any,
    session_factory: Factory,
    settings: Settings,
    pg: psycopg.Connection[Any],
    effects_table: None,
    tmp_path: Path,
) -> None:
    from tests.e2e.conftest import free_port

    redis_port = free_port()
    server = EmbeddedRedis(
        tmp_path / "redis", throwaway=True, extra_args=["--port", str(redis_port)]
    )
    url = server.start()
    proxy = AnswerDroppingProxy(redis_port)
    worker = EffectsWorker(settings, f"redis://127.0.0.1:{proxy.port}")
    try:
        worker.start()
        running_relays(make_relay(redis_url=url))
        proxy.armed.set()
        emitted = await emit_notes(session_factory, 3, per_transaction=3)
        await wait_until(proxy.cut.is_set, message="a fetch answer cut")

        # The worker reconnects (Dramatiq restarts a consumer after 3 s) and goes on fetching.
        await wait_until(
            lambda: set(emitted) <= set(effects_by_event(pg)),
            timeout_s=6,
            message="the fetched messages applied",
        )
    finally:
        worker.stop()
        proxy.close()
        server.stop()
