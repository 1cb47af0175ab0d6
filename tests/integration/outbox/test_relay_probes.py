"""The relay's metrics and probes, scraped over HTTP as Prometheus and Kubernetes would: the
counters move with real traffic, the backlog is PostgreSQL's, liveness follows the claim loop
and readiness its servers."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from outbox_relay import metrics
from outbox_relay.probes import relay_probes
from outbox_relay.relay import OutboxRelay
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.lib.probes import ProbeServer
from socialflow.settings import Settings
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import emit_notes, wait_until

Factory = async_sessionmaker[AsyncSession]
Probes = Callable[..., ProbeServer]


@pytest.fixture
async def probes() -> AsyncIterator[Probes]:
    started: list[ProbeServer] = []

    def start(relays: list[OutboxRelay], settings: Settings) -> ProbeServer:
        # The process's own registry (the relay's counters) plus this server's backlog gauges.
        registry = CollectorRegistry()
        for collector in (
            metrics.EVENTS_DISPATCHED,
            metrics.MESSAGES_ENQUEUED,
            metrics.BATCH_SIZE,
        ):
            registry.register(collector)
        server = relay_probes(relays, settings, port=0, registry=registry).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _get(server: ProbeServer, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as failed:
        return failed.code, failed.read().decode()


async def _scrape(server: ProbeServer) -> dict[str, float]:
    status, text = await asyncio.to_thread(_get, server, "/metrics")
    assert status == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels or "le" not in sample.labels
    }


async def test_a_scrape_shows_the_backlog_then_the_events_dispatched(
    make_relay: RelayFactory,
    running_relays: Callable[[OutboxRelay], asyncio.Task[None]],
    session_factory: Factory,
    settings: Settings,
    probes: Probes,
) -> None:
    relay = make_relay()
    server = probes([relay], settings)
    before = await _scrape(server)
    await emit_notes(session_factory, 7)
    waiting = await _scrape(server)
    assert waiting["socialflow_relay_outbox_backlog"] == 7
    assert waiting["socialflow_relay_outbox_oldest_due_age_seconds"] >= 0

    running_relays(relay)

    async def dispatched() -> bool:
        now = await _scrape(server)
        return (
            now["socialflow_relay_events_dispatched_total"]
            - before.get("socialflow_relay_events_dispatched_total", 0)
            >= 7
        )

    await wait_until(dispatched, message="the dispatched counter moved by 7")
    after = await _scrape(server)
    assert after["socialflow_relay_outbox_backlog"] == 0
    assert after["socialflow_relay_batch_size_count"] > before.get(
        "socialflow_relay_batch_size_count", 0
    )


async def test_liveness_follows_the_claim_loop_and_turns_red_when_it_hangs(
    make_relay: RelayFactory,
    running_relays: Callable[[OutboxRelay], asyncio.Task[None]],
    settings: Settings,
    probes: Probes,
) -> None:
    quick = settings.model_copy(update={"relay_liveness_timeout_s": 0.5})
    relay = make_relay()
    hang, release = asyncio.Event(), asyncio.Event()
    real_dispatch = relay.dispatch_batch

    async def dispatch_or_hang() -> int:
        if hang.is_set():
            await release.wait()  # a claim that does not return (until the test ends)
        return await real_dispatch()

    relay.dispatch_batch = dispatch_or_hang  # type: ignore[method-assign]
    server = probes([relay], quick)
    running_relays(relay)
    await asyncio.sleep(0.2)
    status, body = await asyncio.to_thread(_get, server, "/livez")
    assert status == 200, body

    hang.set()

    async def red() -> bool:
        return (await asyncio.to_thread(_get, server, "/livez"))[0] == 503

    await wait_until(red, timeout_s=10, message="liveness red once the loop hangs")
    status, body = await asyncio.to_thread(_get, server, "/livez")
    assert json.loads(body)["status"] == "failing"
    hang.clear()
    release.set()


async def test_readiness_says_which_server_does_not_answer(
    make_relay: RelayFactory, settings: Settings, probes: Probes
) -> None:
    relay = make_relay()
    ready = probes([relay], settings)
    status, body = await asyncio.to_thread(_get, ready, "/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"database": "ok", "redis": "ok"}

    no_redis = settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:9/0", "ready_timeout_s": 1.0}
    )
    failing = probes([relay], no_redis)
    status, body = await asyncio.to_thread(_get, failing, "/readyz")
    assert status == 503
    checks: dict[str, Any] = json.loads(body)["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("failing")
