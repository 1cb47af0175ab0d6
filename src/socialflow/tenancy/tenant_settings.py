"""A tenant's general settings: one row in its own schema, changed with its event and audit
entry."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.lib.problems import Problem
from socialflow.tenancy.bodies import TenantSettingsOut
from socialflow.tenancy.events import SettingsUpdated
from socialflow.tenancy.models import TenantSettings
from socialflow.tenancy.settings_rows import SettingsRow

GENERAL_SETTINGS = SettingsRow(
    TenantSettings,
    ("display_name", "timezone", "locale", "review_required", "self_approval_allowed"),
    out=TenantSettingsOut,
    event=SettingsUpdated,
)


async def read_settings(session: AsyncSession) -> TenantSettingsOut:
    """The tenant's settings row, read through the request's search_path (unqualified)."""
    return await GENERAL_SETTINGS.read(session)


async def update_settings(
    session: AsyncSession, access: TenantAccess, changes: dict[str, Any]
) -> TenantSettingsOut:
    if "timezone" in changes and changes["timezone"] not in available_timezones():
        raise Problem(
            422,
            "invalid-timezone",
            f"Unknown time zone {changes['timezone']!r}.",
            errors=[{"field": "timezone", "message": "unknown IANA time zone"}],
        )
    return await GENERAL_SETTINGS.update(session, access, changes)
