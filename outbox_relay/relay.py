"""The relay loop: wake on NOTIFY or a poll interval, dispatch due outbox rows, repeat."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import psycopg
import structlog
from redis.asyncio import Redis

from socialflow.db.engine import libpq_url
from socialflow.settings import Settings

log = structlog.get_logger("outbox_relay")

NOTIFY_CHANNEL = "socialflow_outbox"


@dataclass
class OutboxRelay:
    database_url: str
    redis_url: str
    poll_interval_s: float
    batch_size: int

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboxRelay:
        assert settings.database_url is not None
        assert settings.redis_url is not None
        return cls(
            database_url=libpq_url(settings.database_url),
            redis_url=settings.redis_url,
            poll_interval_s=settings.relay_poll_interval_s,
            batch_size=settings.relay_batch_size,
        )

    async def run(self, stop: asyncio.Event) -> None:
        redis = Redis.from_url(self.redis_url)
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True
        ) as listener:
            await redis.ping()
            await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            log.info("relay.started", channel=NOTIFY_CHANNEL)
            while not stop.is_set():
                await self._wait_for_work(listener, stop)
        await redis.aclose()

    async def _wait_for_work(
        self, listener: psycopg.AsyncConnection[object], stop: asyncio.Event
    ) -> None:
        notified = asyncio.ensure_future(anext(aiter(listener.notifies())))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            {notified, stopped}, timeout=self.poll_interval_s, return_when=asyncio.FIRST_COMPLETED
        )
        for task in (notified, stopped):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await task
