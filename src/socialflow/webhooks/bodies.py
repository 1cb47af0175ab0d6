"""Request and response bodies of the event history (and, with them, customer webhooks)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class EventOut(msgspec.Struct):
    event_id: uuid.UUID
    event_type: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    payload: dict[str, Any]
    request_id: str | None
    # Where the event sits in the tenant's feed: `?after=` this gives the events after it.
    position: str


class EventList(msgspec.Struct):
    items: list[EventOut]
    next_cursor: str | None = None
