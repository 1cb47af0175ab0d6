"""What a route takes and needs — read from its handler's signature, dependencies and guards, so
that the input guard, the idempotency layer and the OpenAPI document derive their rules from the
route itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler

# Handler parameters Litestar fills itself; every other name is a dependency or a parameter.
RESERVED_NAMES = frozenset(
    {
        "request",
        "socket",
        "state",
        "scope",
        "headers",
        "cookies",
        "query",
        "body",
        "data",
        "receive",
        "send",
    }
)

Connection = ASGIConnection[Any, Any, Any, Any]


@dataclass(frozen=True, slots=True, eq=False)
class RouteGuard:
    """A Litestar guard that says what it checks: a route's credentials, its problem answers and
    the OpenAPI text about who may call it all follow from the guards it declares."""

    name: str  # as the operation's `x-access` lists it
    check: Callable[[Connection], Awaitable[None]]
    who: str  # who may call, in words, for the operation's description
    problems: frozenset[int]  # what a refusal answers
    authenticates: bool = True  # needs the caller's credentials
    provides: frozenset[str] = frozenset()  # dependencies that read what the guard resolved
    permission: str | None = None  # the tenant permission checked, if one

    async def __call__(self, connection: Connection, handler: BaseRouteHandler) -> None:
        await self.check(connection)


@dataclass(frozen=True, slots=True)
class RouteFacts:
    authenticated: bool  # needs the caller's credentials (one of its guards authenticates)
    takes_body: bool  # reads a request body (`data`)
    parameters: frozenset[str]  # path and query parameter names, its dependencies' included
    uses: frozenset[str]  # the dependencies it uses, transitively
    guards: tuple[RouteGuard, ...]  # its declared guards, from the app's down to its own
    opt: dict[str, Any]

    @property
    def provided(self) -> frozenset[str]:
        """The dependencies its guards resolve."""
        return frozenset().union(*(guard.provides for guard in self.guards))


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
    guards = tuple(g for g in handler.resolve_guards() if isinstance(g, RouteGuard))
    return RouteFacts(
        authenticated=any(guard.authenticates for guard in guards),
        takes_body="data" in names,
        parameters=frozenset(names - RESERVED_NAMES - dependencies.keys()),
        uses=frozenset(names & dependencies.keys()),
        guards=guards,
        opt=dict(handler.opt),
    )
