"""Single-row settings tables in a tenant's schema: read, and change with its event and
audit entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.db.base import TenantBase
from socialflow.tenancy.events import SettingsChange

S = TypeVar("S", bound=msgspec.Struct)


@dataclass(frozen=True)
class SettingsRow(Generic[S]):
    """A declared table holding one row (id = 1) of a tenant's settings, read as `out` (its
    fields name the columns read); `columns` are those a tenant may change."""

    model: type[TenantBase]
    columns: tuple[str, ...]
    out: type[S]
    event: type[SettingsChange]

    def _read_columns(self) -> list[ColumnElement[Any]]:
        return [self.model.__table__.c[name] for name in self.out.__struct_fields__]

    async def read(self, session: AsyncSession) -> S:
        the_row = select(*self._read_columns()).where(self.model.__table__.c.id == 1)
        return msgspec.convert((await session.execute(the_row)).mappings().one(), self.out)

    async def update(
        self, session: AsyncSession, access: TenantAccess, changes: dict[str, Any]
    ) -> S:
        unknown = set(changes) - set(self.columns)
        if unknown:
            raise ValueError(f"not columns of {self.model.__tablename__}: {sorted(unknown)}")
        before = await self.read(session)
        if not changes:
            return before
        table = self.model.__table__
        changed_row = (
            update(self.model)
            .where(table.c.id == 1)
            .values(**changes, updated_at=func.now(), updated_by=access.principal.user_id)
            .returning(*self._read_columns())
        )
        after = msgspec.convert((await session.execute(changed_row)).mappings().one(), self.out)
        changed = self.event(
            before={k: getattr(before, k) for k in changes},
            after={k: getattr(after, k) for k in changes},
        )
        await record_change(session, access.principal, changed, tenant=access.tenant.slug)
        return after
