"""The first tenant-scoped resources: members (shared schema) and settings (tenant schema)."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.problems import Problem
from socialflow.tenancy.access import TenantAccess
from socialflow.tenancy.audit import record_tenant_audit


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


async def read_settings(session: AsyncSession) -> dict[str, Any]:
    """The tenant's settings row, read through the request's search_path (unqualified)."""
    row = (
        await session.execute(
            text("SELECT display_name, timezone, locale, updated_at FROM settings WHERE id = 1")
        )
    ).one()
    return dict(row._mapping)


SETTINGS_COLUMNS = frozenset({"display_name", "timezone", "locale"})


async def update_settings(
    session: AsyncSession, access: TenantAccess, changes: dict[str, Any]
) -> dict[str, Any]:
    unknown = set(changes) - SETTINGS_COLUMNS
    if unknown:
        raise ValueError(f"not settings: {sorted(unknown)}")
    if "timezone" in changes and changes["timezone"] not in available_timezones():
        raise Problem(
            422, "invalid-timezone", f"Unknown time zone {changes['timezone']!r}.",
            errors=[{"field": "timezone", "message": "unknown IANA time zone"}],
        )  # fmt: skip
    before = await read_settings(session)
    if not changes:
        return before
    # Column names come from SETTINGS_COLUMNS only; values are bound.
    assignments = ", ".join(f"{column} = :{column}" for column in sorted(changes))
    await session.execute(
        text(
            f"UPDATE settings SET {assignments}, updated_at = now(), "  # noqa: S608 - known columns
            "updated_by = :by WHERE id = 1"
        ),
        {**changes, "by": access.principal.user_id},
    )
    after = await read_settings(session)
    await record_tenant_audit(
        session, actor=f"user:{access.principal.user_id}", action="settings.updated",
        target_type="settings", target_id="1",
        before={k: before[k] for k in changes}, after={k: after[k] for k in changes},
    )  # fmt: skip
    return after
