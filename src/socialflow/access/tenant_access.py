"""Who may do what to a tenant, resolved once per request by the route's guard."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.directory import TenantDirectory, TenantRef
from socialflow.access.permissions import REVIEWER_PERMISSIONS, Permission, Role, allows
from socialflow.access.principal import Principal
from socialflow.db.rows import fetch_rows
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.db.tenant_schema import search_path_for, set_search_path
from socialflow.lib.logging import bind_context
from socialflow.lib.problems import Problem
from socialflow.lib.rate_limits import RateLimit

# The member's role, whether they are the tenant's agency admin, whether a reviewer.
_ROLE_AND_STANDING = (
    "SELECT (SELECT role FROM shared.memberships WHERE tenant_id = :tenant AND user_id = :user), "
    "EXISTS (SELECT 1 FROM shared.agency_admins WHERE agency_id = :agency AND user_id = :user), "
    "coalesce((SELECT reviewer FROM shared.memberships "
    "WHERE tenant_id = :tenant AND user_id = :user), false)"
)
# The plan resource the tenant's request rate is (plans.limits.Resource names it too).
API_REQUESTS_QUOTA = "api_requests_per_minute"
ACCESS_SQL = text(_ROLE_AND_STANDING)
# The same, also pointing the transaction at the tenant's schema (SET LOCAL semantics) in the
# same round trip. Harmless when access is then refused: the request's transaction rolls back.
ACCESS_AND_ENTER_SQL = text(f"{_ROLE_AND_STANDING}, {set_search_path(':path')}")


def tenant_not_found(slug: str) -> Problem:
    # The same answer for a tenant that does not exist and one the caller may not see.
    return Problem(404, "not-found", f"No tenant {slug!r}.")


@dataclass(frozen=True, slots=True)
class TenantAccess:
    tenant: TenantRef
    principal: Principal
    role: Role | None
    is_agency_admin: bool
    # A member their admins made a reviewer: may approve posts whatever their role.
    reviewer: bool = False

    @property
    def manages(self) -> bool:
        """Operators and the tenant's agency admins run its lifecycle and see its metadata."""
        return self.principal.is_operator or self.is_agency_admin

    def require_manager(self) -> None:
        """The check of the `manages_tenant` guard."""
        if not self.manages:
            raise Problem(
                403, "forbidden", "Only the tenant's agency admins or an operator may do this."
            )

    def allows(self, permission: Permission) -> bool:
        """Whether the member's role (or their reviewer grant) has `permission`."""
        if self.role is None:
            return False
        granted = self.reviewer and permission in REVIEWER_PERMISSIONS
        return granted or allows(self.role, permission)

    def require(self, permission: Permission) -> None:
        """The check of the `requires(permission)` guard: tenant content is for members, by
        role, and while the tenant is suspended, for its managers only."""
        if self.tenant.status == "deleted":
            raise tenant_not_found(self.tenant.slug)
        if self.tenant.status == "suspended" and not self.manages:
            raise Problem(403, "tenant-suspended", f"Tenant {self.tenant.slug!r} is suspended.")
        if self.role is None:
            raise Problem(403, "not-a-member", "Tenant content is for the tenant's members.")
        if not self.allows(permission):
            raise Problem(403, "forbidden", f"The {self.role} role may not do this ({permission}).")


async def resolve_access(
    session: AsyncSession,
    directory: TenantDirectory,
    slug: str,
    principal: Principal,
    *,
    enter_schema: bool = False,
) -> TenantAccess:
    """The caller's standing in tenant `slug`; 404 when they may not know it exists.

    With `enter_schema`, the transaction's search_path is also set to the tenant's schema.
    """
    tenant = await directory.find(session, slug)
    if tenant is None:
        raise tenant_not_found(slug)
    return await standing_in(session, tenant, principal, enter_schema=enter_schema)


async def standing_in(
    session: AsyncSession, tenant: TenantRef, principal: Principal, *, enter_schema: bool
) -> TenantAccess:
    """The caller's standing in `tenant` (found already), read in one statement that, with
    `enter_schema`, also points the transaction at the tenant's schema (hand-tuned: one round
    trip for both)."""
    if principal.kind == "api_key":
        return await _api_key_access(session, tenant, principal, enter_schema=enter_schema)
    params: dict[str, object] = {
        "tenant": tenant.id,
        "agency": tenant.agency_id,
        "user": principal.user_id,
    }
    statement = ACCESS_SQL
    if enter_schema:
        params["path"] = search_path_for(tenant.schema_name)
        statement = ACCESS_AND_ENTER_SQL
    ((role_name, is_agency_admin, reviewer, *_),) = await fetch_rows(session, statement, params)
    access = TenantAccess(
        tenant=tenant,
        principal=principal,
        role=Role(role_name) if role_name else None,
        is_agency_admin=bool(is_agency_admin),
        reviewer=bool(reviewer),
    )
    if not (access.role or access.manages):
        raise tenant_not_found(tenant.slug)
    if tenant.status == "deleted" and not access.manages:
        raise tenant_not_found(tenant.slug)
    if tenant.status == "suspended" and not access.manages:
        raise Problem(403, "tenant-suspended", f"Tenant {tenant.slug!r} is suspended.")
    bind_context(tenant=tenant.slug)
    return access


async def _api_key_access(
    session: AsyncSession, tenant: TenantRef, principal: Principal, *, enter_schema: bool
) -> TenantAccess:
    """An API key reaches its own tenant only, with its own role; elsewhere it sees nothing."""
    if principal.tenant_id != tenant.id or tenant.status == "deleted":
        raise tenant_not_found(tenant.slug)
    if tenant.status == "suspended":
        raise Problem(403, "tenant-suspended", f"Tenant {tenant.slug!r} is suspended.")
    if enter_schema:
        await enter_tenant_schema(session, tenant.schema_name)
    bind_context(tenant=tenant.slug)
    return TenantAccess(tenant, principal, Role(principal.key_role or "viewer"), False)


def tenant_limit(tenant: TenantRef) -> RateLimit:
    """The tenant's rate-limit scope and its requests a minute (its plan's, or its override):
    passing it is the plan's quota, answered as `quota-exceeded`."""
    return RateLimit(f"tenant:{tenant.id}", tenant.requests_per_minute, API_REQUESTS_QUOTA)
