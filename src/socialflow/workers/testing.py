"""For tests: the product's real event actors, bound to a test's own broker.

A test that needs an actor to run (the invitation email, later captioning …) binds the very
actors the worker runs, as `event_actor` declared them, instead of declaring a copy by hand
that could drift from the real one (queue, name, handler, options).
"""

from __future__ import annotations

from typing import Any

import dramatiq

from socialflow.workers.registry import event_actors


def bind_event_actors(
    broker: dramatiq.Broker, **options: Any
) -> dict[str, dramatiq.Actor[[dict[str, Any]], None]]:
    """Declare every real event actor on `broker` (name, queue and handler unchanged);
    `options` override Dramatiq options such as `max_retries` for the test."""
    bound: dict[str, dramatiq.Actor[[dict[str, Any]], None]] = {}
    for name, actor in event_actors().items():
        bound[name] = dramatiq.actor(  # type: ignore[call-overload]
            actor.fn,
            actor_name=name,
            queue_name=actor.queue_name,
            broker=broker,
            **{**actor.options, **options},
        )
    return bound
