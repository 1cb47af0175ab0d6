"""Request ids: taken from `X-Request-ID` or generated, returned on every response, logged."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from socialflow.lib import http_metrics, telemetry
from socialflow.lib.logging import bind_context, clear_context
from socialflow.lib.tracing import child_traceparent, current_traceparent, trace_id

REQUEST_ID_HEADER = "x-request-id"
# Sent on every response: an API answers JSON, is never framed and never sniffed.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
)
# What an answer may load: nothing, unless it says otherwise (the docs page, lib.openapi_ui).
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# A caller's id is kept only if it is safe to echo into headers and logs.
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

log = structlog.get_logger("socialflow.request")


def current_request_id(scope: Mapping[str, Any]) -> str | None:
    state = scope.get("state") or {}
    rid = state.get("request_id")
    return rid if isinstance(rid, str) else None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _incoming_request_id(scope: Scope) -> str:
    candidate = _header(scope, b"x-request-id")
    if candidate is not None and _ACCEPTABLE_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


def rate_limit_headers(scope: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """`RateLimit-*` of the tightest window this request counted against (lib.rate_limits)."""
    window = (scope.get("state") or {}).get("rate_limit")
    if window is None:
        return []
    return [
        (b"ratelimit-limit", str(window.limit).encode()),
        (b"ratelimit-remaining", str(window.remaining).encode()),
        (b"ratelimit-reset", str(window.reset_s).encode()),
    ]


class RequestContextMiddleware:
    """Outermost ASGI layer: wraps routing and error handling so every response gets the id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        # Continue the caller's W3C trace (new span) or start one; events emitted by this
        # request carry it to the workers.
        incoming = _header(scope, b"traceparent")
        span = None
        if telemetry.TRACING.on:  # a real span: its id is what the request's events carry
            method = http_metrics.method_of(scope)
            span, span_token = telemetry.start_span(
                f"{method} unmatched",
                kind="server",
                parent=incoming,
                attributes={"http.request.method": method},
            )
            traceparent = telemetry.traceparent_of(span)
        else:
            traceparent = child_traceparent(incoming)
        trace_token = current_traceparent.set(traceparent)
        clear_context()
        bind_context(request_id=request_id, trace_id=trace_id(traceparent))
        started = time.perf_counter()
        status = 500
        observed = False

        def count() -> float:
            nonlocal observed
            elapsed = time.perf_counter() - started
            if not observed:
                observed = True
                http_metrics.observe(scope, status, elapsed)
            return elapsed

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                headers.extend(rate_limit_headers(scope))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"content-security-policy" not in present:  # the docs page sets its own
                    headers.append(_API_CSP)
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte is handed over: a client that has read the
                # whole answer and then scrapes finds its request already counted.
                count()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = count()  # a request that ended without a last body is counted here
            log.info(
                "request.completed",
                method=scope.get("method"),
                path=_logged_path(scope["path"]),
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            clear_context()
            current_traceparent.reset(trace_token)
            if span is not None:
                _finish_span(span, span_token, scope, status)


def _finish_span(span: Any, token: object, scope: Scope, status: int) -> None:
    """Named and labelled by the route template routing found (never the raw path)."""
    route = scope.get("path_template") or http_metrics.UNMATCHED
    span.update_name(f"{http_metrics.method_of(scope)} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR))
    telemetry.end_span(span, token)


# Paths whose last segment is a credential (the local store's signed URLs): logged without it.
CREDENTIAL_PATHS = ("/api/v1/storage/",)


def _logged_path(path: str) -> str:
    for prefix in CREDENTIAL_PATHS:
        if path.startswith(prefix):
            return prefix + "…"
    return path
