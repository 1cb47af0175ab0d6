"""Routing types and their check: which actors an event reaches, on which queue.

The table itself is `socialflow.event_routing`, keyed on the event classes features declare;
the relay reads the string-keyed form derived from it. An event routed to no actor is known
and simply has no consumer yet; a type missing from the table is a producer bug, dead-lettered
by the relay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from socialflow.outbox.events import DomainEvent


@dataclass(frozen=True, slots=True)
class Route:
    actor: str
    queue: str


RoutingTable = Mapping[str, tuple[Route, ...]]  # event type → routes, as the relay reads it


@dataclass(frozen=True, slots=True)
class Subscription:
    """A route the relay adds for the events of `event_types` of tenants that subscribed (the
    claim statement tells, row by row): customer webhooks."""

    route: Route
    event_types: frozenset[str]


EventRoutes = Mapping[type[DomainEvent], tuple[Route, ...]]  # the declared form


def by_event_type(routes: EventRoutes) -> RoutingTable:
    """The relay's table: the same routes, keyed on the event types' names."""
    return {event.event_type: targets for event, targets in routes.items()}


def routing_problems(
    routes: EventRoutes,
    actors: Mapping[str, str],
    events: Iterable[type[DomainEvent]],
) -> list[str]:
    """What is wrong between the routing table, the declared actors (name → queue) and the
    declared events; empty when every route names a declared actor on its declared queue,
    every actor is routed, and every event has an entry."""
    problems = []
    routed = set()
    for event, targets in routes.items():
        for route in targets:
            routed.add(route.actor)
            queue = actors.get(route.actor)
            if queue is None:
                problems.append(f"{event.event_type} → {route.actor}: no such actor is declared")
            elif queue != route.queue:
                problems.append(
                    f"{event.event_type} → {route.actor}: the route says queue {route.queue!r}, "
                    f"the actor is declared on {queue!r}"
                )
    for name in sorted(set(actors) - routed):
        problems.append(f"actor {name} is declared but no event is routed to it")
    for event in sorted(set(events) - set(routes), key=lambda e: e.event_type):
        problems.append(f"event type {event.event_type} has no entry in the routing table")
    return problems
