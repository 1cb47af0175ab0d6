"""`record_change`: the one way to record a state change — its outbox event and its audit
entry, written together in the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
import structlog
from sqlalchemy import insert, null
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.principal import Principal
from socialflow.audit.models import PlatformAuditEntry, TenantAuditEntry
from socialflow.outbox import emit
from socialflow.outbox.events import AuditLog, DomainEvent


async def record_change(
    session: AsyncSession,
    actor: Principal | str,
    event: DomainEvent,
    *,
    tenant: str | None,
    tenant_id: uuid.UUID | None = None,
    agency_id: uuid.UUID | None = None,
    available_at: datetime | None = None,
) -> uuid.UUID:
    """Write `event` to the outbox and its entry to the audit log its class names; return the
    event's id. Services call this once per change, after the change itself.

    `actor` is the caller (or a system actor such as "system:purge"); `tenant` the slug the
    event belongs to (None for platform events). Tenant audit entries go to the tenant's own
    log, so the session must be in the tenant's schema; platform entries name `tenant_id` and
    `agency_id` when the change concerns them.
    """
    name = actor.actor if isinstance(actor, Principal) else actor
    event_id = await emit(session, event, tenant=tenant, actor=name, available_at=available_at)
    if event.audit_log is AuditLog.NONE:
        return event_id
    before, after = (msgspec.to_builtins(shown) for shown in event.audit_change())
    entry: dict[str, Any] = {
        "action": event.audit_action,
        "target_type": event.aggregate_type,
        "target_id": event.aggregate_id,
        "request_id": structlog.contextvars.get_contextvars().get("request_id"),
        # SQL NULL for "nothing", not the JSON value null.
        "before": null() if before is None else before,
        "after": null() if after is None else after,
    }
    if event.audit_log is AuditLog.TENANT:
        # Unqualified: the tenant's own log, through the session's search_path (a session
        # outside the tenant's schema fails here rather than writing anywhere else).
        await session.execute(insert(TenantAuditEntry).values(actor=name, **entry))
    else:
        platform_entry = insert(PlatformAuditEntry).values(
            actor_user_id=_user_id(actor), tenant_id=tenant_id, agency_id=agency_id, **entry
        )
        await session.execute(platform_entry)
    return event_id


def _user_id(actor: Principal | str) -> uuid.UUID | None:
    """The person behind a change, for the platform log (not API keys, not the system)."""
    return actor.user_id if isinstance(actor, Principal) and actor.kind == "user" else None
