"""The event envelope: what an outbox row becomes in a message, and what an actor receives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One committed state change, as the actor sees it (the message's single argument)."""

    event_id: uuid.UUID
    event_type: str
    tenant: str | None  # the slug, for logs; the tenant is `tenant_id`
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)
    occurred_at: str = ""
    tenant_id: uuid.UUID | None = None

    def to_message_arg(self) -> dict[str, Any]:
        return {
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "tenant": self.tenant,
            "tenant_id": str(self.tenant_id) if self.tenant_id else None,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "payload": self.payload,
            "headers": self.headers,
            "occurred_at": self.occurred_at,
        }

    @classmethod
    def from_message_arg(cls, data: dict[str, Any]) -> Event:
        return cls(
            event_id=uuid.UUID(data["event_id"]),
            event_type=data["event_type"],
            tenant=data.get("tenant"),
            aggregate_type=data["aggregate_type"],
            aggregate_id=data["aggregate_id"],
            payload=data.get("payload") or {},
            headers=data.get("headers") or {},
            occurred_at=data.get("occurred_at", ""),
            tenant_id=uuid.UUID(data["tenant_id"]) if data.get("tenant_id") else None,
        )
