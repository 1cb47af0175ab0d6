"""Every text input is valid UTF-8 without NUL, or the request is a 422 before any handler runs.

PostgreSQL refuses NUL in text ("A string literal cannot contain NUL") and cannot store invalid
UTF-8, so such input would surface as a 500 from whichever query first saw it. One app-wide
guard checks the path, the query string, the credentials header and JSON bodies instead.
"""

from __future__ import annotations

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
        422,
        "invalid-text",
        f"The {source} value {field!r} {message}.",
        title="Invalid text in the request",
        errors=[{"field": field, "source": source, "message": message}],
    )


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


# A reported field name is cut to this length (a key may be as long as the body).
MAX_FIELD_NAME = 200


def check_json_body(body: bytes) -> None:
    _check("body", "body", body)
    document: Any = None
    # msgspec (Litestar's parser too) gives up on JSON nested about 1,000 deep with a
    # RecursionError, which would be a 500; only a body with that many brackets can.
    if body.count(b"[") + body.count(b"{") >= 512:
        try:
            document = msgspec.json.decode(body)
        except RecursionError:
            raise Problem(
                400,
                "validation-error",
                "The JSON body nests too deeply.",
                title="Request validation failed",
                errors=[{"field": "body", "source": "body", "message": "nested too deeply"}],
            ) from None
        except msgspec.DecodeError:
            return  # not JSON: the body's own validation answers that
    if _JSON_NUL_ESCAPE not in body:
        return
    if document is None:
        try:
            document = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return
    found = _first_nul(document)
    if found is not None:
        raise refused_text("body", _pointer(found), "contains a NUL character")


# Where a value is: (parent, key or index); parts are joined only for the one string reported,
# so a body of many items under long keys costs no more memory than the body itself.
_Where = tuple["_Where | None", str | int] | None


def _first_nul(document: Any) -> _Where | None:
    """Where the first string holding NUL is (a key counts as its own place), or None."""
    pending: list[tuple[_Where, Any]] = [(None, document)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            if NUL in value:
                return where or (None, "body")
        elif isinstance(value, dict):
            for key, item in value.items():
                if NUL in key:
                    return (where, key)
                pending.append(((where, key), item))
        elif isinstance(value, list):
            pending.extend(((where, i), item) for i, item in enumerate(value))
    return None


def _pointer(where: _Where) -> str:
    parts: list[str | int] = []
    while where is not None:
        where, part = where
        parts.append(part)
    pointer = ""
    for part in reversed(parts):
        pointer += f"[{part}]" if isinstance(part, int) else f".{part}"
    pointer = pointer.lstrip(".") or "body"
    return pointer if len(pointer) <= MAX_FIELD_NAME else pointer[:MAX_FIELD_NAME] + "…"


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
