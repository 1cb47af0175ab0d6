"""Request and response bodies of the event history (and, with them, customer webhooks)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec


class EventDelivery(msgspec.Struct):
    """Where an event stands for one endpoint."""

    endpoint_id: uuid.UUID
    state: str  # pending | delivered | failed
    attempts: int
    last_status: int | None
    delivered_at: datetime | None


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
    # Its delivery to each webhook endpoint that received it.
    deliveries: list[EventDelivery] = msgspec.field(default_factory=list)


class EventList(msgspec.Struct):
    items: list[EventOut]
    next_cursor: str | None = None


# -- endpoints ---------------------------------------------------------------------------------

EventTypePattern = Annotated[
    str, msgspec.Meta(pattern=r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$", max_length=100)
]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    event_types: Annotated[list[EventTypePattern], msgspec.Meta(min_length=1, max_length=50)]
    description: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    enabled: bool = True


class WebhookUpdate(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    event_types: (
        Annotated[list[EventTypePattern], msgspec.Meta(min_length=1, max_length=50)]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    description: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class WebhookOut(msgspec.Struct):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    failure_streak: int
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Only in the answer that creates the endpoint or rotates its secret: never again.
    signing_secret: str | None = None


class WebhookList(msgspec.Struct):
    items: list[WebhookOut]


class SecretRotation(msgspec.Struct, forbid_unknown_fields=True):
    # How long the previous secret keeps signing too (default WEBHOOK_SECRET_OVERLAP_H).
    overlap_hours: Annotated[float, msgspec.Meta(ge=0, le=168)] | None = None


class TestDeliveryOut(msgspec.Struct):
    delivered: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None
    webhook_id: str


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    from_event_id: uuid.UUID | None = None
    since: datetime | None = None


class ReplayOut(msgspec.Struct):
    events: int
    # False when WEBHOOK_REPLAY_MAX_EVENTS stopped it: replay again from `last_event_id`.
    complete: bool
    last_event_id: uuid.UUID | None


class AttemptOut(msgspec.Struct):
    id: int
    event_id: str
    event_type: str
    attempt: int
    outcome: str  # delivered | retrying | gone
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None
    created_at: datetime


class AttemptList(msgspec.Struct):
    items: list[AttemptOut]
    next_cursor: str | None = None


class EventTypeOut(msgspec.Struct):
    type: str
    aggregate_type: str
    description: str
    schema: dict[str, Any]


class EventTypeList(msgspec.Struct):
    items: list[EventTypeOut]
