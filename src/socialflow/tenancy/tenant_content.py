"""The first tenant-scoped resources: members (shared schema) and settings (tenant schema)."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.tenancy.access import TenantAccess
from socialflow.tenancy.settings_rows import SettingsRow


async def list_members(
    session: AsyncSession, access: TenantAccess, page: PageRequest, *, role: str | None = None
) -> list[dict[str, Any]]:
    """Members by the time they joined (then user id); one row more than the page."""
    after_at, after_id = page.after if page.after else (None, None)
    rows = await session.execute(
        text(
            "SELECT u.id AS user_id, u.email, u.name, m.role, m.created_at AS joined_at "
            "FROM shared.memberships m JOIN shared.users u ON u.id = m.user_id "
            "WHERE m.tenant_id = :tenant "
            "AND (CAST(:role AS text) IS NULL OR m.role = :role) "
            "AND (CAST(:after_at AS timestamptz) IS NULL "
            "     OR (m.created_at, m.user_id) > (CAST(:after_at AS timestamptz), "
            "                                     CAST(:after_id AS uuid))) "
            "ORDER BY m.created_at, m.user_id LIMIT :limit"
        ),
        {"tenant": access.tenant.id, "role": role, "after_at": after_at, "after_id": after_id,
         "limit": page.limit + 1},
    )  # fmt: skip
    return [dict(row._mapping) for row in rows]


async def list_audit(
    session: AsyncSession, page: PageRequest, *, action: str | None = None
) -> list[dict[str, Any]]:
    """The tenant's audit log, newest first; one row more than the page."""
    rows = await session.execute(
        text(
            "SELECT id, at, actor, action, target_type, target_id, request_id, before, after "
            "FROM audit_log "
            "WHERE (CAST(:action AS text) IS NULL OR action = :action) "
            "AND (CAST(:after AS bigint) IS NULL OR id < CAST(:after AS bigint)) "
            "ORDER BY id DESC LIMIT :limit"
        ),
        {"action": action, "after": page.after[0] if page.after else None,
         "limit": page.limit + 1},
    )  # fmt: skip
    return [dict(row._mapping) for row in rows]


GENERAL_SETTINGS = SettingsRow(
    "settings", ("display_name", "timezone", "locale"), audit_action="settings.updated"
)


async def read_settings(session: AsyncSession) -> dict[str, Any]:
    """The tenant's settings row, read through the request's search_path (unqualified)."""
    return await GENERAL_SETTINGS.read(session)


async def update_settings(
    session: AsyncSession, access: TenantAccess, changes: dict[str, Any]
) -> dict[str, Any]:
    if "timezone" in changes and changes["timezone"] not in available_timezones():
        raise Problem(
            422, "invalid-timezone", f"Unknown time zone {changes['timezone']!r}.",
            errors=[{"field": "timezone", "message": "unknown IANA time zone"}],
        )  # fmt: skip
    return await GENERAL_SETTINGS.update(session, access, changes)
