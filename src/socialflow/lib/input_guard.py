"""Every text input is valid UTF-8 without NUL, or the request is a 422 before any handler runs.

PostgreSQL refuses NUL in text ("A string literal cannot contain NUL") and cannot store invalid
UTF-8, so such input would surface as a 500 from whichever query first saw it. One app-wide
guard checks the path, the query string, the credentials header and JSON bodies instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler

from socialflow.lib.problems import Problem
from socialflow.lib.route_facts import facts_of

NUL = "\x00"
_JSON_NUL_ESCAPE = b"\\u0000"  # the only way a JSON string can hold NUL


def refused_text(source: str, field: str, message: str) -> Problem:
    return Problem(
        422, "invalid-text", f"The {source} value {field!r} {message}.",
        title="Invalid text in the request",
        errors=[{"field": field, "source": source, "message": message}],
    )  # fmt: skip


def _check(source: str, field: str, raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise refused_text(source, field, "is not valid UTF-8") from None
    if NUL in text:
        raise refused_text(source, field, "contains a NUL character")


def _field_name(raw: str) -> str:
    return raw.encode("latin-1").decode("utf-8", "replace").replace(NUL, "\\x00")


def check_path(scope: Any) -> None:
    raw = scope.get("raw_path")
    # Some clients (httpx's ASGI transport) leave the query string on raw_path; it is not path.
    path = (
        unquote_to_bytes(raw.split(b"?", 1)[0])
        if raw
        else str(scope["path"]).encode("utf-8", "surrogatepass")
    )
    _check("path", "path", path)


def check_query(query_string: bytes) -> None:
    # Latin-1 maps bytes to code points one to one, so each value's original bytes come back.
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    for name, value in pairs:
        _check("query", _field_name(name), name.encode("latin-1"))
        _check("query", _field_name(name), value.encode("latin-1"))


def check_json_body(body: bytes) -> None:
    _check("body", "body", body)
    if _JSON_NUL_ESCAPE not in body:
        return
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return  # not JSON: the body's own validation answers that
    for pointer, text in _strings(document):
        if NUL in text:
            raise refused_text("body", pointer, "contains a NUL character")


def _strings(document: Any) -> Iterator[tuple[str, str]]:
    """Every string in a decoded JSON document (keys too), with where it is; no recursion."""
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:
        pointer, value = pending.pop()
        if isinstance(value, str):
            yield pointer or "body", value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield f"{pointer}.{key}".lstrip("."), key
                pending.append((f"{pointer}.{key}".lstrip("."), item))
        elif isinstance(value, list):
            pending.extend((f"{pointer}[{i}]", item) for i, item in enumerate(value))


async def refuse_unsafe_text(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Litestar guard, app-wide: path, query, credentials and JSON body, before dependencies."""
    check_path(connection.scope)
    check_query(connection.scope.get("query_string", b""))
    if not isinstance(handler, HTTPRouteHandler):
        return
    facts = facts_of(handler)
    if facts.authenticated:
        for name, value in connection.scope.get("headers", ()):
            if name == b"authorization" and b"\x00" in value:
                raise refused_text("header", "Authorization", "contains a NUL character")
    if facts.takes_body and isinstance(connection, Request):
        check_json_body(await connection.body())
