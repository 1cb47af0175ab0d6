"""A request is counted before its last byte leaves: a client that has read the whole answer
and then scrapes /metrics (of any process) finds it counted, never one short."""

from __future__ import annotations

from typing import Any

import pytest

from socialflow.lib import http_metrics
from socialflow.lib.request_context import RequestContextMiddleware


def _counted(route: str, status: str) -> float:
    value = http_metrics.REQUESTS.labels(route, "GET", status)._value.get()
    return float(value)


async def _serve(app: Any, route: str) -> list[tuple[str, float]]:
    """Run one GET through the middleware; note the count as each message goes out."""
    seen: list[tuple[str, float]] = []
    scope = {"type": "http", "method": "GET", "path": route, "headers": [], "state": {}}
    scope["path_template"] = route

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        seen.append((message["type"], _counted(route, "200")))

    await RequestContextMiddleware(app)(scope, receive, send)
    return seen


async def test_the_request_is_counted_before_its_last_body_is_sent() -> None:
    route = "/test/counted-before-last-byte"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})

    before = _counted(route, "200")
    seen = await _serve(app, route)
    assert seen == [
        ("http.response.start", before),
        ("http.response.body", before),  # more to come: not yet
        ("http.response.body", before + 1),  # the last: already counted
    ]
    assert _counted(route, "200") == before + 1  # and once only


async def test_a_request_that_fails_before_answering_is_counted_once_as_a_500() -> None:
    route = "/test/failed-before-answering"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("broken before any byte")

    before = _counted(route, "500")
    with pytest.raises(RuntimeError):
        await _serve(app, route)
    assert _counted(route, "500") == before + 1
