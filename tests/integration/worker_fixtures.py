"""Fixtures: a real Dramatiq worker in this process, on the test Redis, with test actors and
tenant schemas (a pytest plugin, loaded by the root conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import psycopg
import pytest
import redis as redis_lib
import structlog
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.tracing import current_traceparent, trace_id
from socialflow.outbox.events import Event
from socialflow.settings import Settings
from socialflow.workers.actors import WorkerResources, event_actor
from socialflow.workers.broker import create_broker
from tests.integration.outbox.support import NOTES_QUEUE

TENANTS = ("alpha", "beta")
FAILING_QUEUE = "test_failing"


@dataclass
class RunningWorker:
    broker: RedisBroker
    actors: dict[str, dramatiq.Actor[Any, Any]]


@pytest.fixture
def tenant_schemas(pg: psycopg.Connection[Any], event_tenants: dict[str, Any]) -> Iterator[None]:
    for tenant in TENANTS:
        pg.execute(f"DROP SCHEMA IF EXISTS t_{tenant} CASCADE")
        pg.execute(f"CREATE SCHEMA t_{tenant}")
        pg.execute(
            f"CREATE TABLE t_{tenant}.notes (event_id uuid NOT NULL, body text, "
            "search_path text, request_id text, trace_id text, bound_event_id text)"
        )
    pg.execute("DROP TABLE IF EXISTS public.untenanted_probe")
    pg.execute("CREATE TABLE public.untenanted_probe (event_id uuid, search_path text)")
    yield
    for tenant in TENANTS:
        pg.execute(f"DROP SCHEMA IF EXISTS t_{tenant} CASCADE")


def declare_test_actors(
    broker: RedisBroker, redis_client: redis_lib.Redis
) -> dict[str, dramatiq.Actor[Any, Any]]:
    @event_actor(queue_name=NOTES_QUEUE, actor_name="add_note", broker=broker)
    async def add_note(session: AsyncSession, event: Event) -> None:
        if event.tenant is None:
            path = (await session.execute(text("SHOW search_path"))).scalar_one()
            await session.execute(
                text("INSERT INTO public.untenanted_probe VALUES (:e, :p)"),
                {"e": event.event_id, "p": path},
            )
            return
        context = structlog.contextvars.get_contextvars()
        traceparent = current_traceparent.get()
        await session.execute(
            text(
                "INSERT INTO notes VALUES (:event_id, :body, current_setting('search_path'), "
                ":request_id, :trace_id, :bound_event_id)"
            ),
            {
                "event_id": event.event_id,
                "body": event.payload.get("body"),
                "request_id": context.get("request_id"),
                "trace_id": trace_id(traceparent) if traceparent else None,
                "bound_event_id": context.get("event_id"),
            },
        )

    @event_actor(queue_name="test_counts", actor_name="count_note", broker=broker)
    async def count_note(session: AsyncSession, event: Event) -> None:
        redis_client.incr(f"count_note:{event.event_id}")

    @event_actor(
        queue_name=FAILING_QUEUE,
        actor_name="always_fails",
        broker=broker,
        max_retries=2,
        min_backoff=10,
        max_backoff=20,
    )
    async def always_fails(session: AsyncSession, event: Event) -> None:
        redis_client.incr(f"attempts:{event.event_id}")
        await session.execute(
            text("INSERT INTO notes (event_id) VALUES (:e)"), {"e": event.event_id}
        )
        raise RuntimeError("the provider is down")

    return {"add_note": add_note, "count_note": count_note, "always_fails": always_fails}


@pytest.fixture
def test_worker(
    redis_url: str, settings: Settings, redis_client: redis_lib.Redis, tenant_schemas: None
) -> Iterator[RunningWorker]:
    broker = create_broker(redis_url)
    WorkerResources.configure(settings)
    actors = declare_test_actors(broker, redis_client)
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    yield RunningWorker(broker=broker, actors=actors)
    worker.stop()
