"""The Dramatiq broker on Redis, configured in this one module for the worker, relay and app."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import MAINTENANCE_COMMAND_BLACKLIST, RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from socialflow.workers.middleware import EventContext, OneStopSignal, WorkerResourcesLifecycle
from socialflow.workers.probes import probe_middleware

# Dramatiq's Redis keys live under this prefix; the relay writes messages under it too.
NAMESPACE = "dramatiq"
# Requeueing the messages of dead workers (heartbeat older than 60 s) runs on a clock, not on
# Dramatiq's one command in a thousand, which on a quiet fleet can take many minutes.
MAINTENANCE_EVERY_S = 10.0

log = structlog.get_logger("socialflow.worker")


class RecoveringRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker, made to take back what a lost fetch answer took.

    A fetch moves message ids into this process's ack set and answers with the messages. When
    Redis runs it and the answer is lost (the connection drops, Redis is killed right after),
    Dramatiq never sees those messages, and as this process's heartbeat stays fresh no other
    worker gives them back: they would wait until this process dies. So every consumer, before
    its first fetch (each one after a connection error is new), requeues the ids of its ack set
    that no worker thread of this process holds.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # queue → Redis ids of messages handed to worker threads and not yet acked or nacked
        self.in_hand: dict[str, set[str]] = defaultdict(set)
        self.in_hand_lock = threading.Lock()
        self._last_maintenance = 0.0
        # consumer's queue → when its fetch loop last came round (monotonic): the liveness
        # heartbeat reads it (workers.probes)
        self.consumer_turns: dict[str, float] = {}

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _RecoveringConsumer

    def _should_do_maintenance(self, command: str) -> int:
        now = time.monotonic()
        if command in MAINTENANCE_COMMAND_BLACKLIST or now - self._last_maintenance < (
            MAINTENANCE_EVERY_S
        ):
            return 0
        self._last_maintenance = now
        return 1


class _RecoveringConsumer(_RedisConsumer):
    broker: RecoveringRedisBroker

    def __init__(self, broker: RecoveringRedisBroker, *args: Any) -> None:
        super().__init__(broker, *args)
        self._checked = False

    def __next__(self) -> MessageProxy | None:
        if not self._checked:
            self._take_back_stranded()
            self._checked = True
        try:
            proxy: MessageProxy | None = super().__next__()
        finally:
            # A turn even when Redis fails it: the loop is alive, and readiness, not
            # liveness, says Redis is away (a restart would not bring it back).
            self.broker.consumer_turns[self.queue_name] = time.monotonic()
        if proxy is not None:
            with self.broker.in_hand_lock:
                self.broker.in_hand[self.queue_name].add(proxy.options["redis_message_id"])
        return proxy

    def ack(self, message: MessageProxy) -> None:
        try:
            super().ack(message)
        finally:
            self._release(message)

    def nack(self, message: MessageProxy) -> None:
        try:
            super().nack(message)
        finally:
            self._release(message)

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        super().requeue(messages)
        for message in messages:
            self._release(message)

    def _release(self, message: MessageProxy) -> None:
        with self.broker.in_hand_lock:
            self.broker.in_hand[self.queue_name].discard(message.options["redis_message_id"])

    def _take_back_stranded(self) -> None:
        # What threads hold is read first: an id acked meanwhile has left the ack set before
        # it leaves `in_hand`, and requeueing an id no longer in the ack set does nothing.
        with self.broker.in_hand_lock:
            held = set(self.broker.in_hand[self.queue_name])
        key = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        try:
            members: set[bytes] = self.broker.client.smembers(key)  # type: ignore[assignment]
            taken = {m.decode() for m in members}
            stranded = sorted(taken - held)
            if stranded:
                self.broker.do_requeue(self.queue_name, *stranded)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None
        if stranded:
            log.warning(
                "worker.stranded_messages_requeued", queue=self.queue_name, count=len(stranded)
            )


def create_broker(redis_url: str) -> RedisBroker:
    """A RedisBroker with the middleware every SocialFlow worker runs."""
    # EventContext first: its after-hooks run last, once Retries has decided a message's fate.
    middleware = [
        EventContext(),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(),
        CurrentMessage(),
        AsyncIO(),
        WorkerResourcesLifecycle(),
        OneStopSignal(),
    ]
    # `socialflow worker` serves metrics and probes (cli.py): its processes feed them.
    middleware += probe_middleware()
    return RecoveringRedisBroker(url=redis_url, namespace=NAMESPACE, middleware=middleware)


def configure_broker(redis_url: str) -> RedisBroker:
    """Create the broker and make it the global one, before any actor module is imported."""
    broker = create_broker(redis_url)
    dramatiq.set_broker(broker)
    return broker
