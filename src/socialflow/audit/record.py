"""Audit entries, written in the same transaction as the change they record."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.audit.models import PlatformAuditEntry
from socialflow.outbox import emit

if TYPE_CHECKING:
    from socialflow.access.tenant_access import TenantAccess


async def record_platform_audit(
    session: AsyncSession,
    *,
    actor_user_id: uuid.UUID | None,
    action: str,
    target_type: str,
    target_id: str | uuid.UUID,
    tenant_id: uuid.UUID | None = None,
    agency_id: uuid.UUID | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """A platform-level action (agencies, tenant lifecycle) in the shared audit log."""
    session.add(
        PlatformAuditEntry(
            actor_user_id=actor_user_id,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            tenant_id=tenant_id,
            agency_id=agency_id,
            request_id=structlog.contextvars.get_contextvars().get("request_id"),
            before=before,
            after=after,
        )
    )
    await session.flush()


async def record_tenant_audit(
    session: AsyncSession,
    *,
    actor: str | None,
    action: str,
    target_type: str,
    target_id: str | uuid.UUID,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """An action inside a tenant, in that tenant's own audit log (the session's search_path)."""
    await session.execute(
        text(
            "INSERT INTO audit_log (actor, action, target_type, target_id, request_id, before, "
            "after) VALUES (:actor, :action, :target_type, :target_id, :request_id, "
            "CAST(:before AS jsonb), CAST(:after AS jsonb))"
        ),
        {
            "actor": actor,
            "action": action,
            "target_type": target_type,
            "target_id": str(target_id),
            "request_id": structlog.contextvars.get_contextvars().get("request_id"),
            "before": _json(before),
            "after": _json(after),
        },
    )


def _json(value: dict[str, Any] | None) -> str | None:
    import json

    return None if value is None else json.dumps(value, default=str)


async def record_tenant_change(
    session: AsyncSession,
    access: TenantAccess,
    *,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str | uuid.UUID,
    change: dict[str, Any],
    removed: bool = False,
) -> None:
    """A change inside a tenant: its event (same transaction) and its audit entry, both naming
    the caller; `change` is what the audit shows as after (or before, for removals)."""
    await emit(
        session, event_type=event_type, aggregate_type=aggregate_type, aggregate_id=aggregate_id,
        tenant=access.tenant.slug, actor=access.principal.actor, payload=change,
    )  # fmt: skip
    await record_tenant_audit(
        session, actor=access.principal.actor, action=event_type, target_type=aggregate_type,
        target_id=aggregate_id, before=change if removed else None,
        after=None if removed else change,
    )  # fmt: skip
