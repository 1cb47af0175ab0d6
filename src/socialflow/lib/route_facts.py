"""What a route takes and needs — read from its handler's signature and dependencies, so that
the input guard and the OpenAPI document derive their rules from the route itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.handlers import HTTPRouteHandler

# Handler parameters Litestar fills itself; every other name is a dependency or a parameter.
RESERVED_NAMES = frozenset(
    {"request", "socket", "state", "scope", "headers", "cookies", "query", "body", "data",
     "receive", "send"}
)  # fmt: skip
PRINCIPAL = "principal"  # the app-level dependency that authenticates the caller


@dataclass(frozen=True, slots=True)
class RouteFacts:
    authenticated: bool  # needs the caller's credentials (depends on the principal)
    takes_body: bool  # reads a request body (`data`)
    parameters: frozenset[str]  # path and query parameter names, its dependencies' included
    opt: dict[str, Any]


_known: dict[Any, RouteFacts] = {}


def facts_of(handler: HTTPRouteHandler) -> RouteFacts:
    """The route's facts, computed once per handler function."""
    facts = _known.get(handler.fn)
    if facts is None:
        facts = _known[handler.fn] = _read(handler)
    return facts


def _read(handler: HTTPRouteHandler) -> RouteFacts:
    dependencies = handler.resolve_dependencies()
    names: set[str] = set()
    pending = list(handler.parsed_fn_signature.parameters)
    while pending:  # the handler's names, then those of each dependency it uses, transitively
        name = pending.pop()
        if name in names:
            continue
        names.add(name)
        if name in dependencies:
            pending.extend(dependencies[name].parsed_fn_signature.parameters)
    return RouteFacts(
        authenticated=PRINCIPAL in names,
        takes_body="data" in names,
        parameters=frozenset(names - RESERVED_NAMES - dependencies.keys()),
        opt=dict(handler.opt),
    )
