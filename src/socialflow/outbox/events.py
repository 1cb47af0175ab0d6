"""Events: `DomainEvent`, the typed state change a feature declares in its `events.py` and
records with `audit.record_change`, and `Event`, the envelope an actor receives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import msgspec


class AuditLog(StrEnum):
    """Which audit log records a change together with its event."""

    TENANT = "tenant"  # the tenant's own audit_log, in its schema (the session's search_path)
    PLATFORM = "platform"  # shared.platform_audit_log: agencies, tenant lifecycle, accounts
    NONE = "none"  # system work (derivatives, captions …): the event is the record


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A state change as its feature declares it: the fields are the event's payload.

    A concrete event names its `event_type` (one class per type across the code base: a
    second is refused at import), its `aggregate_type`, the field holding the aggregate's id
    (`aggregate_key`) and the audit log that records it. A subclass without an `event_type`
    is a shared base, not an event.
    """

    event_type: ClassVar[str]
    aggregate_type: ClassVar[str]
    aggregate_key: ClassVar[str]
    audit_log: ClassVar[AuditLog]
    # A removal's audit entry shows the payload as what was, not as what is.
    removes: ClassVar[bool] = False
    # The product scheduling its own work (a publish falling due, a retry): not a change the
    # tenant made or sees, so not kept in its event history nor sent to its webhooks.
    internal: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" in cls.__dict__:
            _register(cls)

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.aggregate_key))

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = msgspec.to_builtins(self)
        return payload

    @property
    def audit_action(self) -> str:
        """The audit entry's action: the event type, unless the event says otherwise."""
        return self.event_type

    def audit_change(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """What the audit entry shows as (before, after): by default the payload, as after
        (as before for a removal)."""
        return (self.payload(), None) if self.removes else (None, self.payload())


class FieldsChanged(DomainEvent, frozen=True, kw_only=True):
    """A change to some fields of a row (a shared base): what they were and became, which its
    audit entry shows as before and after."""

    before: dict[str, Any]
    after: dict[str, Any]

    def audit_change(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return self.before, self.after


_EVENT_TYPES: dict[str, type[DomainEvent]] = {}


def _register(cls: type[DomainEvent]) -> None:
    name = f"{cls.__module__}.{cls.__qualname__}"
    missing = [a for a in ("aggregate_type", "aggregate_key", "audit_log") if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"event {name} does not declare {', '.join(missing)}")
    declared = _EVENT_TYPES.setdefault(cls.event_type, cls)
    if declared is not cls:
        raise TypeError(
            f"event type {cls.event_type!r} is declared twice: by "
            f"{declared.__module__}.{declared.__qualname__} and by {name}"
        )


def event_class(event_type: str) -> type[DomainEvent] | None:
    """The class declaring `event_type`, among the modules imported so far."""
    return _EVENT_TYPES.get(event_type)


def declared_events() -> dict[str, type[DomainEvent]]:
    """Every event type the modules imported so far declare, with its class."""
    return dict(_EVENT_TYPES)


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
