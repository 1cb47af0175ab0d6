"""Route guards: who may call a route, declared on it and checked before its dependencies run
and its body is read.

    @get("", guards=[requires(Permission.MEMBERS_READ)])
    async def members(self, access: NamedDependency[TenantAccess], ...) -> ...

| guard                  | who passes                                            | refusal       |
|------------------------|-------------------------------------------------------|---------------|
| `authenticated`        | any valid caller                                      | 401           |
| `operator_only`        | platform operators                                    | 401, 403      |
| `sees_tenant`          | the tenant's members, its agency's admins, operators  | 401, 403, 404 |
| `manages_tenant`       | the tenant's agency admins and operators              | 401, 403, 404 |
| `requires(permission)` | the tenant's members whose role has `permission`      | 401, 403, 404 |

Litestar runs guards before dependencies, so a guard resolves what it checks in the request's
unit of work (db/session.py: the `session` dependency then adopts it and commits) and leaves it
in the request's state; the `principal` and `access` dependencies hand that to the handler,
never resolving anything again. In order, as before guards existed: the caller (a principal
the idempotency middleware resolved is used as is), counted against their rate limit; the
tenant and the caller's standing in it, read in one statement that also sets the search_path
for `requires`; the tenant's rate limit; then the check. A tenant the caller may not see is a
404, never a 403. Services keep only domain rules (the last owner, no granting above one's own
role); the OpenAPI document states each route's guards (lib/openapi.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ImproperlyConfiguredException
from litestar.routes import HTTPRoute
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.directory import TenantRef
from socialflow.access.permissions import PERMISSIONS, Permission
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import (
    TenantAccess,
    standing_in,
    tenant_limit,
    tenant_not_found,
)
from socialflow.db.session import request_session
from socialflow.lib.logging import bind_context
from socialflow.lib.problems import Problem
from socialflow.lib.rate_limits import RateLimit, hit_all, remember
from socialflow.lib.route_facts import Connection, RouteGuard, facts_of

# The dependencies that hand the handler what a guard resolved, and where it is kept.
PRINCIPAL = "principal"  # also where the idempotency middleware leaves the caller it resolved
ACCESS = "access"
_TENANT_ACCESS = "tenant_access"

# How the app turns an `Authorization` header into a principal (identity/auth.py), given to
# the guards through the app's state: access/ sits below identity.
PrincipalResolver = Callable[[AsyncSession, State, str | None], Awaitable[Principal]]


def _request_state(connection: Connection) -> MutableMapping[str, Any]:
    return connection.scope.setdefault("state", {})


def caller_limit(state: State, principal: Principal) -> RateLimit:
    """The caller's rate-limit scope and requests a minute (API keys and people apart)."""
    settings = state.settings
    limit = (
        settings.rate_limit_api_key_per_minute
        if principal.kind == "api_key"
        else settings.rate_limit_user_per_minute
    )
    return RateLimit(principal.actor, limit)


async def count_request(
    state: State,
    scope: MutableMapping[str, Any],
    principal: Principal,
    tenant: TenantRef | None = None,
) -> None:
    """Count this request against the caller's rate limit and, on a tenant route, the
    tenant's, in one Redis round trip; the caller once per request (the idempotency middleware
    may have counted it already, before it stored anything)."""
    request_state = scope.setdefault("state", {})
    limits = [] if request_state.get("caller_counted") else [caller_limit(state, principal)]
    request_state["caller_counted"] = True
    if tenant is not None:
        limits.append(tenant_limit(tenant))
    if not limits:
        return
    for window in await hit_all(state.redis, limits):
        remember(scope, window)


async def count_caller(state: State, scope: MutableMapping[str, Any], principal: Principal) -> None:
    """Count this request against the caller's rate limit, once per request."""
    await count_request(state, scope, principal)


async def caller(connection: Connection, *, count: bool = True) -> Principal:
    """The request's caller, resolved once (a 401 problem if the credentials open nothing);
    counted against their rate limit unless the tenant guard counts it with the tenant's."""
    request_state = _request_state(connection)
    app_state = connection.app.state
    principal = request_state.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        resolve: PrincipalResolver = app_state.resolve_principal
        session = request_session(connection.scope)
        principal = await resolve(session, app_state, connection.headers.get("authorization"))
        request_state[PRINCIPAL] = principal
    bind_context(actor=principal.actor)
    if count:
        await count_request(app_state, connection.scope, principal)  # type: ignore[arg-type]
    return principal


