"""Outbox tables in the shared schema: pending events, dead letters, processed-event ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from socialflow.db.base import SharedBase


class OutboxEvent(SharedBase):
    """An event committed with its state change and not yet handed to the broker.

    Rows are deleted as they are dispatched, so the table holds only the backlog and deferred
    events; `id` orders dispatch but is never used as a high-water mark (ids commit out of order).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "available_at", "id"),
        {
            # A queue table: vacuum early and often so dead rows do not pile up in the due index.
            "postgresql_with": {
                "fillfactor": "90",
                "autovacuum_vacuum_scale_factor": "0.0",
                "autovacuum_vacuum_threshold": "5000",
                "autovacuum_vacuum_cost_delay": "0",
                "autovacuum_analyze_scale_factor": "0.0",
                "autovacuum_analyze_threshold": "20000",
            }
        },
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(63))
    # Workers resolve the tenant by id: a slug can belong to another tenant after a purge.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    aggregate_type: Mapped[str] = mapped_column(String(64))
    aggregate_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Redis command errors (not outages) met while enqueueing this row; past the relay's bound
    # the row is dead-lettered with the last one.
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    available_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )


class OutboxDeadLetter(SharedBase):
    """An event the relay could not dispatch, kept with the reason until an operator acts."""

    __tablename__ = "outbox_dead_letter"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(63))
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    aggregate_type: Mapped[str] = mapped_column(String(64))
    aggregate_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    dead_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProcessedEvent(SharedBase):
    """Which actor has applied which event; written in the actor's own transaction."""

    __tablename__ = "processed_event"
    __table_args__ = (Index("ix_processed_event_processed_at", "processed_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    actor: Mapped[str] = mapped_column(String(128), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class EventHistory(SharedBase):
    """A tenant's event after the relay dispatched it, kept for its plan's retention.

    The relay writes it in the statement that claims the outbox row, so the write path pays
    nothing. Partitioned by day of `occurred_at` (outbox_relay/history.py creates the days ahead
    and drops those past every plan's retention; the default partition catches a day not yet
    created). `occurred_at` is when the event took effect: its commit, or for a deferred event
    its due time, so a post scheduled months ahead is not born expired.

    Readers order by (`txid`, `seq`): the relay transaction that recorded the row, then the
    order in it. A forward reader only takes rows of transactions older than every running one
    (`pg_snapshot_xmin`), so a row committed later can never appear behind its cursor.
    """

    __tablename__ = "event_history"
    __table_args__ = (
        Index("ix_event_history_feed", "tenant_id", "txid", "seq"),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )

    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    txid: Mapped[int] = mapped_column(
        BigInteger, server_default=text("(pg_current_xact_id()::text)::bigint")
    )
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True))
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    tenant: Mapped[str | None] = mapped_column(String(63))
    aggregate_type: Mapped[str] = mapped_column(String(64))
    aggregate_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    request_id: Mapped[str | None] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


# The partitions of event_history: one a day (UTC), named by it, and the default one.
HISTORY_PARTITION_PREFIX = "event_history_p"
HISTORY_DEFAULT_PARTITION = "event_history_default"


def is_history_partition(name: str | None) -> bool:
    """A partition of event_history (created at run time, not declared)."""
    return bool(name) and (
        name == HISTORY_DEFAULT_PARTITION or str(name).startswith(HISTORY_PARTITION_PREFIX)
    )
