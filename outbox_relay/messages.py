"""Outbox rows → Dramatiq messages: the fields and layout `RedisBroker.enqueue` writes.

PostgreSQL renders each row's argument (the event envelope) and context as JSON text in the
claim query, so the relay splices text instead of decoding and re-encoding every payload.
A message decodes (`dramatiq.Message.decode`) to exactly the message the broker would have
built: queue, actor, the envelope as the one argument, options with `redis_message_id`, the
event id as message id.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from datetime import datetime
from typing import NamedTuple

from socialflow.outbox.routing import Route, RoutingTable

MAX_MESSAGE_BYTES = 512 * 1024


class OutboxRow(NamedTuple):
    """A claimed row, as the claim query returns it."""

    id: int
    event_id: uuid.UUID
    tenant: str | None
    event_type: str
    available_at: datetime
    created_at: datetime
    arg: str  # the event envelope, JSON text
    context: str  # {"tenant", "request_id", "traceparent"}, JSON text


class UndeliverableError(ValueError):
    """A row that no retry can dispatch: an unknown event type or an oversized message."""


EncodedMessage = tuple[str, str, bytes]  # queue, redis message id, message bytes


def _route_prefix(route: Route) -> bytes:
    return (
        f'{{"queue_name":{json.dumps(route.queue)},"actor_name":{json.dumps(route.actor)},"args":['
    ).encode()


class MessageEncoder:
    """Encodes rows for one routing table; route prefixes are rendered once."""

    def __init__(self, routes: RoutingTable) -> None:
        self.routes = routes
        self._prefixes = {
            event_type: [(route.queue, _route_prefix(route)) for route in targets]
            for event_type, targets in routes.items()
        }

    def encode(self, row: OutboxRow, timestamp_ms: int) -> list[EncodedMessage]:
        targets = self._prefixes.get(row.event_type)
        if targets is None:
            raise UndeliverableError(f"unknown event type {row.event_type!r}: no route")
        arg = row.arg.encode()
        # The context object's text ends with "}": reopen it to add the broker's own option.
        context = row.context.encode()[:-1]
        event_id = str(row.event_id).encode()
        tail = b"".join(
            (b'"},"message_id":"', event_id, b'","message_timestamp":', b"%d}" % timestamp_ms)
        )
        encoded = []
        for queue, prefix in targets:
            redis_message_id = _random_uuid()
            data = b"".join(
                (prefix, arg, b'],"kwargs":{},"options":', context,
                 b',"redis_message_id":"', redis_message_id.encode(), tail)
            )  # fmt: skip
            if len(data) > MAX_MESSAGE_BYTES:
                raise UndeliverableError(
                    f"message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
                )
            encoded.append((queue, redis_message_id, data))
        return encoded


def _random_uuid() -> str:
    """A version-4 UUID string, as `uuid.uuid4()` but without its object overhead."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def group_by_queue(messages: list[EncodedMessage]) -> dict[str, dict[str, bytes]]:
    """Per queue: Redis message id → message bytes, in claim order."""
    queues: dict[str, dict[str, bytes]] = defaultdict(dict)
    for queue, redis_message_id, data in messages:
        queues[queue][redis_message_id] = data
    return queues
