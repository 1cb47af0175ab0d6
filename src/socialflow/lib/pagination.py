"""Cursor pagination: an opaque cursor over a deterministic sort key, `Link: rel="next"`."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response

from socialflow.lib.problems import Problem

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class PageRequest:
    limit: int
    after: tuple[Any, ...] | None  # the sort key of the last item of the previous page


def page_request(limit: int | None, cursor: str | None) -> PageRequest:
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(
            422, "validation-error", f"limit must be between 1 and {MAX_LIMIT}.",
            errors=[{"field": "limit", "message": f"1 to {MAX_LIMIT}"}],
        )  # fmt: skip
    return PageRequest(limit=limit, after=decode_cursor(cursor) if cursor else None)


def encode_cursor(key: tuple[Any, ...]) -> str:
    raw = json.dumps([str(part) for part in key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            raise ValueError("not a cursor")
    except ValueError as exc:
        raise Problem(
            422, "invalid-cursor", "The cursor is not one this API returned.",
            errors=[{"field": "cursor", "message": "invalid"}],
        ) from exc  # fmt: skip
    return tuple(parts)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def paginate(rows: list[dict[str, Any]], page: PageRequest, key: tuple[str, ...]) -> Page:
    """`rows` fetched with LIMIT page.limit + 1; the extra row only says a next page exists."""
    more = len(rows) > page.limit
    items = rows[: page.limit]
    cursor = encode_cursor(tuple(items[-1][k] for k in key)) if more and items else None
    return Page(items=items, next_cursor=cursor)


def link_header(request: Request[Any, Any, Any], page: Page, limit: int) -> dict[str, str]:
    if page.next_cursor is None:
        return {}
    params = {k: v for k, v in request.query_params.items() if k not in {"cursor", "limit"}}
    params.update({"limit": str(limit), "cursor": page.next_cursor})
    return {"Link": f'<{request.url.path}?{urlencode(params)}>; rel="next"'}


def page_response(
    request: Request[Any, Any, Any],
    rows: list[dict[str, Any]],
    page: PageRequest,
    key: tuple[str, ...],
    body_type: type[T],
) -> Response[T]:
    """A list endpoint's answer: `{items, next_cursor}` as `body_type`, with the Link header.

    UUID values become strings, as the response structs carry ids as text.
    """
    result = paginate(rows, page, key)
    items = [{k: str(v) if isinstance(v, uuid.UUID) else v for k, v in row.items()}
             for row in result.items]  # fmt: skip
    body = msgspec.convert({"items": items, "next_cursor": result.next_cursor}, body_type)
    return Response(body, headers=link_header(request, result, page.limit))
