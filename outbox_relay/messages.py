"""Outbox rows → Dramatiq messages: the fields and layout `RedisBroker.enqueue` writes.

PostgreSQL renders each row's argument (the event envelope) and context as JSON text in the
claim query, so the relay splices text instead of decoding and re-encoding every payload.
A message decodes (`dramatiq.Message.decode`) to exactly the message the broker would have
built: queue, actor, the envelope as the one argument, options with `redis_message_id`, the
event id as message id. The Redis message id is deterministic (`<event id>.<actor>`), so the
same event enqueued twice for one actor is one entry in its queue (see `relay.ENQUEUE_SCRIPT`);
Dramatiq gives retries fresh ids of its own.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import datetime
from typing import NamedTuple

from socialflow.outbox.routing import Route, RoutingTable, Subscription

MAX_MESSAGE_BYTES = 512 * 1024


class OutboxRow(NamedTuple):
    """A claimed row, as the claim query returns it."""

    id: int
    event_id: uuid.UUID
    tenant: str | None
    tenant_id: uuid.UUID | None
    event_type: str
    available_at: datetime
    created_at: datetime
    attempts: int  # Redis command errors met so far
    last_error: str | None
    arg: str  # the event envelope, JSON text
    context: str  # {"tenant", "tenant_id", "request_id", "traceparent"}, JSON text
    subscribed: bool = False  # its tenant has webhook endpoints


class UndeliverableError(ValueError):
    """A row that no retry can dispatch: an unknown event type or an oversized message."""


EncodedMessage = tuple[str, str, bytes]  # queue, redis message id, message bytes


def _route_prefix(route: Route) -> bytes:
    return (
        f'{{"queue_name":{json.dumps(route.queue)},"actor_name":{json.dumps(route.actor)},"args":['
    ).encode()


class MessageEncoder:
    """Encodes rows for one routing table; route prefixes are rendered once."""

    def __init__(self, routes: RoutingTable, subscription: Subscription | None = None) -> None:
        self.routes = routes
        self._prefixes = {
            event_type: [(route.queue, _route_prefix(route)) for route in targets]
            for event_type, targets in routes.items()
        }
        self._actors = {
            event_type: [route.actor for route in targets] for event_type, targets in routes.items()
        }
        # The same with the subscription's route added, for subscribed tenants' events.
        self._subscribed_prefixes: dict[str, list[tuple[str, bytes]]] = {}
        self._subscribed_actors: dict[str, list[str]] = {}
        if subscription is not None:
            extra = subscription.route
            for event_type in subscription.event_types & routes.keys():
                if extra in routes[event_type]:
                    continue
                prefix = (extra.queue, _route_prefix(extra))
                self._subscribed_prefixes[event_type] = [*self._prefixes[event_type], prefix]
                self._subscribed_actors[event_type] = [*self._actors[event_type], extra.actor]

    def encode(self, row: OutboxRow, timestamp_ms: int) -> list[EncodedMessage]:
        targets = self._prefixes.get(row.event_type)
        if targets is None:
            raise UndeliverableError(f"unknown event type {row.event_type!r}: no route")
        actors = self._actors[row.event_type]
        if row.subscribed and row.event_type in self._subscribed_prefixes:
            targets = self._subscribed_prefixes[row.event_type]
            actors = self._subscribed_actors[row.event_type]
        arg = row.arg.encode()
        # The context object's text ends with "}": reopen it to add the broker's own option.
        context = row.context.encode()[:-1]
        event_id = str(row.event_id).encode()
        tail = b"".join(
            (b'"},"message_id":"', event_id, b'","message_timestamp":', b"%d}" % timestamp_ms)
        )
        encoded = []
        for (queue, prefix), actor in zip(targets, actors, strict=True):
            redis_message_id = f"{row.event_id}.{actor}"
            data = b"".join(
                (
                    prefix,
                    arg,
                    b'],"kwargs":{},"options":',
                    context,
                    b',"redis_message_id":"',
                    redis_message_id.encode(),
                    tail,
                )
            )
            if len(data) > MAX_MESSAGE_BYTES:
                raise UndeliverableError(
                    f"message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
                )
            encoded.append((queue, redis_message_id, data))
        return encoded


def group_by_queue(messages: list[EncodedMessage]) -> dict[str, dict[str, bytes]]:
    """Per queue: Redis message id → message bytes, in claim order."""
    queues: dict[str, dict[str, bytes]] = defaultdict(dict)
    for queue, redis_message_id, data in messages:
        queues[queue][redis_message_id] = data
    return queues
