"""Integration fixtures: a clean outbox, a session factory, relays with the test routes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from outbox_relay.relay import OutboxRelay
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.engine import create_engine, create_session_factory, libpq_url
from socialflow.lib import telemetry
from socialflow.settings import Settings
from tests.integration.outbox.support import TEST_ROUTES

# Slugs the outbox and worker tests' events name: emit() resolves a tenant's id by slug.
EVENT_TENANTS = ("alpha", "beta")


@pytest.fixture
def event_tenants(pg: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    """Live tenant rows for EVENT_TENANTS (created again if a test purged them), by slug."""
    agency = pg.execute(
        "INSERT INTO shared.agencies (slug, name) VALUES ('event-tests', 'Event tests') "
        "ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id"
    ).fetchone()
    assert agency is not None
    ids = {}
    for slug in EVENT_TENANTS:
        found = (
            pg.execute(
                "SELECT id FROM shared.tenants WHERE slug = %s AND status <> 'purged'", (slug,)
            ).fetchone()
            or pg.execute(
                "INSERT INTO shared.tenants (slug, name, agency_id, plan, schema_name) "
                "VALUES (%s, %s, %s, 'pro', %s) RETURNING id",
                (slug, slug, agency[0], f"t_{slug}"),
            ).fetchone()
        )
        assert found is not None
        ids[slug] = found[0]
    return ids


@pytest.fixture
def clean_outbox(
    pg: psycopg.Connection[Any], redis_client: Any, event_tenants: dict[str, uuid.UUID]
) -> None:
    pg.execute("TRUNCATE shared.outbox, shared.outbox_dead_letter, shared.processed_event")


@pytest.fixture
async def session_factory(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings)
    yield create_session_factory(engine)
    await engine.dispose()


RelayFactory = Callable[..., OutboxRelay]


@pytest.fixture
async def make_relay(
    database_url: str, redis_url: str, clean_outbox: None
) -> AsyncIterator[RelayFactory]:
    relays: list[OutboxRelay] = []

    def make(**overrides: Any) -> OutboxRelay:
        options: dict[str, Any] = {
            "database_url": libpq_url(database_url),
            "redis_url": redis_url,
            "routes": TEST_ROUTES,
            "batch_size": 200,
            **overrides,
        }
        relay = OutboxRelay(**options)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.close()


@pytest.fixture
async def running_relays() -> AsyncIterator[Callable[[OutboxRelay], asyncio.Task[None]]]:
    """Start relays' run loops as tasks; they are stopped and awaited after the test."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(relay: OutboxRelay) -> asyncio.Task[None]:
        task = asyncio.create_task(relay.run(stop))
        tasks.append(task)
        return task

    yield start
    stop.set()
    await asyncio.gather(*tasks)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every span kept in memory. Ask for it first among the test's
    fixtures: engines made before it are not traced."""
    exporter = InMemorySpanExporter()
    telemetry.configure("test", exporter=exporter)
    yield exporter
    telemetry.shutdown()
