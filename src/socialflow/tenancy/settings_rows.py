"""Single-row settings tables in a tenant's schema: read, and change with its event and
audit entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.tenancy.events import SettingsChange


@dataclass(frozen=True)
class SettingsRow:
    """A table holding one row (id = 1) of a tenant's settings; names are fixed, never input."""

    table: str
    columns: tuple[str, ...]
    event: type[SettingsChange]

    async def read(self, session: AsyncSession) -> dict[str, Any]:
        selected = ", ".join((*self.columns, "updated_at"))
        row = (
            await session.execute(text(f"SELECT {selected} FROM {self.table} WHERE id = 1"))  # noqa: S608
        ).one()
        return dict(row._mapping)

    async def update(
        self, session: AsyncSession, access: TenantAccess, changes: dict[str, Any]
    ) -> dict[str, Any]:
        unknown = set(changes) - set(self.columns)
        if unknown:
            raise ValueError(f"not columns of {self.table}: {sorted(unknown)}")
        before = await self.read(session)
        if not changes:
            return before
        assignments = ", ".join(f"{column} = :{column}" for column in sorted(changes))
        await session.execute(
            text(
                f"UPDATE {self.table} SET {assignments}, updated_at = now(), "  # noqa: S608
                "updated_by = :by WHERE id = 1"
            ),
            {**changes, "by": access.principal.user_id},
        )
        after = await self.read(session)
        changed = self.event(
            before={k: before[k] for k in changes}, after={k: after[k] for k in changes}
        )
        await record_change(session, access.principal, changed, tenant=access.tenant.slug)
        return after
