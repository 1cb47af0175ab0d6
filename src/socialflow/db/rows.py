"""Rows as response structs: what a service returns from a list or a read, without a
per-row mapping conversion.

    ENTRY_OUT = struct_columns(TenantAuditEntry, EntryOut)
    query = select(*ENTRY_OUT).order_by(...)
    return await fetch_structs(session, query, EntryOut, params)

The query selects the struct's fields, in the struct's order (`struct_columns`), and each row
becomes a struct positionally: the values are the driver's (UUIDs, aware datetimes, decoded
JSON), so the field types must be what the columns hold. On the busiest list route, converting
row mappings with `msgspec.convert` was the largest single share of a request's CPU; building
the structs from the row tuples costs a fraction of it. Hot statements are also built once, at
import or on first use, with bound parameters: constructing and keying a `select()` on every
call cost as much again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

S = TypeVar("S", bound=msgspec.Struct)


def struct_columns(model: type[DeclarativeBase], item: type[msgspec.Struct]) -> list[Any]:
    """The model's columns named as `item`'s fields, in the struct's order."""
    table = model.__table__
    return [table.c[name] for name in item.__struct_fields__]


async def fetch_structs(
    session: AsyncSession,
    query: Select[Any],
    item: type[S],
    params: Mapping[str, Any] | None = None,
) -> list[S]:
    """The rows of `query` (its columns: `item`'s fields in order), as `item` structs."""
    result = await session.execute(query, params)
    if tuple(result.keys()) != item.__struct_fields__:
        raise TypeError(f"columns {tuple(result.keys())} are not the fields of {item.__name__}")
    return [item(*row) for row in result]
