"""The error answers and access rules of every operation in the OpenAPI document, derived
from each route.

A route's problem statuses follow from what it is: its guards' refusals (401 when it
authenticates, 403 and 404 when it checks a role or a tenant), routes with parameters or a body
400 and 422, bodies 413, POSTs (through `Idempotency-Key`) 409, 422 and 503, every API route
429. A route with a status of its own declares it in `opt={"problems": (409,)}`. Who may call
comes from the same guards: a sentence in the description, and `x-access` (the guards' names)
and `x-permission` (the tenant permission checked) in the operation. `document_problems(app)`
applies this in create_app, before the document is first built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Operation, Parameter, Schema, SecurityScheme
from litestar.openapi.spec.enums import OpenAPIType
from litestar.routes import HTTPRoute

from socialflow.lib.problems import PROBLEM_MEDIA_TYPE
from socialflow.lib.route_facts import RouteFacts, RouteGuard, facts_of

API_PREFIX = "/api/"
BEARER = "bearer"


class ProblemField(msgspec.Struct):
    """One offending input of a validation problem."""

    field: str | None
    message: str
    source: str | None = None  # "query", "path", "body", "header"


class ProblemDocument(msgspec.Struct):
    """RFC 9457 problem details, as every error response carries them."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None
    errors: list[ProblemField] | None = None
    # `quota-exceeded`: the plan's resource, its limit, what is used, and when a monthly or
    # per-minute one starts again (null for what does not reset: seats, storage …).
    resource: str | None = None
    limit: float | None = None
    used: float | None = None
    resets_at: str | None = None


DESCRIPTIONS = {
    400: "Malformed parameters, body or Idempotency-Key (`validation-error` lists the fields).",
    401: "No valid credentials: send `Authorization: Bearer <access token or API key>`.",
    403: "The caller may not do this (`forbidden`, `not-a-member`, `tenant-suspended`).",
    404: "No such resource, or one the caller may not see.",
    409: "Conflicts with the current state, or the same Idempotency-Key is still running.",
    410: "No longer available (e.g. an expired invitation).",
    413: "The request body is over the size limit.",
    422: "Refused input: a value, a cursor, text with NUL or invalid UTF-8, or an "
    "Idempotency-Key reused with another body.",
    429: "Too many requests: retry after `Retry-After` seconds.",
    503: "Unavailable or busy for a moment: retry after `Retry-After` seconds.",
}
IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key",
    param_in="header",
    required=False,
    description="Replays the first response to the same caller, path, key and body for 24 hours.",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255, pattern=r"^[!-~]+$"),
)


@dataclass
class IdempotentOperation(Operation):
    """A POST operation: it also takes an `Idempotency-Key` header."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]


def problem_statuses(facts: RouteFacts, method: str, path: str, path_params: set[str]) -> set[int]:
    statuses = set(facts.opt.get("problems", ()))
    if not path.startswith(API_PREFIX):
        return statuses
    statuses.add(429)  # per caller and tenant once authenticated; sign-in routes are throttled
    for guard in facts.guards:
        statuses |= guard.problems
    if facts.authenticated:
        statuses |= {401, 422}  # 422: NUL in the credentials
    if path_params:
        statuses.add(404)
    if path_params or facts.parameters or facts.takes_body:
        statuses |= {400, 422}
    if facts.takes_body:
        statuses.add(413)
    if method == "POST":
        statuses |= {400, 409, 413, 422, 503}  # what Idempotency-Key adds
    return statuses


def _problem_response(status: int) -> ResponseSpec:
    return ResponseSpec(
        data_container=ProblemDocument,
        description=DESCRIPTIONS.get(status, "A problem document."),
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
    )


def _with_access(base: type[Operation], guards: tuple[RouteGuard, ...]) -> type[Operation]:
    """`base`, also saying who may call: a sentence in the description, and extensions."""
    if not guards:
        return base
    sentence = "Access: " + "; ".join(guard.who for guard in guards) + "."
    extensions: dict[str, Any] = {"x-access": [guard.name for guard in guards]}
    permissions = [guard.permission for guard in guards if guard.permission]
    if permissions:
        extensions["x-permission"] = permissions[0] if len(permissions) == 1 else permissions

    def to_schema(self: Operation) -> dict[str, Any]:
        schema = base.to_schema(self)
        schema["description"] = "\n\n".join(filter(None, (schema.get("description"), sentence)))
        return {**schema, **extensions}

    # `plain` keeps the class it extends, so documenting a handler again does not stack up.
    return type(f"{base.__name__}WithAccess", (base,), {"to_schema": to_schema, "plain": base})


def _document_handler(handler: HTTPRouteHandler, route: HTTPRoute) -> None:
    facts = facts_of(handler)
    statuses: set[int] = set()
    for method in handler.http_methods:
        statuses |= problem_statuses(facts, method, route.path_format, set(route.path_parameters))
    declared = dict(handler.responses or {})
    handler.responses = {**{s: _problem_response(s) for s in sorted(statuses)}, **declared}
    if facts.authenticated:
        handler.security = [{BEARER: []}]
    base: type[Operation] = getattr(handler.operation_class, "plain", handler.operation_class)
    if "POST" in handler.http_methods and route.path_format.startswith(API_PREFIX):
        base = IdempotentOperation
    handler.operation_class = _with_access(base, facts.guards)


def document_problems(app: Litestar) -> None:
    """Declare every operation's problem answers, its credentials and Idempotency-Key."""
    config = app.openapi_config
    if config is None:
        return
    existing: list[Components] = (
        config.components if isinstance(config.components, list) else [config.components]
    )
    # No `bearerFormat: JWT`: an API key is not a JWT.
    bearer = SecurityScheme(
        type="http",
        scheme="bearer",
        description=(
            "A person's access token (a JWT, from `POST /api/v1/auth/token`) or a tenant API "
            "key (`sfk_…`), sent as `Authorization: Bearer <token>` (in Authorize, paste the "
            "token alone)."
        ),
    )
    config.components = [*existing, Components(security_schemes={BEARER: bearer})]
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if handler.resolve_include_in_schema():
                    _document_handler(handler, route)