async def tenant_standing(connection: Connection, *, enter_schema: bool) -> TenantAccess:
    """The caller's standing in the route's `{tenant}`, resolved once; with `enter_schema`, the
    request's transaction also points at the tenant's schema (same statement).

    The tenant comes from the directory (cached), then the caller and the tenant are counted
    in one round trip, before the standing is read: a refused call loads the tenant too, and
    a rate-limited one costs no query."""
    request_state = _request_state(connection)
    access = request_state.get(_TENANT_ACCESS)
    if isinstance(access, TenantAccess):
        return access
    principal = await caller(connection, count=False)
    app_state = connection.app.state
    scope: Any = connection.scope
    session = request_session(scope)
    slug = connection.path_params["tenant"]
    tenant = await app_state.tenant_directory.find(session, slug)
    await count_request(app_state, scope, principal, tenant)
    if tenant is None:
        raise tenant_not_found(slug)
    access = await standing_in(session, tenant, principal, enter_schema=enter_schema)
    request_state[_TENANT_ACCESS] = access
    return access


async def _authenticate(connection: Connection) -> None:
    await caller(connection)


async def _check_operator(connection: Connection) -> None:
    if not (await caller(connection)).is_operator:
        raise Problem(403, "forbidden", "Only platform operators may do this.")


async def _check_sees_tenant(connection: Connection) -> None:
    await tenant_standing(connection, enter_schema=False)


async def _check_manages_tenant(connection: Connection) -> None:
    (await tenant_standing(connection, enter_schema=False)).require_manager()


TENANT_REFUSALS = frozenset({401, 403, 404})

authenticated = RouteGuard(
    name="authenticated",
    check=_authenticate,
    who="any authenticated caller",
    problems=frozenset({401}),
    provides=frozenset({PRINCIPAL}),
)
operator_only = RouteGuard(
    name="operator_only",
    check=_check_operator,
    who="platform operators",
    problems=frozenset({401, 403}),
    provides=frozenset({PRINCIPAL}),
)
sees_tenant = RouteGuard(
    name="sees_tenant",
    check=_check_sees_tenant,
    who="the tenant's members (any role), its agency's admins and platform operators",
    problems=TENANT_REFUSALS,
    provides=frozenset({PRINCIPAL, ACCESS}),
)
manages_tenant = RouteGuard(
    name="manages_tenant",
    check=_check_manages_tenant,
    who="the tenant's agency admins and platform operators",
    problems=TENANT_REFUSALS,
    provides=frozenset({PRINCIPAL, ACCESS}),
)


@functools.cache
def requires(permission: Permission) -> RouteGuard:
    """Tenant content: the tenant's members whose role has `permission` (while the tenant is
    suspended, only those who also manage it); the route's transaction is in the tenant's
    schema. One guard per permission, so routes compare and document alike."""

    async def check(connection: Connection) -> None:
        (await tenant_standing(connection, enter_schema=True)).require(permission)

    roles = ", ".join(role.value for role, granted in PERMISSIONS.items() if permission in granted)
    return RouteGuard(
        name=f"requires({permission})",
        check=check,
        who=f"the tenant's members whose role has `{permission}` ({roles})",
        problems=TENANT_REFUSALS,
        provides=frozenset({PRINCIPAL, ACCESS}),
        permission=permission.value,
    )


async def provide_principal(
    request: Request[Any, Any, Any], session: NamedDependency[AsyncSession]
) -> Principal:
    """Litestar dependency: the caller the route's guard resolved.

    It takes `session` so that what the guard did in the request's unit of work (an API key's
    last use) is committed with the handler's work, and so that Litestar resolves the two one
    after the other rather than in a task group of their own."""
    principal = request.scope.get("state", {}).get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise RuntimeError(f"{request.route_handler} declares no guard that resolves the caller")
    return principal


async def provide_tenant_access(
    request: Request[Any, Any, Any], session: NamedDependency[AsyncSession]
) -> TenantAccess:
    """Litestar dependency: the caller's standing in the route's tenant, as its guard resolved
    and checked it (`session`: as for `provide_principal`)."""
    access = request.scope.get("state", {}).get(_TENANT_ACCESS)
    if not isinstance(access, TenantAccess):
        raise RuntimeError(f"{request.route_handler} declares no tenant guard")
    return access


def check_guards(app: Litestar) -> None:
    """Refuse to build an app with a route that uses the caller or a tenant's access without
    declaring a guard that resolves it, or with two guards that resolve a tenant."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            facts = facts_of(handler)
            missing = (facts.uses & {PRINCIPAL, ACCESS}) - facts.provided
            if missing:
                raise ImproperlyConfiguredException(
                    f"{route.path} {sorted(handler.http_methods)} uses {sorted(missing)} but "
                    "declares no guard that resolves it"
                )
            if sum(ACCESS in guard.provides for guard in facts.guards) > 1:
                raise ImproperlyConfiguredException(f"{route.path}: one tenant guard at most")
