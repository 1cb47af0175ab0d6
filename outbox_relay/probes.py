"""The relay's metrics and probes (RELAY_METRICS_PORT): its counters and histograms, the outbox
backlog and the age of its oldest due row (read from PostgreSQL at each scrape), liveness (every
claim loop has turned within RELAY_LIVENESS_TIMEOUT_S) and readiness (PostgreSQL and Redis
answer)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from outbox_relay.relay import OutboxRelay
from socialflow.db.engine import libpq_url
from socialflow.lib.probes import ProbeServer, servers_ready
from socialflow.settings import Settings

# Rows due now: what the relay has yet to dispatch, and how long the oldest has waited.
BACKLOG_SQL = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(available_at)), 0)
FROM shared.outbox WHERE available_at <= now()
"""


class BacklogCollector(Collector):
    """`socialflow_relay_outbox_backlog` and `…_outbox_oldest_due_age_seconds`, read at scrape
    time (absent when PostgreSQL does not answer within the timeout)."""

    def __init__(self, database_url: str, timeout_s: float) -> None:
        self._url = libpq_url(database_url)
        self._timeout_s = timeout_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with psycopg.connect(
                self._url, connect_timeout=max(1, round(self._timeout_s)), autocommit=True
            ) as conn:
                conn.execute(f"SET statement_timeout = {int(self._timeout_s * 1000)}")
                row = conn.execute(BACKLOG_SQL).fetchone()
        except psycopg.Error:
            return
        if row is None:
            return
        yield GaugeMetricFamily(
            "socialflow_relay_outbox_backlog", "Outbox rows due and not dispatched", int(row[0])
        )
        yield GaugeMetricFamily(
            "socialflow_relay_outbox_oldest_due_age_seconds",
            "How long the oldest due outbox row has waited",
            float(row[1]),
        )


def relay_probes(
    relays: Sequence[OutboxRelay],
    settings: Settings,
    *,
    port: int | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> ProbeServer:
    """The probe server of a relay process running `relays` (not started)."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    database_url, redis_url = settings.database_url, settings.redis_url
    timeout_s = settings.ready_timeout_s
    registry.register(BacklogCollector(database_url, timeout_s))

    def live() -> tuple[bool, Mapping[str, Any]]:
        now = time.monotonic()
        idle = [round(now - relay.last_turn, 1) for relay in relays]
        return max(idle) < settings.relay_liveness_timeout_s, {"since_last_turn_s": idle}

    return ProbeServer(
        settings.probe_host,
        settings.relay_metrics_port if port is None else port,
        live=live,
        ready=servers_ready(libpq_url(database_url), redis_url, timeout_s),
        registry=registry,
    )
