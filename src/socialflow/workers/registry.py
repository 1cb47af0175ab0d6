"""Every actor module the worker loads; importing one declares its actors on the broker."""

from __future__ import annotations

import importlib
from typing import Any

import dramatiq

from socialflow.workers.actors import DECLARED_EVENT_ACTORS

# Feature `tasks` modules, e.g. "socialflow.media.tasks", as features arrive.
ACTOR_MODULES: tuple[str, ...] = (
    "socialflow.members.tasks",
    "socialflow.media.tasks",
    "socialflow.captions.tasks",
    "socialflow.search.tasks",
    "socialflow.publishing.tasks",
    "socialflow.webhooks.tasks",
)

for _module in ACTOR_MODULES:
    importlib.import_module(_module)


def event_actors() -> dict[str, dramatiq.Actor[[dict[str, Any]], None]]:
    """The product's event actors by name: those the modules above declare (not tests')."""
    found: dict[str, dramatiq.Actor[[dict[str, Any]], None]] = {}
    for (module, name), actor in DECLARED_EVENT_ACTORS.items():
        if module in ACTOR_MODULES:
            if name in found:
                raise RuntimeError(f"two modules declare an event actor named {name!r}")
            found[name] = actor
    return found


def event_actor_queues() -> dict[str, str]:
    """Each of the product's event actors, with the queue it is declared on."""
    return {name: actor.queue_name for name, actor in event_actors().items()}
