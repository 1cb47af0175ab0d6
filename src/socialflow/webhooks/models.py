"""Customer webhooks: endpoints, their deliveries and each delivery's attempts (every tenant's
schema), and the shared list of tenants that have endpoints (which the relay reads as it claims,
to send a tenant's events to `deliver_webhooks` only when someone listens)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from socialflow.db.base import SharedBase, TenantBase

DELIVERY_STATES = ("pending", "delivered", "failed")
ATTEMPT_OUTCOMES = ("delivered", "retrying", "failed", "gone")


class WebhookTenant(SharedBase):
    """A tenant with at least one webhook endpoint: the relay routes its events to
    `deliver_webhooks` (looked up in the claim statement itself, so an endpoint created before
    an event is claimed always gets it). Listed by the first endpoint's creation, unlisted by
    the last one's deletion, both under this row's lock."""

    __tablename__ = "webhook_tenants"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.tenants.id", ondelete="CASCADE"), primary_key=True
    )


class WebhookEndpoint(TenantBase):
    """A URL that receives the tenant's events of the types it asks for, signed with its secret
    (sealed by the vault, purpose `webhook_secret`, bound to this row). During a rotation's
    overlap the previous secret signs too, until `previous_secret_expires_at`."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500))
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(100)))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=sql("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Consecutive failed attempts, since when, and when the endpoint may be tried again: while
    # it fails, one attempt (the earliest due delivery) probes it; its backlog waits.
    failure_streak: Mapped[int] = mapped_column(Integer, server_default=sql("0"))
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a drain (`webhook.endpoint_due`) is next scheduled; null when none is.
    drain_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_replay_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookDelivery(TenantBase):
    """One event for one endpoint: its body exactly as signed (the same on every attempt, with
    the event id as `webhook-id`), and where it stands. A `pending` delivery is due at
    `next_attempt_at`; one being sent has it moved past the send's bound (a lease: a worker
    that dies mid-send leaves it due again)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name=conv("uq_webhook_deliveries_event")),
        CheckConstraint(
            f"state IN ({', '.join(repr(s) for s in DELIVERY_STATES)})",
            name=conv("ck_webhook_deliveries_state"),
        ),
        Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            "id",
            postgresql_where=sql("state = 'pending'"),
        ),
        Index("ix_webhook_deliveries_event", "event_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), server_default=sql("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=sql("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookAttempt(TenantBase):
    """One request to an endpoint (a delivery's attempt, or a test): the delivery log."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        CheckConstraint(
            f"outcome IN ({', '.join(repr(s) for s in ATTEMPT_OUTCOMES)})",
            name=conv("ck_webhook_attempts_outcome"),
        ),
        Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_attempts_delivery", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
