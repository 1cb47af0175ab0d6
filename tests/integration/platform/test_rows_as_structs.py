"""fetch_structs: rows become the structs that converting their mappings would give, in the
query's order; a query whose columns are not the struct's fields is refused."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
import pytest
from sqlalchemy import Select, Text, cast, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.rows import fetch_structs


class Item(msgspec.Struct):
    n: int
    big: int
    uid: uuid.UUID
    at: datetime
    doc: dict[str, object] | None
    name: str | None
    even: bool


def _items_query(count: int) -> Select[Any]:
    series = func.generate_series(1, count).table_valued("n").render_derived()
    n = series.c.n
    return (
        select(
            n.label("n"),
            (n * 10**15).label("big"),
            cast(func.md5(cast(n, Text)), UUID(as_uuid=True)).label("uid"),
            (
                func.timestamptz(literal("2026-11-25 18:25:43.5+00"))
                + func.make_interval(0, 0, 0, 0, 0, 0, n * 1.000001)
            ).label("at"),
            func.nullif(
                cast(func.json_build_object("k", n, "deep", func.json_build_array(n, "é")), JSONB),
                cast(literal('{"k": 2, "deep": [2, "é"]}'), JSONB),
            ).label("doc"),
            func.nullif(func.concat('quote " \\ é 🙂 ', n), 'quote " \\ é 🙂 3').label("name"),
            (n % 2 == 0).label("even"),
        )
        .select_from(series)
        .order_by(n.desc())
    )


async def test_rows_become_the_structs_their_mappings_convert_to(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        query = _items_query(5)
        fetched = await fetch_structs(session, query, Item)
        rows = (await session.execute(query)).mappings().all()
    assert fetched == msgspec.convert(rows, list[Item])
    assert [item.n for item in fetched] == [5, 4, 3, 2, 1]  # the query's own order
    assert fetched[3].doc is None
    assert fetched[2].name is None
    assert fetched[0].doc == {"k": 5, "deep": [5, "é"]}


async def test_no_rows_is_an_empty_list(session_factory: async_sessionmaker[AsyncSession]) -> None:
    async with session_factory() as session:
        assert await fetch_structs(session, _items_query(0), Item) == []


async def test_columns_in_another_order_than_the_fields_are_refused(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    query = _items_query(2)
    swapped = query.with_only_columns(*reversed(list(query.selected_columns)))
    async with session_factory() as session:
        with pytest.raises(TypeError, match="not the fields of Item"):
            await fetch_structs(session, swapped, Item)
