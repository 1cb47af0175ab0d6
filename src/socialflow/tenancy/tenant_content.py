"""The first tenant-scoped resources: members (shared schema) and settings (tenant schema)."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.problems import Problem
from socialflow.tenancy.access import TenantAccess
from socialflow.tenancy.settings_rows import SettingsRow


async def list_members(session: AsyncSession, access: TenantAccess) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT u.id AS user_id, u.email, u.name, m.role, m.created_at AS joined_at "
            "FROM shared.memberships m JOIN shared.users u ON u.id = m.user_id "
            "WHERE m.tenant_id = :tenant ORDER BY m.created_at, u.id"
        ),
        {"tenant": access.tenant.id},
    )
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
