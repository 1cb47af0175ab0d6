"""Process entry point of the relay: settings, logging, signals, then the loop."""

from __future__ import annotations

import asyncio
import signal

import structlog

from outbox_relay.durability import warn_unless_durable
from outbox_relay.probes import relay_probes
from outbox_relay.relay import OutboxRelay
from socialflow.lib import telemetry
from socialflow.lib.logging import configure_logging
from socialflow.settings import get_settings

log = structlog.get_logger("outbox_relay")


async def serve() -> None:
    settings = get_settings()
    if settings.database_url is None or settings.redis_url is None:
        raise SystemExit("DATABASE_URL and REDIS_URL must be set for the relay")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(
        warn_unless_durable, settings.redis_url, settings.relay_redis_min_replicas
    )
    if settings.db_pooler == "transaction" and settings.database_direct_url is None:
        # LISTEN through a transaction pooler is never woken: the relay would only poll.
        log.warning(
            "relay.listen_through_pooler",
            hint="set DATABASE_DIRECT_URL so the relay wakes on NOTIFY",
            poll_interval_s=settings.relay_poll_interval_s,
        )
    # Several claim loops overlap PostgreSQL's work with this process's encoding; they claim
    # disjoint rows (SKIP LOCKED) exactly as separate relay processes would.
    relays = [OutboxRelay.from_settings(settings) for _ in range(settings.relay_concurrency)]
    probes = None
    if settings.relay_metrics_port:
        try:
            probes = relay_probes(relays, settings).start()
        except OSError as exc:  # the port is taken: dispatching matters more than probes
            log.error("relay.probes_unavailable", port=settings.relay_metrics_port, error=str(exc))
        else:
            log.info("relay.probes", host=settings.probe_host, port=probes.port)

    async def run_one(relay: OutboxRelay) -> None:
        try:
            await relay.run(stop)
        except BaseException:
            stop.set()  # one loop failing stops the process; its supervisor restarts it whole
            raise

    try:
        await asyncio.gather(*(run_one(relay) for relay in relays))
    finally:
        if probes is not None:
            probes.stop()


def main() -> None:
    configure_logging(get_settings())
    telemetry.configure("relay")  # only when OTEL_* ask for traces
    asyncio.run(serve())
    log.info("relay.stopped")
