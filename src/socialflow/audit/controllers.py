"""HTTP for a tenant's audit log."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission
from socialflow.access.tenant_access import TenantAccess
from socialflow.audit import services
from socialflow.audit.bodies import AuditList
from socialflow.lib.pagination import SortKey, page_request, page_response

AUDIT_ORDER = SortKey.of(id=int)


class AuditLogController(Controller):
    """The tenant's audit entries, newest first."""

    path = "/api/v1/tenants/{tenant:str}/audit-log"
    tags = ["audit"]  # noqa: RUF012 - Litestar reads this class attribute

    @get("", guards=[requires(Permission.AUDIT_READ)], summary="Audit entries")
    async def audit_log(
        self,
        request: Request[Any, Any, Any],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
    ) -> Response[AuditList]:
        page = page_request(limit, cursor, AUDIT_ORDER)
        entries = await services.list_audit(session, page, action=action)
        return page_response(request, entries, page, AUDIT_ORDER, AuditList)
