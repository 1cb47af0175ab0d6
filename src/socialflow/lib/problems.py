"""RFC 9457 problem details: the one shape every error response takes."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from socialflow.lib.redaction import redact
from socialflow.lib.request_context import current_request_id

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "/problems/"

log = structlog.get_logger(__name__)


class Problem(Exception):
    """A failure the client can act on, rendered as a problem document.

    `kind` becomes the problem type (`/problems/<kind>`); `extra` adds members to the document.
    """

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    kind: str,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + kind,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        # Details can quote input or a provider's error: never let a key through.
        "detail": redact(detail),
        "instance": request.url.path,
        "request_id": current_request_id(request.scope),
        **extra,
    }
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def handle_problem(request: Request[Any, Any, Any], exc: Problem) -> Response[dict[str, Any]]:
    return problem_response(
        request,
        status=exc.status,
        kind=exc.kind,
        detail=exc.detail,
        title=exc.title,
        headers=exc.headers,
        **exc.extra,
    )


def _kind_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return "error"


def handle_http_exception(
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[dict[str, Any]]:
    """Litestar's own errors (404, 405, 400, validation …) as problem documents."""
    status = exc.status_code
    if status >= 500:
        return handle_unexpected(request, exc)
    if isinstance(exc, ValidationException):
        errors = [
            {
                "field": item.get("key"),
                "source": _source_name(item.get("source")),
                "message": item.get("message"),
            }
            for item in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(item, dict)
        ]
        return problem_response(
            request,
            status=status,
            kind="validation-error",
            title="Request validation failed",
            detail=_validation_detail(errors),
            errors=errors,
        )
    detail = exc.detail if exc.detail and exc.detail != HTTPStatus(status).phrase else ""
    return problem_response(
        request,
        status=status,
        kind=_kind_for(status),
        detail=detail or _default_detail(request, status),
        headers=dict(exc.headers or {}),
    )


def _source_name(source: object) -> str | None:
    """Where the bad value was: "query", "path", "header", "cookie" or "body"."""
    if source is None:
        return None
    return str(getattr(source, "value", source))  # Litestar's ParamType members


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    fields = [e["field"] for e in errors if e.get("field")]
    if fields:
        return "Invalid value for: " + ", ".join(fields)
    return "The request body or parameters are invalid."


def _default_detail(request: Request[Any, Any, Any], status: int) -> str:
    if status == 404:
        return f"No resource at {request.url.path}."
    if status == 405:
        return f"{request.method} is not allowed on {request.url.path}."
    return HTTPStatus(status).description


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything unforeseen: logged with its traceback, answered without internals."""
    log.exception("request.unhandled_error", error_type=type(exc).__name__)
    return problem_response(
        request,
        status=500,
        kind="internal-error",
        detail="The server failed to handle this request. Quote the request id when reporting it.",
    )


EXCEPTION_HANDLERS = {
    Problem: handle_problem,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


def invalid(field: str, message: str, *, source: str = "query") -> Problem:
    """A 422 naming the field that is wrong and why, where a schema cannot say it (a rule
    between fields, a value checked against the database)."""
    return Problem(
        422,
        "validation-error",
        f"{field}: {message}.",
        errors=[{"field": field, "source": source, "message": message}],
    )
