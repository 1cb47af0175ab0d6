"""Cursor pagination: an opaque cursor over a deterministic sort key, `Link: rel="next"`."""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response

from socialflow.lib.problems import Problem

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)  # an item of a list: a response struct

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Cursors this API returns are a few dozen characters; a longer one was not made here.
MAX_CURSOR_LENGTH = 512
_BIGINT = re.compile(r"-?[0-9]{1,19}")
_BIGINT_RANGE = range(-(2**63), 2**63)


@dataclass(frozen=True)
class SortKey:
    """The columns a list is ordered by, each with the type its cursor part must parse as.

    A cursor is opaque to clients but not trusted: each part is parsed to its column's type
    here, so a forged one is a 422 and never reaches SQL as a value PostgreSQL refuses.
    """

    columns: tuple[tuple[str, type[Any]], ...]

    @classmethod
    def of(cls, **columns: type[Any]) -> SortKey:
        """`SortKey.of(created_at=datetime, id=uuid.UUID)`: the order of the keywords is kept."""
        return cls(tuple(columns.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def parse(self, parts: tuple[str, ...]) -> tuple[Any, ...]:
        if len(parts) != len(self.columns):
            raise ValueError("wrong number of parts")
        kinds = (kind for _, kind in self.columns)
        return tuple(_parse_part(part, kind) for part, kind in zip(parts, kinds, strict=True))


def _parse_part(raw: str, kind: type[Any]) -> Any:
    if kind is int:
        if not _BIGINT.fullmatch(raw) or int(raw) not in _BIGINT_RANGE:
            raise ValueError("not a bigint")
        return int(raw)
    if kind is datetime:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has a zone")
        return moment
    if kind is uuid.UUID:
        return uuid.UUID(raw)
    if kind is str:
        return raw
    raise TypeError(f"no cursor parser for {kind!r}")


@dataclass(frozen=True)
class PageRequest:
    limit: int
    after: tuple[Any, ...] | None  # the sort key of the last item of the previous page


def page_request(limit: int | None, cursor: str | None, key: SortKey | None = None) -> PageRequest:
    """The page a list request asks for; with `key`, the cursor's parts come typed.

    Without `key` the parts stay text (checked to be text PostgreSQL accepts).
    """
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(
            422,
            "validation-error",
            f"limit must be between 1 and {MAX_LIMIT}.",
            errors=[{"field": "limit", "source": "query", "message": f"1 to {MAX_LIMIT}"}],
        )
    if not cursor:
        return PageRequest(limit=limit, after=None)
    parts = decode_cursor(cursor)
    if key is not None:
        try:
            parts = key.parse(parts)
        except ValueError as exc:
            raise _invalid_cursor() from exc
    return PageRequest(limit=limit, after=parts)


def _invalid_cursor() -> Problem:
    return Problem(
        422,
        "invalid-cursor",
        "The cursor is not one this API returned.",
        errors=[{"field": "cursor", "source": "query", "message": "invalid"}],
    )


def encode_cursor(key: tuple[Any, ...]) -> str:
    raw = json.dumps([str(part) for part in key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, ...]:
    """The cursor's parts as text: a JSON list of strings, each valid UTF-8 without NUL."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            raise ValueError("not a cursor")
        for part in parts:
            # PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded.
            if "\x00" in part:
                raise ValueError("NUL in a cursor")
            part.encode("utf-8")
    except (ValueError, RecursionError) as exc:
        raise _invalid_cursor() from exc
    return tuple(parts)


@dataclass(frozen=True)
class Page(Generic[S]):
    items: list[S]
    next_cursor: str | None


def paginate(items: list[S], page: PageRequest, key: tuple[str, ...]) -> Page[S]:
    """`items` fetched with LIMIT page.limit + 1; the extra one only says a next page exists.
    The cursor is the last kept item's sort key, read from its attributes of those names."""
    more = len(items) > page.limit
    kept = items[: page.limit]
    cursor = encode_cursor(tuple(getattr(kept[-1], k) for k in key)) if more and kept else None
    return Page(items=kept, next_cursor=cursor)


def link_header(
    request: Request[Any, Any, Any], page: Page[Any], limit: int, *, param: str = "cursor"
) -> dict[str, str]:
    """`Link: rel="next"`: this request again with `param` (the cursor's query parameter)."""
    if page.next_cursor is None:
        return {}
    params = {k: v for k, v in request.query_params.items() if k not in {param, "limit"}}
    params.update({"limit": str(limit), param: page.next_cursor})
    return {"Link": f'<{request.url.path}?{urlencode(params)}>; rel="next"'}


def page_response(
    request: Request[Any, Any, Any],
    items: list[S],
    page: PageRequest,
    key: SortKey | tuple[str, ...],
    body_type: type[T],
) -> Response[T]:
    """A list endpoint's answer: `{items, next_cursor}` as `body_type`, with the Link header.

    `items` are the structs the service returned (one more than the page when another follows).
    """
    result = paginate(items, page, key.names if isinstance(key, SortKey) else key)
    body = msgspec.convert({"items": result.items, "next_cursor": result.next_cursor}, body_type)
    return Response(body, headers=link_header(request, result, page.limit))
