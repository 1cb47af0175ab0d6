"""The Dramatiq broker on Redis, configured in this one module for the worker, relay and app."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
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

from socialflow.workers.middleware import EventContext, WorkerDatabaseLifecycle

# Dramatiq's Redis keys live under this prefix; the relay writes messages under it too.
NAMESPACE = "dramatiq"


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
        WorkerDatabaseLifecycle(),
    ]
    return RedisBroker(url=redis_url, namespace=NAMESPACE, middleware=middleware)


def configure_broker(redis_url: str) -> RedisBroker:
    """Create the broker and make it the global one, before any actor module is imported."""
    broker = create_broker(redis_url)
    dramatiq.set_broker(broker)
    return broker
